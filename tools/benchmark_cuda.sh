#!/usr/bin/env bash
# The CUDA latency figures of docs/benchmarks.md (issues 10 and 8) in one run: SparseViT vs mmdet's Swin in fp16
# (autocast), eager on the dynamic and the static path, then compiled (inductor, default mode), at the paper's
# Mask R-CNN setting (4 x 3 x 672 x 672), BEVDet's input (6 x 3 x 256 x 704) and Mask2Former's (Swin-L, 1024 x 2048).
#
#   tools/benchmark_cuda.sh [OUT_DIR]          # default work_dirs/bench/cuda; PYTHON=... picks the interpreter
#
# Each table is written as OUT_DIR/<name>.json as soon as it is done, so a run cut short keeps what it finished;
# the compiled tables come last (inductor compiles every ratio in the warm-up rounds: minutes on a cold cache).
set -uo pipefail
OUT=${1:-work_dirs/bench/cuda}
PY=${PYTHON:-python}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'benchmark_cuda.sh: no CUDA device')" || exit 1

PAPER="configs/coco/mask-rcnn_sparsevit-t-r30_fpn_672_coco.py configs/coco/mask-rcnn_sparsevit-t-r60_fpn_672_coco.py
       configs/coco/mask-rcnn_sparsevit-t-r70_fpn_672_coco.py"
COMMON=(--device cuda --dtype float16 --warmup 3 --repeats 30 --markdown)
MASK_RCNN=(--shape 4 3 672 672 --out-indices 0 1 2 3)
BEVDET=(--shape 6 3 256 704)
status=0
table() {  # NAME ARGS...: one table, its JSON in OUT_DIR
    local name=$1; shift
    echo "=== $name: tools/benchmark_latency.py ${COMMON[*]} $*"
    "$PY" tools/benchmark_latency.py "${COMMON[@]}" "$@" --json "$OUT/$name.json" || status=1
}
# shellcheck disable=SC2086  # PAPER is a list of paths
table mask-rcnn_672_eager "${MASK_RCNN[@]}" --ratios 0 0.6 --configs $PAPER --modes dynamic static
# shellcheck disable=SC2086
table bevdet_256x704_eager "${BEVDET[@]}" --ratios 0 0.2 0.4 0.6 0.8 --configs $PAPER --modes dynamic static \
    --plot "$OUT/bevdet_256x704_eager.png"
table swin-l_1024x2048_eager --arch large --window-size 12 --shape 1 3 1024 2048 --out-indices 0 1 2 3 \
    --ratios 0 0.6 --modes dynamic static
table bevdet_256x704_compiled "${BEVDET[@]}" --ratios 0 0.6 --modes static compiled --no-mmdet
# shellcheck disable=SC2086
table mask-rcnn_672_compiled "${MASK_RCNN[@]}" --ratios 0 0.6 --configs $PAPER --modes static compiled --no-mmdet
exit $status
