#!/usr/bin/env bash
# Train on a Slurm cluster: one task per GPU, ranks and the master address taken from Slurm (--launcher slurm).
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments ...]
# GPUS (default 8): total tasks; GPUS_PER_NODE (default 8); CPUS_PER_TASK (default 5);
# SRUN_ARGS: extra srun options (e.g. "--quotatype=auto"); PORT: master port (default 29500);
# GRES (default gpu:$GPUS_PER_NODE; GRES= for CPU-only nodes, where the tasks use gloo); PYTHON as in
# tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments ...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
export MASTER_PORT=${PORT:-${MASTER_PORT:-29500}}
source "$(dirname "$0")/dist_env.sh"  # ROOT, PYTHON, PYTHONPATH (after MASTER_PORT: it defaults PORT)
GRES=${GRES-gpu:$GPUS_PER_NODE}
GRES_ARG=()
if [ -n "$GRES" ]; then GRES_ARG=(--gres="$GRES"); fi

# SRUN_ARGS is split into words on purpose (several options)
# shellcheck disable=SC2086
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    ${GRES_ARG[@]+"${GRES_ARG[@]}"} \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
