"""tools/benchmark_latency.py writes a readable table, JSON and a plot (no timing thresholds here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / 'bench.json', tmp_path / 'bench.png'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/benchmark_latency.py'), '--shape', '1', '3', '64', '96',
         '--ratios', '0', '0.5', '--repeats', '2', '--warmup', '1', '--memory', '--markdown',
         '--json', str(out_json), '--plot', str(out_png)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'SparseViT r=0.50' in proc.stdout and 'mmdet SwinTransformer' in proc.stdout
    payload = json.loads(out_json.read_text())
    rows = {r['variant']: r for r in payload['rows']}
    assert set(rows) == {'SparseViT r=0.00', 'SparseViT r=0.50', 'mmdet SwinTransformer'}
    assert rows['SparseViT r=0.00']['vs_sparsevit_r0'] == 1.0 and rows['mmdet SwinTransformer']['vs_mmdet'] == 1.0
    assert rows['SparseViT r=0.50']['gmacs'] < rows['SparseViT r=0.00']['gmacs']
    assert all(r['runs'] == 2 and r['peak_mem_mb'] > 0 for r in rows.values())
    assert out_png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_device_pack_imports_the_stack_without_compiled_mmcv_ops(tmp_path):
    """tools/pack_device.sh: the mm* sources it packs import from the pack alone, and mmcv's ops, left behind,
    raise a clear NotImplementedError when called (the CUDA benchmarks run from this pack on bare GPU machines)."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / 'device'
    subprocess.run(['bash', str(repo / 'tools/pack_device.sh')], check=True, capture_output=True, timeout=300,
                   env={**os.environ, 'PYTHON': sys.executable, 'DEVICE_OUT': str(out), 'DEVICE_WHEELS': '0'})
    subprocess.run(['tar', '-C', str(tmp_path), '-xzf', str(out / 'site.tar.gz')], check=True)
    site = tmp_path / 'site'
    assert not list(site.rglob('*.so')) and (site / 'mmdet3d/.mim/configs/_base_/default_runtime.py').is_file()
    probe = ('import mmcv, mmcv.ops, mmdet3d, torch\n'
             f'assert mmcv.__file__.startswith({str(site)!r}) and mmdet3d.__file__.startswith({str(site)!r})\n'
             'try:\n    mmcv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)\n'
             'except NotImplementedError as err:\n    print(err)\n')
    proc = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(site)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mmcv op 'nms'" in proc.stdout and 'pack_device.sh' in proc.stdout
