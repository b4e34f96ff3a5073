"""tools/benchmark_model.py: whole-model latency per pruning setting with the encoder's share read in the same
calls (no timing thresholds here: the figures belong in docs/benchmarks.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from projects.sparsevit_bevdet.utils.tool_loader import load_tool

COCO_SYNTH = 'configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py'
CITYSCAPES_SYNTH = 'configs/cityscapes/mask2former_sparsevit-t_synth-cityscapes.py'
PAPER_R60 = 'configs/coco/mask-rcnn_sparsevit-t-r60_fpn_672_coco.py'


def run(*argv: str) -> dict:
    return load_tool('benchmark_model').main([*argv, '--repeats', '1', '--warmup', '0',
                                              '--threads', str(torch.get_num_threads())])


def test_detector_rows_per_setting(tmp_path):
    out = tmp_path / 'model.json'
    payload = run(COCO_SYNTH, '--shape', '1', '3', '64', '64', '--ratios', '0', '0.5', '--configs', PAPER_R60,
                  '--json', str(out))
    assert json.loads(out.read_text())['rows'] == payload['rows']
    rows = {r['setting']: r for r in payload['rows']}
    assert list(rows) == ['r=0.00', 'r=0.50', 'mask-rcnn_sparsevit-t-r60_fpn_672_coco']
    dense = rows['r=0.00']
    assert dense['model_vs_dense'] == 1.0 and dense['encoder_vs_dense'] == 1.0
    for row in rows.values():
        # the encoder's time is part of the model call it was measured in
        assert 0 < row['encoder_ms'] < row['model_ms']
        assert row['rest_ms'] == pytest.approx(row['model_ms'] - row['encoder_ms'])
        assert isinstance(row['predictions'], int)
    assert rows['r=0.50']['encoder_gmacs'] < dense['encoder_gmacs']
    assert rows['mask-rcnn_sparsevit-t-r60_fpn_672_coco']['ratio'][0] == [0.6, 0.6]
    assert payload['random_weights'] is True


def test_segmentor(tmp_path):
    payload = run(CITYSCAPES_SYNTH, '--shape', '1', '3', '64', '128', '--ratios', '0', '0.6')
    rows = {r['setting']: r for r in payload['rows']}
    assert set(rows) == {'r=0.00', 'r=0.60'}
    assert all(r['predictions'] is None and 0 < r['encoder_ms'] < r['model_ms'] for r in rows.values())


def test_bevdet_needs_dataset_inputs():
    with pytest.raises(NotImplementedError, match='--from-dataset'):
        run('configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py', '--shape', '6', '3', '64', '176',
            '--ratios', '0')


def test_config_without_sparsevit_is_refused(capsys):
    with pytest.raises(SystemExit):
        load_tool('benchmark_model').parse_args([COCO_SYNTH, '--shape', '1', '3', '64', '64', '--configs',
                                                 'configs/bevdet/bevdet_swin-t_8xb8-cbgs-24e_nuscenes-256x704.py'])
    assert 'has no SparseViT backbone' in capsys.readouterr().err


BEVDET_DEMO = 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py'


def test_whole_bevdet_rows_per_setting_and_mode(tmp_path):
    """tools/benchmark_bevdet.py (the whole detector up to CenterHead's outputs, the script make bench-cuda runs)."""
    tool = load_tool('benchmark_bevdet')
    out = tmp_path / 'bevdet.json'
    searched = '[[0.8, 0.8], [0.5, 0.5], [0.3, 0.3, 0.3, 0.3, 0.3, 0.3], [0, 0]]'
    payload = tool.main([BEVDET_DEMO, '--device', 'cpu', '--ratios', '0.6', '--searched', searched, '--repeats', '1',
                         '--warmup', '0', '--threads', str(torch.get_num_threads()), '--json', str(out)])
    assert json.loads(out.read_text())['rows'] == payload['rows']
    rows = {r['setting']: r for r in payload['rows']}
    assert list(rows) == ['r=0.00', 'r=0.60', 'searched']
    assert rows['searched']['ratio'][0] == [0.8, 0.8] and rows['r=0.60']['ratio'] == 0.6
    assert rows['r=0.00']['vs_dense'] == 1.0 and all(r['median_ms'] > 0 and r['mode'] == 'eager' for r in rows.values())
    assert '1 x 6 x 3 x 128 x 352' in payload['title']
    # the rig is nuScenes': six cameras around the ego, the front one looking along +x
    rig = tool.nuscenes_rig((128, 352))
    optical_axes = rig['cam2ego'][:, :3, 2]
    assert optical_axes[0, 0] > 0.99 and len({round(float(np.arctan2(a[1], a[0])), 1) for a in optical_axes}) == 6
    with pytest.raises(SystemExit):
        tool.parse_args([BEVDET_DEMO, '--device', 'cpu', '--modes', 'graph'])
