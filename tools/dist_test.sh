#!/usr/bin/env bash
# Test a checkpoint on several processes with torchrun (--launcher pytorch); the processes share the
# samples and the metric is computed once on the merged results.
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py arguments ...]
# GPUS is the number of processes on this machine (GPUs, or CPU processes with gloo when there is no
# GPU). NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON as in tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments ...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
source "$(dirname "$0")/dist_env.sh"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    --nproc_per_node="$GPUS" "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
