"""tools/benchmark_latency.py --modes: every mode at every ratio in one interleaved table, each mode's rows
relative to its own r=0 and to eager at the same ratio (no timing thresholds)."""
from __future__ import annotations

import json

import pytest
import torch

from projects.sparsevit_bevdet.utils.tool_loader import load_tool


@pytest.fixture(scope='module')
def payload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp('bench') / 'bench.json'
    load_tool('benchmark_latency').main([
        '--shape', '1', '3', '64', '96', '--ratios', '0', '0.5', '--modes', 'eager', 'static', '--no-mmdet',
        '--repeats', '2', '--warmup', '1', '--threads', str(torch.get_num_threads()), '--markdown',
        '--json', str(out)])
    return json.loads(out.read_text())


def test_rows_per_mode_and_ratio(payload):
    rows = {r['variant']: r for r in payload['rows']}
    assert set(rows) == {'SparseViT r=0.00', 'SparseViT r=0.50', 'SparseViT r=0.00 static', 'SparseViT r=0.50 static'}
    assert {r['mode'] for r in rows.values()} == {'eager', 'static'}
    assert all(r['runs'] == 2 and r['median_ms'] > 0 and r['vs_mmdet'] is None for r in rows.values())


def test_ratios_against_own_dense_and_eager(payload):
    rows = {r['variant']: r for r in payload['rows']}
    for suffix in ('', ' static'):
        dense, sparse = rows[f'SparseViT r=0.00{suffix}'], rows[f'SparseViT r=0.50{suffix}']
        assert dense['vs_sparsevit_r0'] == 1.0
        assert sparse['vs_sparsevit_r0'] == pytest.approx(sparse['median_ms'] / dense['median_ms'])
    static, eager = rows['SparseViT r=0.50 static'], rows['SparseViT r=0.50']
    assert eager['vs_eager'] == 1.0
    assert static['vs_eager'] == pytest.approx(static['median_ms'] / eager['median_ms'])
