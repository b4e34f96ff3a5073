# Sourced by dist_train.sh, dist_test.sh and slurm_train.sh: the repository root, the interpreter and the
# torchrun rendezvous settings, each overridable from the environment.
#   PYTHON       interpreter (default: .venv/bin/python if present, else python)
#   NNODES, NODE_RANK, MASTER_ADDR, PORT   machines, this machine's rank, rank 0's host and port
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
