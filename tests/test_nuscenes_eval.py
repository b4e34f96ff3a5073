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

from projects.sparsevit_bevdet.evaluation import EgoFrameNuScenesMetric, boxes_to_nusc_results
from projects.sparsevit_bevdet.evaluation.nuscenes_devkit_eval import (
    eval_set_sample_tokens,
    load_results_file,
    validate_results,
)
from projects.sparsevit_bevdet.synthetic.nuscenes import CAMERA_NAMES, DETECTION_CLASSES
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


# ----------------------------------------------------------------------------------------------------
# repeated evaluations (a search): the database once; subsets of the eval set


def test_database_and_ground_truth_loaded_once(synthetic_nuscenes, datasets, monkeypatch):
    import nuscenes.eval.common.loaders as devkit_loaders

    from projects.sparsevit_bevdet.datasets import nuscenes_converter
    from projects.sparsevit_bevdet.evaluation import nuscenes_devkit_eval

    loads, gt_loads = [], []
    real_load, real_gt = nuscenes_converter.load_nuscenes, devkit_loaders.load_gt
    monkeypatch.setattr(nuscenes_converter, 'load_nuscenes', lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(devkit_loaders, 'load_gt', lambda *a, **k: gt_loads.append(a) or real_gt(*a, **k))
    monkeypatch.setattr(nuscenes_devkit_eval, '_DATABASE', [])  # start without a cached database
    for _ in range(2):
        metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                        ann_file=str(synthetic_nuscenes.infos['val']), box_frame='ego')
        res = evaluate_predictions(metric, datasets['ego'], gt_as_predictions(datasets['ego']))
        assert res['NuScenes/mAP'] == pytest.approx(1.0, abs=1e-6)
    assert len(loads) == 1 and len(gt_loads) == 1


def test_database_reloaded_when_a_table_changes(nuscenes_copy, monkeypatch):
    import os

    from projects.sparsevit_bevdet.datasets import nuscenes_converter
    from projects.sparsevit_bevdet.evaluation import cached_nuscenes, nuscenes_devkit_eval

    loads = []
    real_load = nuscenes_converter.load_nuscenes
    monkeypatch.setattr(nuscenes_converter, 'load_nuscenes', lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(nuscenes_devkit_eval, '_DATABASE', [])
    first = cached_nuscenes(nuscenes_copy, 'v1.0-mini')
    assert cached_nuscenes(str(nuscenes_copy) + '/', 'v1.0-mini') is first and len(loads) == 1
    table = nuscenes_copy / 'v1.0-mini' / 'sample.json'
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached_nuscenes(nuscenes_copy, 'v1.0-mini') is not first and len(loads) == 2


def _jittered_gt_submission(gt_results_file: Path, out: Path, tokens=None) -> Path:
    """Ground truth with noisy centres and random scores (intermediate APs), optionally only ``tokens``."""
    data = json.loads(gt_results_file.read_text())
    rng = np.random.default_rng(0)
    for boxes in data['results'].values():
        for box in boxes:
            box['translation'] = (np.asarray(box['translation']) + rng.normal(0, 0.8, 3)).tolist()
            box['detection_score'] = float(rng.uniform(0.05, 1.0))
    if tokens is not None:
        data['results'] = {t: data['results'][t] for t in tokens}
    out.write_text(json.dumps(data))
    return out


def _devkit_summary(nusc, result_path: Path, out_dir: Path) -> dict:
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    evaluator = DetectionEval(nusc, config=config_factory('detection_cvpr_2019'), result_path=str(result_path),
                              eval_set='mini_val', output_dir=str(out_dir), verbose=False)
    return evaluator.evaluate()[0].serialize()


def _assert_same_metrics(ours: dict, devkit: dict) -> None:
    assert 0.0 < devkit['mean_ap'] < 1.0  # a non-trivial comparison
    for key in ('mean_ap', 'nd_score'):
        assert ours[key] == pytest.approx(devkit[key], abs=1e-12)
    for cls, aps in devkit['label_aps'].items():
        assert ours['label_aps'][cls] == pytest.approx(aps, abs=1e-12)
    for key, value in devkit['tp_errors'].items():
        assert ours['tp_errors'][key] == pytest.approx(value, abs=1e-12, nan_ok=True)


def test_evaluation_matches_the_devkit_also_on_a_subset(synthetic_nuscenes, gt_results_file, tmp_path, monkeypatch):
    """The cached-ground-truth path gives the devkit's numbers; ``sample_tokens`` gives the numbers the devkit
    gives for a split made of exactly those samples."""
    import nuscenes.eval.common.loaders as devkit_loaders
    from nuscenes.utils.splits import create_splits_scenes

    from projects.sparsevit_bevdet.evaluation import cached_nuscenes, run_detection_eval

    nusc = cached_nuscenes(synthetic_nuscenes.root, 'v1.0-mini')
    full = _jittered_gt_submission(gt_results_file, tmp_path / 'full.json')
    ours = run_detection_eval(nusc, full, 'mini_val', tmp_path / 'ours')
    _assert_same_metrics(ours, _devkit_summary(nusc, full, tmp_path / 'devkit'))

    scene = next(s for s in nusc.scene if s['name'] in create_splits_scenes()['mini_val'])
    tokens = [s['token'] for s in nusc.sample if s['scene_token'] == scene['token']]
    assert 0 < len(tokens) < len(json.loads(full.read_text())['results'])
    subset = _jittered_gt_submission(gt_results_file, tmp_path / 'subset.json', tokens)
    ours = run_detection_eval(nusc, subset, 'mini_val', tmp_path / 'ours_subset', sample_tokens=tokens)
    assert ours['num_samples'] == len(tokens)
    # the reference: the unmodified devkit with mini_val redefined as that one scene
    splits = create_splits_scenes()
    monkeypatch.setattr(devkit_loaders, 'create_splits_scenes', lambda: dict(splits, mini_val=[scene['name']]))
    _assert_same_metrics(ours, _devkit_summary(nusc, subset, tmp_path / 'devkit_subset'))

    other = next(t for t in json.loads(full.read_text())['results'] if t not in tokens)
    with pytest.raises(ValueError, match=rf'subset\.json: 1 of the {len(tokens) + 1} eval samples have no entry'):
        run_detection_eval(nusc, subset, 'mini_val', tmp_path / 'x', sample_tokens=[*tokens, other])
    with pytest.raises(ValueError, match="1 of the sample_tokens to evaluate are not in eval set 'mini_val'"):
        run_detection_eval(nusc, subset, 'mini_val', tmp_path / 'x', sample_tokens=[*tokens, '0' * 32])


def test_metric_evaluates_a_dataset_subset(synthetic_nuscenes, tmp_path):
    """A dataset built with mmengine's ``indices`` and the metric's ``sample_tokens``: only those samples."""
    full = _dataset(synthetic_nuscenes.root, 'ego')
    subset = full.get_subset([0, 2, 5])
    tokens = [subset.get_data_info(i)['token'] for i in range(len(subset))]
    metric = EgoFrameNuScenesMetric(data_root=str(synthetic_nuscenes.root),
                                    ann_file=str(synthetic_nuscenes.infos['val']), jsonfile_prefix=str(tmp_path),
                                    sample_tokens=tokens)
    res = evaluate_predictions(metric, subset, gt_as_predictions(subset))
    assert res['NuScenes/mATE'] < 1e-3  # every sample's boxes went to their own sample
    summary = json.loads((tmp_path / 'metrics_summary.json').read_text())
    assert summary['num_samples'] == 3
    assert sorted(json.loads((tmp_path / 'results_nusc.json').read_text())['results']) == sorted(tokens)
