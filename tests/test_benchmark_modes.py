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
        '--shape', '1', '3', '64', '96', '--ratios', '0', '0.5', '--modes', 'eager', 'compiled', '--no-mmdet',
        '--repeats', '2', '--warmup', '1', '--threads', str(torch.get_num_threads()), '--markdown',
        '--json', str(out)])
    return json.loads(out.read_text())


def test_rows_per_mode_and_ratio(payload):
    rows = {r['variant']: r for r in payload['rows']}
    assert set(rows) == {'SparseViT r=0.00', 'SparseViT r=0.50', 'SparseViT r=0.00 compiled',
                         'SparseViT r=0.50 compiled'}
    assert {r['mode'] for r in rows.values()} == {'eager', 'compiled'}
    assert all(r['runs'] == 2 and r['median_ms'] > 0 and r['vs_mmdet'] is None for r in rows.values())


def test_ratios_against_own_dense_and_eager(payload):
    rows = {r['variant']: r for r in payload['rows']}
    for suffix in ('', ' compiled'):
        dense, sparse = rows[f'SparseViT r=0.00{suffix}'], rows[f'SparseViT r=0.50{suffix}']
        assert dense['vs_sparsevit_r0'] == 1.0
        assert sparse['vs_sparsevit_r0'] == pytest.approx(sparse['median_ms'] / dense['median_ms'])
    compiled, eager = rows['SparseViT r=0.50 compiled'], rows['SparseViT r=0.50']
    assert eager['vs_eager'] == 1.0
    assert compiled['vs_eager'] == pytest.approx(compiled['median_ms'] / eager['median_ms'])


def test_config_ratios_timed_as_a_variant(tmp_path):
    """--configs: the per-block ratios of a config's SparseViT backbone become one more variant per mode,
    named after the config, with fewer MACs than dense and its ratios in the JSON."""
    out = tmp_path / 'bench.json'
    config = 'configs/coco/mask-rcnn_sparsevit-t-r60_fpn_672_coco.py'
    load_tool('benchmark_latency').main([
        '--shape', '1', '3', '64', '96', '--ratios', '0', '--configs', config, '--no-mmdet',
        '--repeats', '1', '--warmup', '1', '--threads', str(torch.get_num_threads()), '--json', str(out)])
    rows = {r['variant']: r for r in json.loads(out.read_text())['rows']}
    assert set(rows) == {'SparseViT r=0.00', 'SparseViT mask-rcnn_sparsevit-t-r60_fpn_672_coco'}
    cfg_row = rows['SparseViT mask-rcnn_sparsevit-t-r60_fpn_672_coco']
    assert cfg_row['ratio'] == [[0.6, 0.6], [0.0, 0.0], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0.0, 0.0]]
    assert cfg_row['gmacs'] < rows['SparseViT r=0.00']['gmacs']
    assert cfg_row['vs_sparsevit_r0'] == pytest.approx(cfg_row['median_ms'] / rows['SparseViT r=0.00']['median_ms'])


@pytest.mark.parametrize('argv, message', [
    (['--ratios', '0.5'], 'must include 0'),
    (['--configs', 'configs/bevdet/bevdet_swin-t_8xb8-cbgs-24e_nuscenes-256x704.py'], 'has no SparseViT backbone'),
    (['--configs', 'configs/missing.py'], 'is not a file'),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_tool('benchmark_latency').parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('mode', ['graph', 'reduce-overhead'])
def test_cuda_only_modes_are_refused_on_the_cpu(mode, capsys):
    with pytest.raises(SystemExit):
        load_tool('benchmark_latency').parse_args(['--device', 'cpu', '--modes', mode])
    assert 'run on CUDA only' in capsys.readouterr().err
