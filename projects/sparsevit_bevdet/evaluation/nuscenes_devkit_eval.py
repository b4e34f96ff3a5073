"""Running the official nuScenes detection evaluation on a results file, with input checks first.

The devkit's ``DetectionEval`` fails on bad input with bare assertions ("Samples in split doesn't match
samples in predictions.") or crashes deep inside; :func:`validate_results` checks a submission first and
raises ``ValueError`` naming the file, the sample token, the box and the field. :func:`run_detection_eval`
then runs the devkit unchanged and writes ``metrics_summary.json`` atomically.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..utils.atomic_io import atomic_write_json

if TYPE_CHECKING:
    from nuscenes import NuScenes

__all__ = ['EVAL_SET_BY_VERSION', 'eval_set_sample_tokens', 'flatten_summary', 'format_summary',
           'load_results_file', 'run_detection_eval', 'validate_results']

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


def run_detection_eval(nusc: NuScenes, result_path: str | Path, eval_set: str, output_dir: str | Path,
                       config_name: str = 'detection_cvpr_2019', verbose: bool = False,
                       validate: bool = True) -> Dict[str, Any]:
    """Validate ``result_path``, run the devkit's ``DetectionEval`` on it and return its metrics summary
    (``DetectionMetrics.serialize()``), also written to ``<output_dir>/metrics_summary.json``."""
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    cfg = config_factory(config_name)
    tokens = eval_set_sample_tokens(nusc, eval_set)
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
        evaluator = DetectionEval(nusc, config=cfg, result_path=str(result_path), eval_set=eval_set,
                                  output_dir=str(output_dir), verbose=verbose)
        metrics, _ = evaluator.evaluate()
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
