"""Running the official nuScenes detection evaluation on a results file, with input checks first.

The devkit's ``DetectionEval`` fails on bad input with bare assertions ("Samples in split doesn't match
samples in predictions.") or crashes deep inside; :func:`validate_results` checks a submission first and
raises ``ValueError`` naming the file, the sample token, the box and the field. :func:`run_detection_eval`
then runs the devkit's evaluation (its own loaders, filters and ``DetectionEval.evaluate``) and writes
``metrics_summary.json`` atomically.

Repeated evaluations (a search scores many candidates) do not reload anything: :func:`cached_nuscenes`
keeps the last ``NuScenes`` database while its root, version and table files (mtime, size) are unchanged,
and the ground truth of an eval set is loaded and filtered once per database object. ``sample_tokens``
evaluates a subset of the eval set (e.g. a search's proxy subset) exactly as the devkit would evaluate a
split made of those samples: the ground truth is restricted to them, and every one must be predicted.
"""
from __future__ import annotations

import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..utils.atomic_io import atomic_write_json

if TYPE_CHECKING:
    from nuscenes import NuScenes
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionConfig

__all__ = ['EVAL_SET_BY_VERSION', 'cached_nuscenes', 'eval_set_sample_tokens', 'flatten_summary',
           'format_summary', 'load_results_file', 'run_detection_eval', 'validate_results']

EVAL_SET_BY_VERSION = {'v1.0-mini': 'mini_val', 'v1.0-trainval': 'val'}
# The devkit ties its predefined splits to a database version (load_gt asserts it).
_SPLIT_VERSION = {'train': 'trainval', 'val': 'trainval', 'train_detect': 'trainval', 'train_track': 'trainval',
                  'mini_train': 'mini', 'mini_val': 'mini', 'test': 'test'}
ERROR_NAMES = {'trans_err': 'mATE', 'scale_err': 'mASE', 'orient_err': 'mAOE', 'vel_err': 'mAVE',
               'attr_err': 'mAAE'}
_BOX_FIELDS = {'translation': 3, 'size': 3, 'rotation': 4, 'velocity': 2}


def load_results_file(path: str | Path) -> Dict[str, Any]:
    """Read a nuScenes submission JSON; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'results file {path} not found')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: corrupt JSON ({e.msg} at line {e.lineno} column {e.colno})') from e
    if not isinstance(data, dict) or not isinstance(data.get('results'), dict):
        raise ValueError(f'{path}: not a nuScenes submission: expected an object with a "results" object '
                         f'mapping sample tokens to box lists')
    if not isinstance(data.get('meta'), dict):
        raise ValueError(f'{path}: the submission has no "meta" object (e.g. {{"use_camera": true, ...}})')
    return data


def eval_set_sample_tokens(nusc: NuScenes, eval_set: str) -> List[str]:
    """Sample tokens of a devkit split (predefined, or custom via the devkit's splits file)."""
    from nuscenes.utils.splits import get_scenes_of_split, is_predefined_split

    if is_predefined_split(eval_set):
        needed = _SPLIT_VERSION[eval_set]
        if not nusc.version.endswith(needed):
            raise ValueError(f'eval set {eval_set!r} belongs to v1.0-{needed}, not to the loaded {nusc.version}')
    scene_names = set(get_scenes_of_split(eval_set, nusc))
    scene_tokens = {s['token'] for s in nusc.scene if s['name'] in scene_names}
    if not scene_tokens:
        raise ValueError(f'no scene of eval set {eval_set!r} is in {nusc.table_root}/scene.json')
    return [s['token'] for s in nusc.sample if s['scene_token'] in scene_tokens]


def _finite_numbers(value: Any, n: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def validate_results(data: Dict[str, Any], expected_samples: Sequence[str], source: str,
                     max_boxes_per_sample: int = 500) -> None:
    """Check a submission against the devkit's rules before running it.

    Every sample of the eval set must be present (also those without boxes), no other sample may be,
    and every box must have finite numbers of the right length, a positive size, a non-zero rotation,
    a known detection and attribute name and its own sample token.
    """
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES, DETECTION_NAMES

    results = data['results']
    expected = set(expected_samples)
    missing = [t for t in expected_samples if t not in results]
    if missing:
        raise ValueError(f'{source}: {len(missing)} of the {len(expected)} eval samples have no entry in '
                         f'"results" (every sample needs one, [] if it has no boxes); first missing: '
                         f'{", ".join(missing[:5])}')
    extra = [t for t in results if t not in expected]
    if extra:
        raise ValueError(f'{source}: {len(extra)} sample token(s) in "results" are not in the eval set; '
                         f'first: {", ".join(extra[:5])}')
    for token, boxes in results.items():
        if not isinstance(boxes, list):
            raise ValueError(f'{source}: results[{token}] must be a list of boxes')
        if len(boxes) > max_boxes_per_sample:
            raise ValueError(f'{source}: sample {token} has {len(boxes)} boxes; the devkit allows at most '
                             f'{max_boxes_per_sample}')
        for i, box in enumerate(boxes):
            where = f'{source}: sample {token} box #{i}'
            if not isinstance(box, dict):
                raise ValueError(f'{where} is not an object')
            if box.get('sample_token') != token:
                raise ValueError(f'{where}: field "sample_token" is {box.get("sample_token")!r}, expected {token}')
            for field, n in _BOX_FIELDS.items():
                if field not in box:
                    raise ValueError(f'{where}: field "{field}" is missing')
                if not _finite_numbers(box[field], n):
                    raise ValueError(f'{where}: field "{field}" must be {n} finite numbers, got {box[field]!r}')
            if min(box['size']) <= 0:
                raise ValueError(f'{where}: field "size" must be positive, got {box["size"]}')
            if math.sqrt(sum(v * v for v in box['rotation'])) < 1e-6:
                raise ValueError(f'{where}: field "rotation" is a zero quaternion')
            score = box.get('detection_score')
            if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
                raise ValueError(f'{where}: field "detection_score" must be a finite number, got {score!r}')
            if box.get('detection_name') not in DETECTION_NAMES:
                raise ValueError(f'{where}: field "detection_name" is {box.get("detection_name")!r}, not one '
                                 f'of {", ".join(DETECTION_NAMES)}')
            attr = box.get('attribute_name', None)
            if attr != '' and attr not in ATTRIBUTE_NAMES:
                raise ValueError(f'{where}: field "attribute_name" is {attr!r}, not "" or one of '
                                 f'{", ".join(ATTRIBUTE_NAMES)}')


def _database_key(dataroot: str | Path, version: str) -> tuple:
    root = Path(dataroot).resolve()
    tables = sorted((root / version).glob('*.json'))
    return (str(root), version, tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in tables))


# The last database loaded: (key, NuScenes). One entry, as a real trainval database takes gigabytes.
_DATABASE: list[tuple[tuple, NuScenes]] = []
# Filtered ground truth per database object and (eval set, config); dropped with the database.
_GROUND_TRUTH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_nuscenes(dataroot: str | Path, version: str) -> NuScenes:
    """``load_nuscenes(dataroot, version)``, loaded once and kept while the root, the version and the table
    files (names, mtimes, sizes) stay the same."""
    from ..datasets import nuscenes_converter

    key = _database_key(dataroot, version)
    if not _DATABASE or _DATABASE[0][0] != key:
        _DATABASE.clear()
        _DATABASE.append((key, nuscenes_converter.load_nuscenes(dataroot, version)))
    return _DATABASE[0][1]


def _filtered_ground_truth(nusc: NuScenes, eval_set: str, cfg: DetectionConfig, config_name: str,
                           verbose: bool) -> EvalBoxes:
    """The eval set's ground truth as ``DetectionEval.__init__`` prepares it (load, centre distances, range
    and point filters), once per database object."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    per_db = _GROUND_TRUTH.setdefault(nusc, {})
    if (eval_set, config_name) not in per_db:
        gt = add_center_dist(nusc, load_gt(nusc, eval_set, DetectionBox, verbose=verbose))
        per_db[(eval_set, config_name)] = filter_eval_boxes(nusc, gt, cfg.class_range, verbose=verbose)
    return per_db[(eval_set, config_name)]


def _restrict(boxes: EvalBoxes, sample_tokens: Sequence[str]) -> EvalBoxes:
    from nuscenes.eval.common.data_classes import EvalBoxes

    out = EvalBoxes()
    for token in sample_tokens:
        out.add_boxes(token, boxes[token])
    return out


def _detection_eval(nusc: NuScenes, cfg: DetectionConfig, result_path: Path, eval_set: str,
                    gt_boxes: EvalBoxes, output_dir: Path, verbose: bool):
    """The devkit's ``DetectionEval`` on prepared ground truth: its ``__init__`` with ``load_gt`` and the
    ground-truth filtering replaced by ``gt_boxes``, then its own ``evaluate()``."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    class PreparedGroundTruthEval(DetectionEval):
        def __init__(self) -> None:  # the attributes DetectionEval.evaluate / render / main use
            self.nusc, self.result_path, self.eval_set, self.cfg = nusc, str(result_path), eval_set, cfg
            self.output_dir, self.verbose = str(output_dir), verbose
            self.plot_dir = os.path.join(self.output_dir, 'plots')
            os.makedirs(self.plot_dir, exist_ok=True)
            pred, self.meta = load_prediction(self.result_path, cfg.max_boxes_per_sample, DetectionBox,
                                              verbose=verbose)
            if set(pred.sample_tokens) != set(gt_boxes.sample_tokens):
                raise ValueError(f'{result_path}: the predicted samples differ from the evaluated ones')
            self.pred_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, pred), cfg.class_range,
                                                verbose=verbose)
            self.gt_boxes = gt_boxes
            self.sample_tokens = gt_boxes.sample_tokens

    return PreparedGroundTruthEval().evaluate()


def run_detection_eval(nusc: NuScenes, result_path: str | Path, eval_set: str, output_dir: str | Path,
                       config_name: str = 'detection_cvpr_2019', verbose: bool = False,
                       validate: bool = True, sample_tokens: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Validate ``result_path``, run the devkit's detection evaluation on it and return its metrics summary
    (``DetectionMetrics.serialize()``), also written to ``<output_dir>/metrics_summary.json``.

    Args:
        sample_tokens: evaluate only these samples of ``eval_set`` (all of them by default); the
            submission must hold exactly these.
    """
    from nuscenes.eval.detection.config import config_factory

    cfg = config_factory(config_name)
    tokens = eval_set_sample_tokens(nusc, eval_set)
    if sample_tokens is not None:
        in_set = set(tokens)
        outside = [t for t in sample_tokens if t not in in_set]
        if outside:
            raise ValueError(f'{len(outside)} of the sample_tokens to evaluate are not in eval set {eval_set!r}; '
                             f'first: {", ".join(outside[:5])}')
        if not sample_tokens:
            raise ValueError('sample_tokens is empty: nothing to evaluate')
        tokens = list(dict.fromkeys(sample_tokens))
    submission = load_results_file(result_path)
    if validate:
        validate_results(submission, tokens, str(result_path), cfg.max_boxes_per_sample)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not any(submission['results'].values()):
        # The devkit cannot load a submission without a single box (it reads the class field of the
        # first box); score it as the devkit scores classes without predictions.
        summary = _no_prediction_metrics(cfg).serialize()
    else:
        gt = _filtered_ground_truth(nusc, eval_set, cfg, config_name, verbose)
        if sample_tokens is not None:
            gt = _restrict(gt, tokens)
        metrics, _ = _detection_eval(nusc, cfg, Path(result_path), eval_set, gt, output_dir, verbose)
        summary = metrics.serialize()
    summary['eval_set'] = eval_set
    summary['num_samples'] = len(tokens)
    summary['wall_time_s'] = time.perf_counter() - start
    # NaN (e.g. a TP error of a class without matches) is not valid JSON; the summary keeps it as null.
    atomic_write_json(output_dir / 'metrics_summary.json', _nan_to_none(summary), indent=2)
    return summary


def _no_prediction_metrics(cfg):
    """``DetectionMetrics`` of an empty submission, computed with the devkit's own functions on its
    ``DetectionMetricData.no_predictions()`` (AP 0, TP errors 1, NaN where the devkit leaves them out)."""
    from nuscenes.eval.detection.algo import calc_ap, calc_tp
    from nuscenes.eval.detection.constants import TP_METRICS
    from nuscenes.eval.detection.data_classes import DetectionMetricData, DetectionMetrics

    metrics = DetectionMetrics(cfg)
    empty = DetectionMetricData.no_predictions()
    for name in cfg.class_names:
        for dist_th in cfg.dist_ths:
            metrics.add_label_ap(name, dist_th, calc_ap(empty, cfg.min_recall, cfg.min_precision))
        for metric in TP_METRICS:
            skipped = (name == 'traffic_cone' and metric in ('attr_err', 'vel_err', 'orient_err')) or (
                name == 'barrier' and metric in ('attr_err', 'vel_err'))
            metrics.add_label_tp(name, metric, float('nan') if skipped else calc_tp(empty, cfg.min_recall, metric))
    metrics.add_runtime(0.0)
    return metrics


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def flatten_summary(summary: Dict[str, Any], classes: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Scalar metrics for logging: mAP, NDS, the 5 mean TP errors and ``AP/<class>`` (mean over the
    distance thresholds) and ``AP/<class>@<dist>m``."""
    out = {'mAP': float(summary['mean_ap']), 'NDS': float(summary['nd_score'])}
    for key, name in ERROR_NAMES.items():
        out[name] = float(summary['tp_errors'][key])
    for cls in classes or summary['mean_dist_aps']:
        out[f'AP/{cls}'] = float(summary['mean_dist_aps'][cls])
        for dist, ap in summary['label_aps'][cls].items():
            out[f'AP/{cls}@{dist}m'] = float(ap)
    return out


def format_summary(summary: Dict[str, Any]) -> str:
    """The devkit's summary as a table: headline metrics, then AP and TP errors per class."""
    lines = [f'mAP: {summary["mean_ap"]:.4f}    NDS: {summary["nd_score"]:.4f}    '
             f'(eval set {summary.get("eval_set", "?")}, {summary.get("num_samples", "?")} samples)']
    lines.append('  '.join(f'{name}: {summary["tp_errors"][key]:.4f}' for key, name in ERROR_NAMES.items()))
    header = f'{"class":<22}{"AP":>8}' + ''.join(f'{n[1:]:>8}' for n in ERROR_NAMES.values())
    lines += ['', header, '-' * len(header)]
    for cls, ap in summary['mean_dist_aps'].items():
        errs = summary['label_tp_errors'][cls]
        lines.append(f'{cls:<22}{ap:>8.4f}' + ''.join(f'{errs[k]:>8.4f}' for k in ERROR_NAMES))
    return '\n'.join(lines)
