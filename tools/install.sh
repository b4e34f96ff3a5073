#!/usr/bin/env bash
# Creates .venv (if missing) and installs what is missing of the stack, then this package
# in editable mode. Idempotent: a second run checks imports and returns in seconds.
#
# Environment overrides (no file needs editing):
#   PYTHON=python3.11          interpreter used to create .venv
#   VENV=.venv                 where the virtual environment lives
#   TORCH_SPEC="torch==<pin>"  pip requirement for torch (pin: requirements/stack.txt); set it
#                              to your CUDA build (e.g. TORCH_SPEC="torch==2.1.2 --index-url ...")
#                              or to "skip" to keep the torch already in the venv
#   SKIP_MMCV_BUILD=1          keep the mmcv already installed in the venv (e.g. a CUDA
#                              build from OpenMMLab's wheel index); it must provide mmcv.ops
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
CONSTRAINTS="$ROOT/requirements/stack.txt"
pinned() { sed -n "s/^$1==\([^ #]*\).*/\1/p" "$CONSTRAINTS"; }
TORCH_SPEC="${TORCH_SPEC:-torch==$(pinned torch)}"
SKIP_MMCV_BUILD="${SKIP_MMCV_BUILD:-0}"
MMCV_VERSION="$(pinned mmcv)"

say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[install] error:\033[0m %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "interpreter '$PYTHON' not found; set PYTHON=/path/to/python3.11"

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
PIP=(pip_quiet install -q -c "$CONSTRAINTS")

# pip, minus the harmless notes some machines' pip config prints about missing local indexes
pip_quiet() {
    "$PY" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

has() { "$PY" -c "$1" >/dev/null 2>&1; }

# 1. torch (not under the constraints file: torch 2.13 wants a setuptools that mmcv cannot build with)
if [[ "$TORCH_SPEC" == "skip" ]]; then
    has "import torch" || die "TORCH_SPEC=skip but torch is not importable in $VENV"
elif ! has "import torch"; then
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    pip_quiet install -q $TORCH_SPEC
fi

# 2. mmcv with compiled ops
if [[ "$SKIP_MMCV_BUILD" == "1" ]]; then
    has "import mmcv.ops" || die "SKIP_MMCV_BUILD=1 but 'import mmcv.ops' fails in $VENV; install your mmcv build first"
elif ! has "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')"; then
    command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 \
        || die "mmcv $MMCV_VERSION is built from source and needs gcc and g++ (apt-get install build-essential)"
    has "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
        || die "Python headers (Python.h) are missing; install python3-dev for $PYTHON"
    # mmcv's setup.py imports pkg_resources, which setuptools 70 dropped: build with an older one
    say "setuptools<70 for the mmcv build (pip may warn that torch wants >=77: restored after the build)"
    pip_quiet install -q "setuptools<70" wheel
    "${PIP[@]}" mmengine
    say "building mmcv $MMCV_VERSION with CPU ops (about 6 minutes on 2 cores; cached by pip afterwards)"
    log="$(mktemp -t mmcv-build.XXXXXX.log)"
    start=$SECONDS
    ( MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-2}" \
        "$PY" -m pip install --disable-pip-version-check -v --no-build-isolation \
        -c "$CONSTRAINTS" "mmcv==$MMCV_VERSION" >"$log" 2>&1 ) &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 20
        step=$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' "$log" 2>/dev/null | tail -n 1 | tr -d ' []' || true)
        say "  mmcv build: $((SECONDS - start)) s elapsed, compiled ${step:-0/?} sources (log: $log)"
    done
    wait "$pid" || { tail -n 40 "$log" >&2; die "mmcv build failed; full log in $log"; }
    has "import mmcv.ops" || die "mmcv installed but 'import mmcv.ops' fails; see $log"
    say "mmcv built in $((SECONDS - start)) s"
    # back to the pinned setuptools: new enough for torch 2.13 (>= 77), old enough to still ship
    # pkg_resources, which mmengine uses at run time (e.g. for 'mmdet3d::' config bases)
    "${PIP[@]}" setuptools
fi

# 3. the OpenMMLab stack and evaluation tools
if ! has "import setuptools, sys; sys.exit(setuptools.__version__ != '$(pinned setuptools)')"; then
    say "setuptools $(pinned setuptools) (ships pkg_resources, which mmengine needs at run time)"
    "${PIP[@]}" setuptools
fi
if ! has "import mmdet, mmdet3d, mmseg, nuscenes, pycocotools, lyft_dataset_sdk, numba, optuna, pytest, ruff"; then
    say "installing mmdet, mmdet3d, mmseg, nuscenes-devkit and tools"
    "${PIP[@]}" mmengine mmdet numpy nuscenes-devkit pycocotools shapely pyquaternion \
        numba trimesh plyfile networkx scikit-image tensorboard ftfy regex prettytable \
        opencv-python matplotlib scipy cachetools fire scikit-learn pandas optuna pytest ruff
    # mmdet3d pins open3d (not needed on CPU) and lyft_dataset_sdk pulls linters we do not
    # need, so both (and mmseg) go in without their declared dependencies; the ones they
    # import are installed above.
    "${PIP[@]}" --no-deps mmdet3d mmsegmentation lyft_dataset_sdk
fi

# 4. ONNX export and onnxruntime (tools/export_onnx.py, tools/benchmark_latency.py --modes onnxruntime)
if ! has "import onnx, onnxscript, onnxruntime"; then
    say "installing onnx, onnxscript and onnxruntime"
    "${PIP[@]}" onnx onnxscript onnxruntime
fi

# 5. this package
if ! has "import importlib.metadata as m; m.version('sparsevit-bevdet')"; then
    say "installing sparsevit-bevdet (editable)"
    "${PIP[@]}" --no-deps --no-build-isolation -e .
fi

"$PY" - <<'PY'
import mmcv, mmdet, mmdet3d, mmengine, mmseg, torch
import mmcv.ops  # noqa: F401  compiled ops are required by mmdet3d.structures
print(f"[install] ready: torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}, mmseg {mmseg.__version__}")
PY
