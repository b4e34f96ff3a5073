"""The partial synthetic v1.0-trainval (a devkit 'val' split of several scenes) and the paired bootstrap of
mAP / NDS over its val scenes: with every scene drawn once it is the devkit's evaluation, a subset of scenes is
the devkit's evaluation of those samples, and a difference known exactly comes back with a zero-width interval."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from projects.sparsevit_bevdet.synthetic.nuscenes import CAMERA_NAMES, DETECTION_CLASSES

TRAIN_SCENES, VAL_SCENES, VAL_SAMPLES = 2, 4, 3


@pytest.fixture(scope='module')
def trainval(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny partial v1.0-trainval (2 train scenes x 2 key frames, 4 val scenes x 3, 45 x 80 images), its infos
    and the ground truth of its val split as a submission."""
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos
    from projects.sparsevit_bevdet.evaluation import EgoFrameNuScenesMetric
    from projects.sparsevit_bevdet.synthetic.nuscenes import SyntheticNuScenesConfig, generate_synthetic_nuscenes
    from projects.sparsevit_bevdet.testing.nuscenes import evaluate_predictions, gt_as_predictions

    root = tmp_path_factory.mktemp('nuscenes_trainval')
    cfg = SyntheticNuScenesConfig(out_dir=root, version='v1.0-trainval', train_scenes=TRAIN_SCENES,
                                  val_scenes=VAL_SCENES, samples_per_scene=2, val_samples_per_scene=VAL_SAMPLES,
                                  image_size=(45, 80), workers=1)
    generate_synthetic_nuscenes(cfg)
    infos = create_nuscenes_infos(root, 'v1.0-trainval', root, partial=True)
    dataset = _dataset(root)
    out = root / 'gt_eval'
    metric = EgoFrameNuScenesMetric(data_root=str(root), ann_file=str(infos['val']), box_frame='ego',
                                    jsonfile_prefix=str(out))
    metrics = evaluate_predictions(metric, dataset, gt_as_predictions(dataset))
    return SimpleNamespace(root=root, infos=infos, gt_metrics=metrics, gt_results=out / 'results_nusc.json')


def _dataset(root: Path):
    from mmengine.registry import init_default_scope

    from projects.sparsevit_bevdet.datasets import EgoFrameNuScenesDataset

    init_default_scope('mmdet3d')
    return EgoFrameNuScenesDataset(
        box_frame='ego', data_root=str(root), ann_file='nuscenes_infos_val.pkl', pipeline=[], test_mode=True,
        metainfo=dict(version='v1.0-trainval', classes=DETECTION_CLASSES),
        modality=dict(use_camera=True, use_lidar=False),
        data_prefix=dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMERA_NAMES}))


def _nusc(root: Path):
    from projects.sparsevit_bevdet.evaluation import cached_nuscenes

    return cached_nuscenes(root, 'v1.0-trainval')


def _write(path: Path, submission: dict) -> Path:
    path.write_text(json.dumps(submission))
    return path


def _noisy(submission: dict, seed: int) -> dict:
    """Ground truth with jittered centres, random scores, a third dropped and shifted false positives."""
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(submission)
    for token, boxes in out['results'].items():
        kept = []
        for box in boxes:
            if rng.random() < 0.33:
                continue
            x, y, z = box['translation']
            box['translation'] = [x + rng.normal(0, 0.8), y + rng.normal(0, 0.8), z]
            box['detection_score'] = float(rng.uniform(0.05, 1.0))
            kept.append(box)
            if rng.random() < 0.3:
                fp = dict(copy.deepcopy(box), detection_score=float(rng.uniform(0.05, 1.0)))
                fp['translation'] = [fp['translation'][0] + 6.0, fp['translation'][1], fp['translation'][2]]
                kept.append(fp)
        out['results'][token] = kept
    return out


def test_partial_trainval_is_a_devkit_val_split(trainval):
    import pickle

    from nuscenes.utils.splits import train, val

    from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos
    from projects.sparsevit_bevdet.evaluation.nuscenes_devkit_eval import eval_set_sample_tokens

    nusc = _nusc(trainval.root)
    assert [s['name'] for s in nusc.scene] == list(train[:TRAIN_SCENES]) + list(val[:VAL_SCENES])
    assert len(eval_set_sample_tokens(nusc, 'val')) == VAL_SCENES * VAL_SAMPLES
    with open(trainval.infos['val'], 'rb') as f:
        infos = pickle.load(f)
    assert len(infos['data_list']) == VAL_SCENES * VAL_SAMPLES and infos['metainfo']['version'] == 'v1.0-trainval'
    # a real trainval database must hold its whole split unless told otherwise
    with pytest.raises(ValueError, match=r"lacks .* scene\(s\) of the devkit split 'train'"):
        create_nuscenes_infos(trainval.root, 'v1.0-trainval', trainval.root / 'strict', nusc=nusc)
    # ground truth fed back scores perfectly through the devkit on eval set 'val'
    assert trainval.gt_metrics['NuScenes/mAP'] == pytest.approx(1.0, abs=1e-6)
    assert trainval.gt_metrics['NuScenes/NDS'] >= 0.99


def test_every_scene_once_is_the_devkit_evaluation(trainval, tmp_path):
    from projects.sparsevit_bevdet.evaluation import run_detection_eval
    from projects.sparsevit_bevdet.evaluation.bootstrap import match_submission, metrics_for_weights

    nusc = _nusc(trainval.root)
    noisy = _write(tmp_path / 'noisy.json', _noisy(json.loads(trainval.gt_results.read_text()), seed=1))
    devkit = run_detection_eval(nusc, noisy, 'val', tmp_path / 'devkit')
    assert 0.05 < devkit['mean_ap'] < 0.95  # a case with true and false positives at every threshold
    table = match_submission(nusc, noisy, 'val')
    assert len(table.scene_names) == VAL_SCENES
    m_ap, nds = metrics_for_weights(table, np.ones(VAL_SCENES, np.int64))
    assert m_ap == pytest.approx(devkit['mean_ap'], abs=1e-12)
    assert nds == pytest.approx(devkit['nd_score'], abs=1e-12)
    # weights 0 / 1: the devkit's evaluation of the samples of the drawn scenes
    weights = np.array([1, 0, 1, 1])
    subset = [t for t, g in zip(table.sample_tokens, table.scene_of_sample) if weights[g]]
    submission = json.loads(noisy.read_text())
    submission['results'] = {t: submission['results'][t] for t in subset}
    part = run_detection_eval(nusc, _write(tmp_path / 'part.json', submission), 'val', tmp_path / 'part',
                              sample_tokens=subset)
    m_ap, nds = metrics_for_weights(table, weights)
    assert m_ap == pytest.approx(part['mean_ap'], abs=1e-12) and nds == pytest.approx(part['nd_score'], abs=1e-12)


def test_known_difference_has_a_zero_width_interval(trainval, tmp_path):
    from projects.sparsevit_bevdet.evaluation.bootstrap import match_submission, paired_bootstrap

    nusc = _nusc(trainval.root)
    gt = json.loads(trainval.gt_results.read_text())
    no_bicycle = copy.deepcopy(gt)
    no_bicycle['results'] = {t: [b for b in boxes if b['detection_name'] != 'bicycle']
                             for t, boxes in gt['results'].items()}
    tables = {'perfect': match_submission(nusc, trainval.gt_results, 'val'),
              'no_bicycle': match_submission(nusc, _write(tmp_path / 'nb.json', no_bicycle), 'val'),
              'noisy': match_submission(nusc, _write(tmp_path / 'noisy.json', _noisy(gt, seed=2)), 'val')}
    result = paired_bootstrap(tables, [('perfect', 'no_bicycle'), ('noisy', 'noisy'), ('perfect', 'noisy')],
                              replicates=40, level=0.9, seed=0)
    # one class of ten scores AP 0 in every replicate (every val scene holds bicycles): mAP 1.0 - 0.9
    diff = result['perfect - no_bicycle']['mAP']
    assert diff['value'] == pytest.approx(0.1) and diff['low'] == pytest.approx(0.1) and \
        diff['high'] == pytest.approx(0.1)
    assert diff['resolved'] and diff['p_above_zero'] == 1.0
    same = result['noisy - noisy']['NDS']
    assert same['low'] == same['high'] == 0.0 and not same['resolved'] and same['p_above_zero'] == 0.0
    noisy = result['noisy']['NDS']
    assert noisy['low'] < noisy['high']  # scenes differ: a real spread
    assert result['perfect - noisy']['NDS']['resolved']
    assert result['_settings']['num_scenes'] == VAL_SCENES and result['_settings']['replicates'] == 40
    with pytest.raises(ValueError, match="no configuration 'dense'"):
        paired_bootstrap(tables, [('perfect', 'dense')], replicates=2)
