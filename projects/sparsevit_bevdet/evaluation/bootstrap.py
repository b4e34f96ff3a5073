"""Paired bootstrap intervals of nuScenes mAP / NDS over val scenes, from per-box devkit matches.

The devkit's matching is greedy per sample: predictions of a class are taken in descending score order and
each one matches the nearest untaken ground-truth box of its own sample. So whether a prediction is a true
positive, and its TP errors, depend only on its own sample; what depends on the whole split is the ranking of
all predictions and the number of ground-truth boxes. :func:`match_submission` therefore matches a results file
once, on the devkit's own loaded and filtered boxes, and keeps for every prediction its sample, score, TP flag
and errors. A bootstrap replicate (val scenes drawn with replacement) repeats each sample's predictions and
ground-truth counts as often as its scene was drawn, then recomputes AP and the TP errors with the devkit's
interpolation, ``calc_ap`` / ``calc_tp`` and ``DetectionMetrics`` (mAP, NDS). With every scene drawn once the
result is the devkit's own evaluation (tested).

:func:`paired_bootstrap` draws the same scenes for every configuration, so the interval of a difference
(e.g. searched - dense) reflects how the two detectors differ on the same data, not the spread of the data.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from nuscenes import NuScenes
    from nuscenes.eval.detection.data_classes import DetectionConfig, DetectionMetricData

__all__ = ['ClassMatches', 'MatchTable', 'bootstrap_submissions', 'match_submission', 'metrics_for_weights',
           'paired_bootstrap']

_ERRORS = ('trans_err', 'vel_err', 'scale_err', 'orient_err', 'attr_err')


@dataclasses.dataclass
class ClassMatches:
    """One class at one distance threshold; predictions in the devkit's ranking order (P of them).

    ``sample`` (P,) sample index, ``score`` (P,), ``tp`` (P,) bool; ``errors`` maps each TP error name to
    (P,) floats (NaN for false positives), only at the devkit's TP threshold (``dist_th_tp``).
    """

    sample: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    errors: Optional[Dict[str, np.ndarray]] = None


@dataclasses.dataclass
class MatchTable:
    """A results file matched against the eval set's ground truth (S samples, G scenes)."""

    cfg: DetectionConfig
    sample_tokens: List[str]
    scene_of_sample: np.ndarray  # (S,) index into scene_names
    scene_names: List[str]
    num_gt: Dict[str, np.ndarray]  # class -> (S,) ground-truth boxes per sample after the devkit's filters
    matches: Dict[Tuple[str, float], ClassMatches]


def _filtered_predictions(nusc: NuScenes, cfg: DetectionConfig, result_path: Path):
    """The submission as ``DetectionEval.__init__`` prepares it (load, centre distances, range filter)."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    pred, _meta = load_prediction(str(result_path), cfg.max_boxes_per_sample, DetectionBox, verbose=False)
    return filter_eval_boxes(nusc, add_center_dist(nusc, pred), cfg.class_range, verbose=False)


def _match_class(gt_boxes, pred_boxes, class_name: str, dist_th: float, with_errors: bool,
                 sample_index: Dict[str, int]) -> ClassMatches:
    """Greedy matching of one class at ``dist_th`` (centre distance), recording each prediction's outcome."""
    from nuscenes.eval.common.utils import attr_acc, center_distance, scale_iou, velocity_l2, yaw_diff

    preds = [box for box in pred_boxes.all if box.detection_name == class_name]
    scores = np.array([box.detection_score for box in preds], np.float64)
    # the devkit ranks by (score, position in the list), descending
    order = np.lexsort((np.arange(len(preds)), scores))[::-1]
    tp = np.zeros(len(preds), bool)
    errors = {name: np.full(len(preds), np.nan) for name in _ERRORS} if with_errors else None
    gt_of: Dict[str, list] = {}
    taken: Dict[str, np.ndarray] = {}
    period = np.pi if class_name == 'barrier' else 2 * np.pi  # barriers are symmetric (devkit)
    for rank, i in enumerate(order):
        box = preds[i]
        token = box.sample_token
        if token not in gt_of:
            gt_of[token] = [g for g in gt_boxes[token] if g.detection_name == class_name]
            taken[token] = np.zeros(len(gt_of[token]), bool)
        gts = gt_of[token]
        if not gts:
            continue
        centres = np.array([g.translation[:2] for g in gts], np.float64)
        dist = np.linalg.norm(centres - np.asarray(box.translation[:2], np.float64), axis=1)
        dist[taken[token]] = np.inf
        j = int(np.argmin(dist))  # the first of equal distances, as the devkit's strict '<' keeps
        if dist[j] < dist_th:
            taken[token][j] = True
            tp[rank] = True
            if errors is not None:
                gt = gts[j]
                errors['trans_err'][rank] = center_distance(gt, box)
                errors['vel_err'][rank] = velocity_l2(gt, box)
                errors['scale_err'][rank] = 1 - scale_iou(gt, box)
                errors['orient_err'][rank] = yaw_diff(gt, box, period=period)
                errors['attr_err'][rank] = 1 - attr_acc(gt, box)
    ranked = [preds[i] for i in order]
    return ClassMatches(sample=np.array([sample_index[b.sample_token] for b in ranked], np.int64),
                        score=scores[order], tp=tp, errors=errors)


def match_submission(nusc: NuScenes, result_path: str | Path, eval_set: str,
                     config_name: str = 'detection_cvpr_2019') -> MatchTable:
    """Match ``result_path`` (a validated nuScenes submission of ``eval_set``) box by box."""
    from nuscenes.eval.detection.config import config_factory

    from .nuscenes_devkit_eval import _filtered_ground_truth, eval_set_sample_tokens

    cfg = config_factory(config_name)
    tokens = eval_set_sample_tokens(nusc, eval_set)
    gt = _filtered_ground_truth(nusc, eval_set, cfg, config_name, verbose=False)
    pred = _filtered_predictions(nusc, cfg, Path(result_path))
    if set(pred.sample_tokens) != set(tokens):
        raise ValueError(f'{result_path}: its samples differ from the {len(tokens)} samples of eval set '
                         f'{eval_set!r}')
    index = {t: i for i, t in enumerate(tokens)}
    scene_token = [nusc.get('sample', t)['scene_token'] for t in tokens]
    names = sorted({nusc.get('scene', s)['name'] for s in scene_token})
    scene_idx = {n: i for i, n in enumerate(names)}
    scene_of_sample = np.array([scene_idx[nusc.get('scene', s)['name']] for s in scene_token], np.int64)
    num_gt = {c: np.array([sum(g.detection_name == c for g in gt[t]) for t in tokens], np.int64)
              for c in cfg.class_names}
    matches = {(c, th): _match_class(gt, pred, c, th, th == cfg.dist_th_tp, index)
               for c in cfg.class_names for th in cfg.dist_ths}
    return MatchTable(cfg, tokens, scene_of_sample, names, num_gt, matches)


def _metric_data(m: ClassMatches, npos: int, weights: np.ndarray) -> DetectionMetricData:
    """The devkit's ``accumulate`` output for predictions repeated ``weights[sample]`` times (S,)."""
    from nuscenes.eval.common.utils import cummean
    from nuscenes.eval.detection.data_classes import DetectionMetricData

    rep = np.repeat(np.arange(len(m.tp)), weights[m.sample])  # copies of one prediction stay adjacent
    tp = m.tp[rep]
    if npos == 0 or not tp.any():
        return DetectionMetricData.no_predictions()
    conf = m.score[rep]
    tp_cum = np.cumsum(tp).astype(float)
    fp_cum = np.cumsum(~tp).astype(float)
    rec = tp_cum / float(npos)
    rec_interp = np.linspace(0, 1, DetectionMetricData.nelem)
    prec = np.interp(rec_interp, rec, tp_cum / (tp_cum + fp_cum), right=0)
    conf_interp = np.interp(rec_interp, rec, conf, right=0)
    errors = {}
    for name in _ERRORS:
        if m.errors is None:
            errors[name] = np.ones(DetectionMetricData.nelem)
            continue
        values = cummean(m.errors[name][rep][tp])
        errors[name] = np.interp(conf_interp[::-1], conf[tp][::-1], values[::-1])[::-1]
    return DetectionMetricData(recall=rec_interp, precision=prec, confidence=conf_interp, **errors)


def metrics_for_weights(table: MatchTable, scene_weights: np.ndarray) -> Tuple[float, float]:
    """(mAP, NDS) of the split in which scene g appears ``scene_weights[g]`` times (G,) ints."""
    from nuscenes.eval.detection.algo import calc_ap, calc_tp
    from nuscenes.eval.detection.constants import TP_METRICS
    from nuscenes.eval.detection.data_classes import DetectionMetrics

    cfg = table.cfg
    weights = np.asarray(scene_weights, np.int64)[table.scene_of_sample]  # (S,)
    metrics = DetectionMetrics(cfg)
    for name in cfg.class_names:
        npos = int((table.num_gt[name] * weights).sum())
        for th in cfg.dist_ths:
            data = _metric_data(table.matches[(name, th)], npos, weights)
            metrics.add_label_ap(name, th, calc_ap(data, cfg.min_recall, cfg.min_precision))
            if th == cfg.dist_th_tp:
                tp_data = data
        for metric in TP_METRICS:
            # the devkit leaves these out of the means (cones have no heading, velocity or attribute)
            skipped = (name == 'traffic_cone' and metric in ('attr_err', 'vel_err', 'orient_err')) or (
                name == 'barrier' and metric in ('attr_err', 'vel_err'))
            metrics.add_label_tp(name, metric, float('nan') if skipped else calc_tp(tp_data, cfg.min_recall, metric))
    return float(metrics.mean_ap), float(metrics.nd_score)


def _interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(tables: Dict[str, MatchTable], pairs: Sequence[Tuple[str, str]], replicates: int = 1000,
                     level: float = 0.9, seed: int = 0) -> Dict[str, dict]:
    """Percentile intervals of each configuration's mAP / NDS and of the differences ``a - b`` of ``pairs``.

    Every replicate draws the G val scenes with replacement (the same draw for all configurations). Returns
    ``{name: {'mAP': {...}, 'NDS': {...}}}`` for every table and ``'a - b'`` for every pair, each metric as
    ``value`` (the full split, the devkit's figure), ``low`` / ``high`` (the ``level`` interval) and, for
    pairs, ``p_above_zero`` (the share of replicates in which ``a`` beats ``b``) and ``resolved`` (whether the
    interval excludes 0).
    """
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level}')
    if replicates < 1:
        raise ValueError(f'replicates must be >= 1, got {replicates}')
    first = next(iter(tables.values()))
    for name, table in tables.items():
        if table.sample_tokens != first.sample_tokens:
            raise ValueError(f'configuration {name!r} was evaluated on other samples than the first one; a paired '
                             f'bootstrap needs the same val split')
    for a, b in pairs:
        for n in (a, b):
            if n not in tables:
                raise ValueError(f'pair {a} - {b}: no configuration {n!r} (have {", ".join(tables)})')
    num_scenes = len(first.scene_names)
    rng = np.random.default_rng(seed)
    draws = np.stack([np.bincount(rng.integers(0, num_scenes, num_scenes), minlength=num_scenes)
                      for _ in range(replicates)])  # (R, G)
    full = {n: metrics_for_weights(t, np.ones(num_scenes, np.int64)) for n, t in tables.items()}
    boot = {n: np.array([metrics_for_weights(t, w) for w in draws]) for n, t in tables.items()}  # (R, 2)
    out: Dict[str, dict] = {}
    for name in tables:
        out[name] = {metric: dict(value=full[name][k], **dict(zip(('low', 'high'), _interval(boot[name][:, k],
                                                                                              level))))
                     for k, metric in enumerate(('mAP', 'NDS'))}
    for a, b in pairs:
        entry = {}
        for k, metric in enumerate(('mAP', 'NDS')):
            diff = boot[a][:, k] - boot[b][:, k]
            low, high = _interval(diff, level)
            entry[metric] = dict(value=full[a][k] - full[b][k], low=low, high=high,
                                 p_above_zero=float((diff > 0).mean()), resolved=bool(low > 0 or high < 0))
        out[f'{a} - {b}'] = entry
    out['_settings'] = dict(replicates=replicates, level=level, seed=seed, unit='val scene',
                            num_scenes=num_scenes, num_samples=len(first.sample_tokens))
    return out


def bootstrap_submissions(data_root: str | Path, version: str, submissions: Dict[str, Path],
                          pairs: Sequence[Tuple[str, str]], replicates: int = 1000, level: float = 0.9,
                          seed: int = 0) -> Dict[str, dict]:
    """:func:`paired_bootstrap` of results files (name -> submission of the version's default eval set)."""
    from .nuscenes_devkit_eval import EVAL_SET_BY_VERSION, cached_nuscenes

    if version not in EVAL_SET_BY_VERSION:
        raise ValueError(f'no default eval set for version {version!r}; expected one of '
                         f'{", ".join(EVAL_SET_BY_VERSION)}')
    nusc = cached_nuscenes(data_root, version)
    tables = {name: match_submission(nusc, path, EVAL_SET_BY_VERSION[version]) for name, path in submissions.items()}
    return paired_bootstrap(tables, pairs, replicates=replicates, level=level, seed=seed)
