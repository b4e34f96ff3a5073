#!/usr/bin/env bash
# Train on several processes of one or more machines with torchrun (--launcher pytorch).
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py arguments ...]
# GPUS is the number of processes on this machine: one per GPU, or CPU processes (gloo is chosen
# automatically when there is no GPU). Several machines: run the same command on each with
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<host of rank 0> PORT=29500 bash tools/dist_train.sh CONFIG 8
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python).
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments ...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
source "$(dirname "$0")/dist_env.sh"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    --nproc_per_node="$GPUS" "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
