"""nuScenes evaluation: ground truth fed back as predictions scores perfectly through the whole path
(dataset -> metric's frame conversion -> results JSON -> official devkit); random boxes score ~0; bad
results files fail with errors naming file, sample and field."""
from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from projects.sparsevit_bevdet.datasets.synthetic_nuscenes import CAMERA_NAMES, DETECTION_CLASSES
from projects.sparsevit_bevdet.evaluation import EgoFrameNuScenesMetric, boxes_to_nusc_results
from projects.sparsevit_bevdet.evaluation.nuscenes_devkit_eval import (
    eval_set_sample_tokens,
    load_results_file,
    validate_results,
)
from projects.sparsevit_bevdet.testing.nuscenes import (
    evaluate_predictions,
    gt_as_predictions,
    random_predictions,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _dataset(root: Path, frame: str):
    from mmdet3d.datasets import NuScenesDataset
    from mmengine.registry import init_default_scope

    from projects.sparsevit_bevdet.datasets import EgoFrameNuScenesDataset

    init_default_scope('mmdet3d')
    kwargs = dict(data_root=str(root), ann_file='nuscenes_infos_val.pkl', pipeline=[], test_mode=True,
                  metainfo=dict(version='v1.0-mini', classes=DETECTION_CLASSES),
                  modality=dict(use_camera=True, use_lidar=False),
                  data_prefix=dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMERA_NAMES}))
    if frame == 'ego':
        return EgoFrameNuScenesDataset(box_frame='ego', **kwargs)
    return NuScenesDataset(**kwargs)


@pytest.fixture(scope='module')
def datasets(synthetic_nuscenes):
    return {frame: _dataset(synthetic_nuscenes.root, frame) for frame in ('ego', 'lidar')}


@pytest.mark.parametrize('frame', ['ego', 'lidar'])
def test_ground_truth_as_predictions_scores_perfectly(synthetic_nuscenes, datasets, frame, tmp_path):
    ann_file = str(synthetic_nuscenes.infos['val'])
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root), ann_file=ann_file, box_frame=frame,
                                    jsonfile_prefix=str(tmp_path))
    res = evaluate_predictions(metric, datasets[frame], gt_as_predictions(datasets[frame]))
    assert res['NuScenes/mAP'] == pytest.approx(1.0, abs=1e-6)
    assert res['NuScenes/NDS'] >= 0.99
    for cls in DETECTION_CLASSES:
        assert res[f'NuScenes/AP/{cls}'] == pytest.approx(1.0, abs=1e-6), cls
    for err in ('mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'):
        assert res[f'NuScenes/{err}'] < 1e-3, err
    # The submission and the devkit summary were written atomically next to each other.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics_summary.json', 'plots', 'results_nusc.json']
    summary = json.loads((tmp_path / 'metrics_summary.json').read_text())
    assert summary['mean_ap'] == pytest.approx(1.0) and summary['eval_set'] == 'mini_val'


def test_box_frame_matters(synthetic_nuscenes, datasets):
    """Ego-frame boxes read as LiDAR-frame boxes (mmdet3d's NuScenesMetric assumption) are misplaced by
    the LiDAR mounting and its -90 degree yaw: the conversion really depends on the frame."""
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']), box_frame='lidar')
    res = evaluate_predictions(metric, datasets['ego'], gt_as_predictions(datasets['ego']))
    assert res['NuScenes/mAP'] < 0.2


def test_mmdet3d_nuscenes_metric_agrees_on_lidar_frame(synthetic_nuscenes, datasets):
    """mmdet3d's own NuScenesMetric reads our infos the same way (LiDAR frame, gravity-centre z)."""
    from mmdet3d.evaluation.metrics import NuScenesMetric

    metric = NuScenesMetric(data_root=str(synthetic_nuscenes.root), ann_file=str(synthetic_nuscenes.infos['val']))
    res = evaluate_predictions(metric, datasets['lidar'], gt_as_predictions(datasets['lidar']))
    assert res['NuScenes metric/pred_instances_3d_NuScenes/mAP'] == pytest.approx(1.0, abs=1e-6)
    assert res['NuScenes metric/pred_instances_3d_NuScenes/NDS'] >= 0.99


def test_random_boxes_score_near_zero(synthetic_nuscenes, datasets):
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']), box_frame='ego')
    res = evaluate_predictions(metric, datasets['ego'], random_predictions(datasets['ego']))
    assert res['NuScenes/mAP'] < 0.05
    assert res['NuScenes/NDS'] < 0.2


def test_ego_and_lidar_conversion_agree(synthetic_nuscenes):
    """The same boxes given in the LiDAR frame and (transformed by hand) in the ego frame give the same
    global submission boxes."""
    from nuscenes.eval.detection.config import config_factory

    with open(synthetic_nuscenes.infos['val'], 'rb') as f:
        info = pickle.load(f)['data_list'][1]
    rng = np.random.default_rng(1)
    n = 12
    lidar = np.concatenate([rng.uniform(-20, 20, (n, 2)), rng.uniform(-1, 1, (n, 1)), rng.uniform(1, 4, (n, 3)),
                            rng.uniform(-3, 3, (n, 1)), rng.uniform(-3, 3, (n, 2))], 1)
    l2e = np.asarray(info['lidar_points']['lidar2ego'])
    yaw_l2e = math.atan2(l2e[1, 0], l2e[0, 0])
    ego = lidar.copy()
    ego[:, :3] = lidar[:, :3] @ l2e[:3, :3].T + l2e[:3, 3]
    ego[:, 6] = lidar[:, 6] + yaw_l2e
    ego[:, 7:9] = lidar[:, 7:9] @ l2e[:2, :2].T
    scores, labels = rng.uniform(0, 1, n), rng.integers(0, 10, n)
    cfg = config_factory('detection_cvpr_2019')
    a = boxes_to_nusc_results(lidar, scores, labels, info, DETECTION_CLASSES, 'lidar', cfg.class_range)
    b = boxes_to_nusc_results(ego, scores, labels, info, DETECTION_CLASSES, 'ego', cfg.class_range)
    assert len(a) == len(b) == n
    for x, y in zip(a, b):
        np.testing.assert_allclose(x['translation'], y['translation'], atol=1e-9)
        np.testing.assert_allclose(np.abs(np.dot(x['rotation'], y['rotation'])), 1.0, atol=1e-9)
        np.testing.assert_allclose(x['velocity'], y['velocity'], atol=1e-9)
        assert x['size'] == y['size'] and x['attribute_name'] == y['attribute_name']
    with pytest.raises(ValueError, match='NaN/inf in bboxes_3d'):
        bad = ego.copy()
        bad[3, 0] = np.nan
        boxes_to_nusc_results(bad, scores, labels, info, DETECTION_CLASSES, 'ego', cfg.class_range)


# ----------------------------------------------------------------------------------------------------
# results files: the CLI and bad input


@pytest.fixture(scope='module')
def gt_results_file(synthetic_nuscenes, datasets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('gt_results')
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']), jsonfile_prefix=str(out),
                                    format_only=True)
    assert evaluate_predictions(metric, datasets['ego'], gt_as_predictions(datasets['ego'])) == {}
    return out / 'results_nusc.json'


def _import_tool(name: str):
    sys.path.insert(0, str(REPO_ROOT / 'tools'))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_eval_cli_prints_summary(synthetic_nuscenes, gt_results_file, tmp_path, capsys):
    eval_nuscenes = _import_tool('eval_nuscenes')
    rc = eval_nuscenes.main([str(gt_results_file), '--data-root', str(synthetic_nuscenes.root),
                             '--version', 'v1.0-mini', '--eval-set', 'mini_val', '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert 'mAP: 1.0000' in out and 'NDS: 1.0000' in out and 'traffic_cone' in out
    assert json.loads((tmp_path / 'metrics_summary.json').read_text())['nd_score'] > 0.99
    rc = eval_nuscenes.main([str(tmp_path / 'missing.json'), '--data-root', str(synthetic_nuscenes.root),
                             '--version', 'v1.0-mini'])
    assert rc == 1 and 'missing.json not found' in capsys.readouterr().err


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # json writes NaN/Infinity tokens, as a careless exporter would
    return path


def _check(path: Path, synthetic_nuscenes) -> None:
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import load_nuscenes

    nusc = load_nuscenes(synthetic_nuscenes.root, 'v1.0-mini')
    validate_results(load_results_file(path), eval_set_sample_tokens(nusc, 'mini_val'), str(path))


def test_results_missing_samples(synthetic_nuscenes, gt_results_file, tmp_path):
    data = json.loads(gt_results_file.read_text())
    dropped = sorted(data['results'])[2]
    del data['results'][dropped]
    path = _write(tmp_path / 'partial.json', data)
    with pytest.raises(ValueError, match=rf'partial\.json: 1 of the 6 eval samples .*{dropped}'):
        _check(path, synthetic_nuscenes)


@pytest.mark.parametrize('field,value', [('translation', [float('nan'), 0.0, 0.0]),
                                         ('velocity', [float('inf'), 0.0]),
                                         ('detection_score', float('nan'))])
def test_results_with_nan_or_inf(synthetic_nuscenes, gt_results_file, tmp_path, field, value):
    data = json.loads(gt_results_file.read_text())
    token = sorted(data['results'])[0]
    data['results'][token][3][field] = value
    path = _write(tmp_path / 'nan.json', data)
    assert 'NaN' in path.read_text() or 'Infinity' in path.read_text()
    with pytest.raises(ValueError, match=rf'nan\.json: sample {token} box #3: field "{field}"'):
        _check(path, synthetic_nuscenes)


def test_results_other_defects(synthetic_nuscenes, gt_results_file, tmp_path):
    data = json.loads(gt_results_file.read_text())
    token = sorted(data['results'])[1]
    bad_name = json.loads(json.dumps(data))
    bad_name['results'][token][0]['detection_name'] = 'tram'
    with pytest.raises(ValueError, match=rf'sample {token} box #0: field "detection_name" is \'tram\''):
        _check(_write(tmp_path / 'name.json', bad_name), synthetic_nuscenes)
    extra = json.loads(json.dumps(data))
    extra['results']['0' * 32] = []
    with pytest.raises(ValueError, match='not in the eval set; first: 0000'):
        _check(_write(tmp_path / 'extra.json', extra), synthetic_nuscenes)
    (tmp_path / 'corrupt.json').write_text(gt_results_file.read_text()[:1000])
    with pytest.raises(ValueError, match=r'corrupt\.json: corrupt JSON .* line 1 column'):
        _check(tmp_path / 'corrupt.json', synthetic_nuscenes)
    with pytest.raises(ValueError, match='no "meta" object'):
        _check(_write(tmp_path / 'nometa.json', {'results': data['results']}), synthetic_nuscenes)


def test_metric_rejects_incomplete_predictions(synthetic_nuscenes, datasets):
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']))
    preds = gt_as_predictions(datasets['ego'])[:-1]
    with pytest.raises(ValueError, match='1 of the 6 eval samples have no entry'):
        evaluate_predictions(metric, datasets['ego'], preds)


def test_submission_without_any_box_scores_zero(synthetic_nuscenes, datasets, tmp_path):
    """The devkit itself cannot load a submission holding no box at all; the metric scores it as the
    devkit scores classes without predictions (an untrained detector produces exactly this)."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    dataset = datasets['ego']
    empty = []
    for i in range(len(dataset)):
        sample = Det3DDataSample(metainfo=dict(sample_idx=dataset.get_data_info(i)['sample_idx']))
        sample.pred_instances_3d = InstanceData(bboxes_3d=LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9),
                                                scores_3d=torch.zeros(0), labels_3d=torch.zeros(0, dtype=torch.long))
        empty.append(sample)
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']), box_frame='ego',
                                    jsonfile_prefix=str(tmp_path))
    res = evaluate_predictions(metric, dataset, empty)
    assert res['NuScenes/mAP'] == 0.0 and res['NuScenes/NDS'] == 0.0
    assert res['NuScenes/mATE'] == 1.0 and res['NuScenes/AP/car'] == 0.0
