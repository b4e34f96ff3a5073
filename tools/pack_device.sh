#!/usr/bin/env bash
# Pack what tools/benchmark_cuda.sh needs on a GPU machine that has torch but neither the OpenMMLab packages
# nor a package index (the lent device machines: python3 3.12 with torch + CUDA, numpy, scipy, OpenCV, rich,
# matplotlib): .device/site.tar.gz holds the Python sources of mmengine / mmcv / mmdet / mmdet3d / mmseg and their
# pure-Python dependencies from this machine's venv, and .device/whl the compiled dependencies (shapely,
# pycocotools) as manylinux wheels for CPython 3.12. mmcv's compiled ops stay behind: mmcv/_ext.py stands in
# for them, so `import mmcv.ops` works and calling an op raises NotImplementedError (the encoders and BEVDet's
# forward up to the head outputs use none; NMS does).
#
#   tools/pack_device.sh                  # then carry .device (device tool: carry=['.device'])
#   bash tools/benchmark_cuda.sh "$OUT"    # on the device: unpacks .device itself when mmdet3d is missing
#
# Needs the venv of `make install` (PYTHON=... picks another interpreter) and PyPI for the two wheels;
# DEVICE_OUT=... writes elsewhere than .device, DEVICE_WHEELS=0 skips the wheels (the test suite's offline check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${DEVICE_OUT:-.device}
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PURE="mmengine mmcv mmdet mmdet3d mmseg addict cachetools lyft_dataset_sdk nuscenes prettytable pyquaternion
      termcolor terminaltables yapf yapf_third_party platformdirs wcwidth descartes fire"
WHEELS="shapely==2.0.7 pycocotools==2.0.11"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/site" "$tmp/whl"
for pkg in $PURE; do
    [ -d "$SITE/$pkg" ] || { echo "pack_device.sh: $pkg is not installed in $SITE (run make install)" >&2; exit 1; }
    tar -C "$SITE" --exclude=__pycache__ --exclude='*.so' --exclude='.mim/tools' -cf - "$pkg" | tar -C "$tmp/site" -xf -
done
cat > "$tmp/site/mmcv/_ext.py" <<'PYEOF'
"""Stand-in for mmcv's compiled ops on a machine without them (tools/pack_device.sh): every op raises."""


def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise NotImplementedError(f'mmcv op {name!r}: this mmcv was carried without its compiled ops '
                                  '(tools/pack_device.sh); build mmcv with MMCV_WITH_OPS=1 to use it')
    return unavailable
PYEOF
[ "${DEVICE_WHEELS:-1}" = 0 ] || "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp/whl" $WHEELS
mkdir -p "$OUT"
tar -C "$tmp" -czf "$tmp/site.tar.gz" site
rm -rf "$OUT/whl" "$OUT/site.tar.gz"
mv "$tmp/whl" "$OUT/whl"
mv "$tmp/site.tar.gz" "$OUT/site.tar.gz"
du -sh "$OUT"/site.tar.gz "$OUT"/whl
