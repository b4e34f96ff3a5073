"""nuScenes detection metric for boxes predicted in the ego frame (BEVDet) or in the LiDAR frame.

mmdet3d's ``NuScenesMetric`` assumes LiDAR-frame boxes: it applies ``lidar2ego`` and then ``ego2global``.
BEVDet predicts in the ego frame of the key frame, so that chain would move every box by the LiDAR
mounting offset and rotate it by -90 degrees. :class:`EgoFrameNuScenesMetric` takes the frame as an option
(``box_frame='ego'`` by default, ``'lidar'`` for LiDAR-frame detectors), converts the boxes to global
coordinates with vectorised exact rotations, writes the submission JSON atomically, checks it, runs the
official devkit evaluation and returns mAP, NDS, mATE, mASE, mAOE, mAVE, mAAE and per-class AP, which
mmengine logs under the metric prefix (``NuScenes/mAP``, ``NuScenes/AP/car``, ...).

The nuScenes database and the eval set's ground truth are loaded once per process and reused while the
tables are unchanged (:func:`.nuscenes_devkit_eval.cached_nuscenes`), so repeated validations (a search)
do not reload them. ``sample_tokens`` evaluates a subset of the eval set (e.g. a dataset built with
mmengine's ``indices``): the devkit then sees exactly those samples, ground truth included.

Config use::

    val_evaluator = dict(type='EgoFrameNuScenesMetric', data_root='data/nuscenes-synth',
                         ann_file='data/nuscenes-synth/nuscenes_infos_val.pkl', box_frame='ego')

Input (``process``): ``Det3DDataSample``s or their dicts with ``sample_idx`` and ``pred_instances_3d``
holding ``bboxes_3d`` (a ``BaseInstance3DBoxes`` in the chosen frame, 9 dims: x, y, z (bottom centre),
x_size, y_size, z_size, yaw, vx, vy), ``scores_3d`` and ``labels_3d``. A sample is matched to its info
by its ``token`` meta key when it has one (the BEVDet pipelines pack it), else by ``sample_idx``: mmengine
sets that to the position in the dataset, which for a subset (``indices``) is the position in the subset,
matched to ``sample_tokens[sample_idx]``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmdet3d.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger

from ..datasets.geometry import matrix_to_quat
from ..utils.atomic_io import atomic_write_json
from .nuscenes_devkit_eval import (
    EVAL_SET_BY_VERSION,
    cached_nuscenes,
    flatten_summary,
    format_summary,
    run_detection_eval,
)

__all__ = ['EgoFrameNuScenesMetric', 'boxes_to_nusc_results', 'default_attribute']

BOX_FRAMES = ('ego', 'lidar')
_VEHICLES = ('car', 'construction_vehicle', 'bus', 'truck', 'trailer')
_STATIC_DEFAULT = {'car': 'vehicle.parked', 'truck': 'vehicle.parked', 'trailer': 'vehicle.parked',
                   'construction_vehicle': 'vehicle.parked', 'bus': 'vehicle.stopped',
                   'bicycle': 'cycle.without_rider', 'motorcycle': 'cycle.without_rider',
                   'pedestrian': 'pedestrian.standing', 'barrier': '', 'traffic_cone': ''}


def default_attribute(name: str, speed: float) -> str:
    """Attribute of a box from its class and speed (m/s), as mmdet3d's metric assigns it to detectors
    that predict none: moving above 0.2 m/s (``vehicle.moving``, ``cycle.with_rider``,
    ``pedestrian.moving``), otherwise parked / stopped (bus) / without rider / standing."""
    if speed > 0.2:
        if name in _VEHICLES:
            return 'vehicle.moving'
        if name in ('bicycle', 'motorcycle'):
            return 'cycle.with_rider'
        if name == 'pedestrian':
            return 'pedestrian.moving'
    return _STATIC_DEFAULT[name]


def boxes_to_nusc_results(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, info: Mapping[str, Any],
                          classes: Sequence[str], box_frame: str, class_range: Mapping[str, float],
                          max_boxes: int = 500, logger: Optional[MMLogger] = None) -> List[dict]:
    """Convert one sample's boxes to devkit submission boxes in global coordinates.

    Args:
        boxes: ``(N, 9)`` x, y, z of the *gravity centre*, x_size (length), y_size (width), z_size,
            yaw, vx, vy in ``box_frame``.
        scores, labels: ``(N,)``.
        info: the sample's info (``token``, ``ego2global``, ``lidar_points.lidar2ego``).
        classes: label -> detection name.
        box_frame: ``'ego'`` (ego frame of the key frame) or ``'lidar'``.
        class_range: the devkit's evaluation range per class; boxes beyond it (in the ego frame) are
            dropped, as the devkit would.
        max_boxes: keep the best-scoring boxes if there are more (the devkit refuses more than 500).
    """
    if box_frame not in BOX_FRAMES:
        raise ValueError(f'box_frame must be one of {BOX_FRAMES}, got {box_frame!r}')
    token = info['token']
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2:
        raise ValueError(f'sample {token}: boxes must be (N, 9), got shape {boxes.shape}')
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if boxes.shape[1] < 9:
        raise ValueError(f'sample {token}: boxes have {boxes.shape[1]} values, need 9 (with vx, vy)')
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f'sample {token}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels')
    for name, arr in (('bboxes_3d', boxes[:, :9]), ('scores_3d', scores)):
        finite = np.isfinite(arr)
        bad = ~(finite.all(1) if finite.ndim == 2 else finite)  # (N, 9) boxes or (N,) scores; N may be 0
        if bad.any():
            raise ValueError(f'sample {token}: prediction {int(np.flatnonzero(bad)[0])} has a NaN/inf in '
                             f'{name} ({int(bad.sum())} such boxes)')
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f'sample {token}: labels_3d must lie in [0, {len(classes)}), got {labels.min()}..'
                         f'{labels.max()}')
    centers, dims, yaw, vel = boxes[:, :3], boxes[:, 3:6], boxes[:, 6], boxes[:, 7:9]
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((len(boxes), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    vel3 = np.concatenate([vel, np.zeros((len(boxes), 1))], 1)
    if box_frame == 'lidar':
        l2e = np.asarray(info['lidar_points']['lidar2ego'], np.float64)
        centers = centers @ l2e[:3, :3].T + l2e[:3, 3]
        rot = l2e[:3, :3] @ rot
        vel3 = vel3 @ l2e[:3, :3].T
    names = [classes[i] for i in labels]
    keep = np.array([np.hypot(*centers[i, :2]) <= class_range[n] for i, n in enumerate(names)], bool)
    order = np.flatnonzero(keep)
    order = order[np.argsort(-scores[order], kind='stable')]
    if len(order) > max_boxes:
        if logger is not None:
            logger.warning(f'sample {token}: {len(order)} boxes in range, keeping the {max_boxes} best scored '
                           f'(the devkit allows at most {max_boxes})')
        order = order[:max_boxes]
    e2g = np.asarray(info['ego2global'], np.float64)
    centers_g = centers[order] @ e2g[:3, :3].T + e2g[:3, 3]
    quats = matrix_to_quat(e2g[:3, :3] @ rot[order])
    vel_g = vel3[order] @ e2g[:3, :3].T
    out = []
    for j, i in enumerate(order):
        name = names[i]
        out.append({
            'sample_token': token,
            'translation': centers_g[j].tolist(),
            'size': [float(dims[i, 1]), float(dims[i, 0]), float(dims[i, 2])],  # nuScenes order: w, l, h
            'rotation': quats[j].tolist(),
            'velocity': vel_g[j, :2].tolist(),
            'detection_name': name,
            'detection_score': float(scores[i]),
            'attribute_name': default_attribute(name, float(np.hypot(*vel_g[j, :2]))),
        })
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@METRICS.register_module()
class EgoFrameNuScenesMetric(NuScenesMetric):
    """nuScenes detection metric (official devkit) for ego-frame or LiDAR-frame box predictions.

    Args:
        data_root: nuScenes root the devkit loads (``<data_root>/<version>/``).
        ann_file: the info pkl of the evaluated split (its ``sample_idx`` order).
        box_frame: ``'ego'`` (BEVDet, default) or ``'lidar'``.
        eval_set: devkit split; by default ``mini_val`` for v1.0-mini and ``val`` for v1.0-trainval.
        modality: written to the submission's ``meta``.
        format_only: only write the submission (e.g. for the test server); needs ``jsonfile_prefix``.
        jsonfile_prefix: folder for ``results_nusc.json`` and ``metrics_summary.json``; a temporary
            folder (removed afterwards) if None.
        sample_tokens: evaluate only these samples of the eval set (each must be predicted), in the order
            of the evaluated dataset (e.g. a dataset built with mmengine's ``indices``); None evaluates the
            whole eval set.
        Other arguments as mmdet3d's ``NuScenesMetric``.
    """

    default_prefix: Optional[str] = 'NuScenes'

    def __init__(self,
                 data_root: str,
                 ann_file: str,
                 box_frame: str = 'ego',
                 eval_set: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 modality: Optional[dict] = None,
                 prefix: Optional[str] = None,
                 format_only: bool = False,
                 jsonfile_prefix: Optional[str] = None,
                 eval_version: str = 'detection_cvpr_2019',
                 collect_device: str = 'cpu',
                 backend_args: Optional[dict] = None,
                 sample_tokens: Optional[Sequence[str]] = None) -> None:
        if box_frame not in BOX_FRAMES:
            raise ValueError(f'box_frame must be one of {BOX_FRAMES}, got {box_frame!r}')
        if modality is None:
            modality = dict(use_camera=box_frame == 'ego', use_lidar=box_frame == 'lidar')
        super().__init__(data_root=data_root, ann_file=ann_file, metric=metric, modality=modality,
                         prefix=prefix, format_only=format_only, jsonfile_prefix=jsonfile_prefix,
                         eval_version=eval_version, collect_device=collect_device, backend_args=backend_args)
        # NuScenesMetric hard-codes its prefix 'NuScenes metric'; keep ours short unless one is given.
        self.prefix = prefix or 'NuScenes'
        if self.metrics != ['bbox']:
            raise ValueError(f'EgoFrameNuScenesMetric evaluates metric "bbox" only, got {self.metrics}')
        self.box_frame = box_frame
        self.eval_set = eval_set
        self.sample_tokens = None if sample_tokens is None else list(sample_tokens)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each sample's predictions as compact numpy arrays (cheap to collect across ranks)."""
        for sample in data_samples:
            if hasattr(sample, 'to_dict'):
                sample = sample.to_dict()
            if 'pred_instances_3d' not in sample or 'sample_idx' not in sample:
                raise KeyError('EgoFrameNuScenesMetric.process needs data samples with "sample_idx" and '
                               f'"pred_instances_3d"; got keys {sorted(sample)}')
            pred = sample['pred_instances_3d']
            bboxes = pred['bboxes_3d']
            if not hasattr(bboxes, 'gravity_center'):
                raise TypeError(f'pred_instances_3d.bboxes_3d must be a BaseInstance3DBoxes (e.g. '
                                f'LiDARInstance3DBoxes), got {type(bboxes).__name__}')
            if type(bboxes).__name__ == 'CameraInstance3DBoxes':
                raise TypeError('camera-frame boxes are not supported; predict in the ego or LiDAR frame')
            tensor = _to_numpy(bboxes.tensor)
            if tensor.shape[1] < 9:
                raise ValueError(f'sample_idx {sample["sample_idx"]}: bboxes_3d has box_dim {tensor.shape[1]}; '
                                 f'the nuScenes metric needs 9 (x, y, z, x_size, y_size, z_size, yaw, vx, vy)')
            boxes = np.concatenate([_to_numpy(bboxes.gravity_center), _to_numpy(bboxes.dims),
                                    _to_numpy(bboxes.yaw)[:, None], tensor[:, 7:9]], 1).astype(np.float64)
            self.results.append({'sample_idx': int(sample['sample_idx']), 'token': sample.get('token'), 'boxes': boxes,
                                 'scores': _to_numpy(pred['scores_3d']).astype(np.float64),
                                 'labels': _to_numpy(pred['labels_3d']).astype(np.int64)})

    def results_to_submission(self, results: List[dict], classes: Sequence[str],
                              logger: Optional[MMLogger] = None) -> Dict[str, Any]:
        """The devkit submission dict of the processed results."""
        infos = load(self.ann_file, backend_args=self.backend_args)['data_list']
        by_idx = {info['sample_idx']: info for info in infos}
        by_token = {info['token']: info for info in infos}
        submission: Dict[str, List[dict]] = {}
        for res in results:
            token = res.get('token')
            if token is None and self.sample_tokens is not None:
                if not 0 <= res['sample_idx'] < len(self.sample_tokens):
                    raise ValueError(f'sample_idx {res["sample_idx"]} is outside the {len(self.sample_tokens)} '
                                     f'sample_tokens of the evaluated subset')
                token = self.sample_tokens[res['sample_idx']]
            info = by_idx.get(res['sample_idx']) if token is None else by_token.get(token)
            if info is None:
                which = f'sample_idx {res["sample_idx"]}' if token is None else f'token {token}'
                raise ValueError(f'{self.ann_file}: no sample with {which}; was the metric given the info file '
                                 f'of the evaluated dataset?')
            if info['token'] in submission:
                raise ValueError(f'sample {info["token"]} (sample_idx {res["sample_idx"]}) was predicted twice')
            submission[info['token']] = boxes_to_nusc_results(
                res['boxes'], res['scores'], res['labels'], info, classes, self.box_frame,
                self.eval_detection_configs.class_range, self.eval_detection_configs.max_boxes_per_sample,
                logger)
        meta = dict(use_camera=False, use_lidar=False, use_radar=False, use_map=False, use_external=False)
        meta.update(self.modality)
        return {'meta': meta, 'results': submission}

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        classes = list(self.dataset_meta['classes'])
        version = self.dataset_meta['version']
        submission = self.results_to_submission(results, classes, logger)
        tmp_dir = None
        if self.jsonfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory(prefix='nusc_eval_')
            out_dir = Path(tmp_dir.name)
        else:
            out_dir = Path(self.jsonfile_prefix)
        try:
            result_path = out_dir / 'results_nusc.json'
            atomic_write_json(result_path, submission)
            logger.info(f'nuScenes submission ({self.box_frame}-frame boxes -> global) written to {result_path}')
            if self.format_only:
                return {}
            eval_set = self.eval_set or EVAL_SET_BY_VERSION.get(version)
            if eval_set is None:
                raise ValueError(f'no default eval set for version {version!r}; set eval_set, or format_only=True '
                                 f'for v1.0-test')
            nusc = cached_nuscenes(self.data_root, version)
            summary = run_detection_eval(nusc, result_path, eval_set, out_dir, self.eval_version,
                                         sample_tokens=self.sample_tokens)
            logger.info('nuScenes detection evaluation (official devkit):\n' + format_summary(summary))
            return flatten_summary(summary, classes)
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()
