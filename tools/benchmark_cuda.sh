#!/usr/bin/env bash
# The CUDA latency figures of docs/benchmarks.md (issue 20) in one run, at most about 8 minutes on one GPU:
# SparseViT vs mmdet's Swin, eager and replayed CUDA graphs (each with synced wall time, back-to-back CUDA-event
# time and the top kernels of r=0 and r=0.6), in fp32 (as the paper's official latency script) and fp16 autocast,
# at the paper's Mask R-CNN setting (4 x 3 x 672 x 672, with its r30 / r60 / r70 configurations), BEVDet's input
# (6 x 3 x 256 x 704) and Mask2Former's (Swin-L window 12, 1 x 3 x 1024 x 2048); then, last and capped,
# torch.compile(mode='reduce-overhead').
#
#   tools/benchmark_cuda.sh [OUT_DIR]          # default work_dirs/bench/cuda; PYTHON=... picks the interpreter
#   COMPILE_CAP_S=150 tools/benchmark_cuda.sh  # seconds allowed to the compiled table (default 150)
#
# On a lent device machine (tools/pack_device.sh run here first; device tool: carry ['.device'], timeout_s 600;
# at most 8 files come back, so the tables travel as one archive, written even when the cap stops the run):
#   timeout 540 bash tools/benchmark_cuda.sh /tmp/cuda > /tmp/cuda.log 2>&1; cp /tmp/cuda.log /tmp/cuda/;
#   tar -C /tmp -czf "$OUT/cuda.tgz" cuda; tail -c 6000 /tmp/cuda.log
#
# Needs torch with CUDA and the mm* packages importable. On a machine without them or a package index (the lent
# device machines), pack them here first with tools/pack_device.sh and carry .device: this script then unpacks
# .device/site.tar.gz and installs .device/whl into /tmp/sparsevit-device (mmcv without its compiled ops, which
# the timed forwards do not use). Each table is written to OUT_DIR/<name>.json as soon as it is done, with the
# GPU, driver, torch and CUDA versions in OUT_DIR/env.json, so a run cut short keeps what it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-work_dirs/bench/cuda}
PY=${PYTHON:-python3}
CAP=${COMPILE_CAP_S:-150}
mkdir -p "$OUT"
if ! "$PY" -c 'import mmdet3d' 2>/dev/null; then
    [ -f .device/site.tar.gz ] || { echo 'benchmark_cuda.sh: mmdet3d is not importable and .device is missing (run tools/pack_device.sh where the venv is)'; exit 1; }
    DEV=/tmp/sparsevit-device
    rm -rf "$DEV" && mkdir -p "$DEV" && tar -C "$DEV" -xzf .device/site.tar.gz || exit 1
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$DEV/site" .device/whl/*.whl || exit 1
    export PYTHONPATH="$PWD:$DEV/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import mmdet3d, mmdet, mmseg, mmcv.ops; print("mm* from", mmdet3d.__file__)' || exit 1
fi
"$PY" - "$OUT/env.json" <<'PYEOF' || exit 1
import json, subprocess, sys, torch
if not torch.cuda.is_available():
    sys.exit('benchmark_cuda.sh: no CUDA device')
smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'],
                     capture_output=True, text=True).stdout.strip()
env = dict(gpu=torch.cuda.get_device_name(), nvidia_smi=smi, torch=torch.__version__, cuda=torch.version.cuda)
json.dump(env, open(sys.argv[1], 'w'), indent=2)
print(env)
PYEOF

PAPER="configs/coco/mask-rcnn_sparsevit-t-r30_fpn_672_coco.py configs/coco/mask-rcnn_sparsevit-t-r60_fpn_672_coco.py
       configs/coco/mask-rcnn_sparsevit-t-r70_fpn_672_coco.py"
COMMON=(--device cuda --warmup 3 --repeats 30 --markdown --profile)
MASK_RCNN=(--shape 4 3 672 672 --out-indices 0 1 2 3)
BEVDET=(--shape 6 3 256 704)
status=0
table() {  # NAME ARGS...: one table, its JSON in OUT_DIR
    local name=$1; shift
    echo "=== $name: tools/benchmark_latency.py ${COMMON[*]} $*"
    "$PY" tools/benchmark_latency.py "${COMMON[@]}" "$@" --json "$OUT/$name.json" || status=1
}
for dtype in float32 float16; do
    # shellcheck disable=SC2086  # PAPER is a list of paths
    table "mask-rcnn_672_$dtype" "${MASK_RCNN[@]}" --dtype $dtype --ratios 0 0.6 --configs $PAPER --modes eager graph
    table "bevdet_256x704_$dtype" "${BEVDET[@]}" --dtype $dtype --ratios 0 0.2 0.4 0.6 0.8 --modes eager graph \
        --plot "$OUT/bevdet_256x704_$dtype.png"
done
# the whole detector up to CenterHead's outputs (full-size BEVDet, Swin-T at 6 x 3 x 256 x 704; no NMS)
for dtype in float32 float16; do
    echo "=== bevdet_whole_$dtype: tools/benchmark_bevdet.py"
    "$PY" tools/benchmark_bevdet.py --device cuda --dtype $dtype --modes eager graph --ratios 0 0.4 0.6 \
        --warmup 3 --repeats 20 --profile --json "$OUT/bevdet_whole_$dtype.json" || status=1
done
table swin-l_1024x2048_float16 --arch large --window-size 12 --shape 1 3 1024 2048 --out-indices 0 1 2 3 \
    --dtype float16 --ratios 0 0.6 --modes eager graph --repeats 15
# inductor last, capped: compile times are recorded by the cap's outcome in the log
timeout "$CAP" "$PY" tools/benchmark_latency.py --device cuda --dtype float16 --warmup 2 --repeats 20 "${BEVDET[@]}" \
    --ratios 0 0.6 --modes graph reduce-overhead --no-mmdet --json "$OUT/bevdet_256x704_reduce-overhead.json" \
    || { echo "reduce-overhead table stopped (exit $?; cap ${CAP}s)"; status=1; }
exit $status
