"""BEVDet's Scale-NMS (Huang et al. 2021, arXiv 2112.11790, Sec. 3.5) on mmdet3d's ``CenterHead``.

In BEV, small objects (pedestrians, traffic cones) occupy less than a cell, so two predictions of one
pedestrian often do not overlap at all and IoU-based NMS keeps both. Scale-NMS enlarges (or shrinks) each
box by a per-class factor before the rotated BEV NMS and returns the boxes at their predicted size; each
task group can also pick its own NMS type (rotated IoU NMS or CenterPoint's circle NMS on centres) and
IoU threshold. The settings are BEVDet's ``test_cfg`` keys::

    test_cfg=dict(pts=dict(...,
        nms_type=['rotate', 'rotate', 'rotate', 'circle', 'rotate', 'rotate'],        # one per task
        nms_thr=[0.2, 0.2, 0.2, 0.2, 0.2, 0.5],                                       # one per task, or one
        nms_rescale_factor=[1.0, [0.7, 0.7], [0.4, 0.55], 1.1, [1.0, 1.0], [4.5, 9.0]]))  # per task / class

A task's factor is one number for all its classes or one per class (in the task's class order). Circle
NMS ignores the factors (it compares centre distances with ``min_radius[task]``). Two more keys fit coarse
BEV grids (e.g. 1.6 m cells, where boxes of small classes in neighbouring cells do not overlap at all):
``max_pool_kernel=3`` keeps only heatmap cells that are the maximum of their k x k neighbourhood (CenterNet's
peak extraction) before decoding, and ``nms_per_class=True`` runs the rotated NMS of a task per class, so one
task holding all classes suppresses duplicates of a class without removing neighbours of another. Without any of these
keys as lists, or factors all 1, the head computes exactly what ``CenterHead`` computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
from mmdet3d.models.dense_heads import CenterHead
from mmdet3d.models.layers import circle_nms, nms_bev
from mmdet3d.registry import MODELS
from mmdet3d.structures import xywhr2xyxyr
from mmengine.structures import InstanceData
from torch import Tensor

__all__ = ['BEVDetCenterHead', 'TaskNMS', 'parse_scale_nms']

NMS_TYPES = ('rotate', 'circle')


@dataclass(frozen=True)
class TaskNMS:
    """The NMS of one task group: type, IoU threshold (rotate) and one box scale factor per class."""

    nms_type: str
    nms_thr: float
    rescale: Tuple[float, ...]


def _per_task(value: Any, key: str, num_tasks: int) -> List[Any]:
    """A scalar for every task, or a list with one entry per task."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_tasks:
            raise ValueError(f'test_cfg.{key} has {len(value)} entries {list(value)}, but the head has '
                             f'{num_tasks} tasks: give one per task (or one value for all)')
        return list(value)
    return [value] * num_tasks


def parse_scale_nms(test_cfg: Dict[str, Any], class_names: Sequence[Sequence[str]]) -> List[TaskNMS]:
    """``test_cfg`` (``nms_type``, ``nms_thr``, optional ``nms_rescale_factor``) -> one :class:`TaskNMS` per task.

    Raises ``ValueError`` naming the key, the task and the value for unknown NMS types, wrong list lengths,
    non-positive factors or a circle task without ``min_radius``.
    """
    num_tasks = len(class_names)
    if 'nms_type' not in test_cfg:
        raise ValueError("test_cfg needs nms_type: 'rotate', 'circle' or one of them per task")
    types = _per_task(test_cfg['nms_type'], 'nms_type', num_tasks)
    thrs = _per_task(test_cfg.get('nms_thr'), 'nms_thr', num_tasks)
    factors = _per_task(test_cfg.get('nms_rescale_factor', 1.0), 'nms_rescale_factor', num_tasks)
    out = []
    for task_id, (nms_type, thr, factor, names) in enumerate(zip(types, thrs, factors, class_names)):
        if nms_type not in NMS_TYPES:
            raise ValueError(f'test_cfg.nms_type of task {task_id} ({list(names)}) is {nms_type!r}; '
                             f'expected one of {NMS_TYPES}')
        if nms_type == 'rotate' and not isinstance(thr, (int, float)):
            raise ValueError(f'test_cfg.nms_thr of task {task_id} ({list(names)}) must be a number for rotated '
                             f'NMS, got {thr!r}')
        if nms_type == 'circle':
            radii = test_cfg.get('min_radius')
            if not isinstance(radii, (list, tuple)) or len(radii) <= task_id:
                raise ValueError(f'task {task_id} ({list(names)}) uses circle NMS, which needs '
                                 f'test_cfg.min_radius[{task_id}]; got min_radius={radii!r}')
        per_class = list(factor) if isinstance(factor, (list, tuple)) else [factor] * len(names)
        if len(per_class) != len(names):
            raise ValueError(f'test_cfg.nms_rescale_factor[{task_id}] = {factor!r} has {len(per_class)} '
                             f'factors, but task {task_id} has {len(names)} classes {list(names)}')
        bad = [f for f in per_class if not isinstance(f, (int, float)) or not f > 0]
        if bad:
            raise ValueError(f'test_cfg.nms_rescale_factor[{task_id}] = {factor!r}: factors must be positive '
                             f'numbers, got {bad}')
        out.append(TaskNMS(nms_type, float(thr) if thr is not None else float('nan'),
                           tuple(float(f) for f in per_class)))
    return out


@MODELS.register_module()
class BEVDetCenterHead(CenterHead):
    """mmdet3d's ``CenterHead`` with BEVDet's per-task NMS type and per-class Scale-NMS at test time.

    Takes ``CenterHead``'s arguments unchanged; training is ``CenterHead``'s. ``test_cfg`` may hold
    ``nms_type`` / ``nms_thr`` as one value or one per task and ``nms_rescale_factor`` (one value per task
    or one per class of the task, see the module docstring). When ``nms_type`` and ``nms_thr`` are single
    values and there is no ``nms_rescale_factor``, :meth:`predict_by_feat` is ``CenterHead``'s own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.test_cfg is not None and self._uses_scale_nms():
            parse_scale_nms(self.test_cfg, self.class_names)  # fail at build time, not at the first test batch

    def _uses_scale_nms(self) -> bool:
        cfg = self.test_cfg
        return (isinstance(cfg.get('nms_type'), (list, tuple)) or isinstance(cfg.get('nms_thr'), (list, tuple))
                or 'nms_rescale_factor' in cfg or bool(cfg.get('max_pool_kernel')) or bool(cfg.get('nms_per_class')))

    def predict_by_feat(self, preds_dicts: Tuple[List[dict]], batch_input_metas: List[dict], *args: Any,
                        **kwargs: Any) -> List[InstanceData]:
        """Decode every task, run its NMS, merge: one ``InstanceData`` per sample with ``bboxes_3d``
        (``box_type_3d``, bottom centre, ``code_size`` dims), ``scores_3d`` ``(K,)``, ``labels_3d`` ``(K,)``
        int (the class index over all tasks)."""
        if self.test_cfg is None:
            raise ValueError('BEVDetCenterHead.predict_by_feat needs test_cfg (decoding and NMS settings)')
        if not self._uses_scale_nms():
            return super().predict_by_feat(preds_dicts, batch_input_metas, *args, **kwargs)
        settings = parse_scale_nms(self.test_cfg, self.class_names)
        per_task = []
        for task_id, preds in enumerate(preds_dicts):
            decoded = self._decode_task(preds[0], task_id)
            per_task.append([self.task_nms(d['bboxes'], d['scores'], d['labels'], task_id, settings[task_id], meta)
                             for d, meta in zip(decoded, batch_input_metas)])
        return self._merge_tasks(per_task, batch_input_metas)

    def _decode_task(self, preds: Dict[str, Tensor], task_id: int) -> List[Dict[str, Tensor]]:
        """One task's head maps ``(B, C, H, W)`` -> per sample ``bboxes (N, code_size)`` (gravity centre),
        ``scores (N,)``, ``labels (N,)`` (index within the task), as ``CenterHead`` decodes them."""
        dim = torch.exp(preds['dim']) if self.norm_bbox else preds['dim']
        heatmap = preds['heatmap'].sigmoid()  # (B, num_class, H, W)
        kernel = int(self.test_cfg.get('max_pool_kernel') or 0)
        if kernel > 1:
            if kernel % 2 == 0:
                raise ValueError(f'test_cfg.max_pool_kernel must be odd (a centred window), got {kernel}')
            peaks = torch.nn.functional.max_pool2d(heatmap, kernel, stride=1, padding=kernel // 2)
            heatmap = heatmap * (peaks == heatmap)
        return self.bbox_coder.decode(heatmap, preds['rot'][:, 0:1], preds['rot'][:, 1:2],
                                      preds['height'], dim, preds.get('vel'), reg=preds['reg'], task_id=task_id)

    def task_nms(self, boxes: Tensor, scores: Tensor, labels: Tensor, task_id: int, setting: TaskNMS,
                 meta: dict) -> Dict[str, Tensor]:
        """NMS of one task on one sample: ``boxes (N, code_size)``, ``scores (N,)``, ``labels (N,)`` -> the kept
        ``bboxes``, ``scores``, ``labels`` (long for rotate, the coder's dtype for circle, as CenterHead)."""
        cfg = self.test_cfg
        if setting.nms_type == 'circle':
            # CenterHead's circle branch: centres and scores only, no score threshold or range filter (the
            # coder applied both); scale factors cannot change a centre distance
            dets = torch.cat([boxes[:, :2], scores.view(-1, 1)], dim=1).detach().cpu().numpy()
            keep = torch.as_tensor(circle_nms(dets, cfg['min_radius'][task_id], post_max_size=cfg['post_max_size']),
                                   dtype=torch.long, device=boxes.device)
            return dict(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])
        labels = labels.long() if self.num_classes[task_id] > 1 else torch.zeros_like(labels, dtype=torch.long)
        if cfg['score_threshold'] > 0.0:
            keep = scores >= cfg['score_threshold']
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if scores.numel() > 0:
            # scale only the copy NMS sees (l, w, h): the returned boxes keep their predicted size exactly
            factors = boxes.new_tensor(setting.rescale)[labels]
            scaled = torch.cat([boxes[:, :3], boxes[:, 3:6] * factors[:, None], boxes[:, 6:]], dim=1)
            if cfg.get('nms_per_class'):
                # classes 1 km apart in the NMS copy: no box of one class can overlap one of another
                scaled[:, 0] = scaled[:, 0] + 1000.0 * labels.to(scaled)
            bev = xywhr2xyxyr(meta['box_type_3d'](scaled, self.bbox_coder.code_size).bev)
            selected = nms_bev(bev, scores, thresh=setting.nms_thr, pre_max_size=cfg['pre_max_size'],
                               post_max_size=cfg['post_max_size'])
            boxes, scores, labels = boxes[selected], scores[selected], labels[selected]
        limit = cfg['post_center_limit_range']
        if len(limit) > 0:
            limit = boxes.new_tensor(limit)
            inside = (boxes[:, :3] >= limit[:3]).all(1) & (boxes[:, :3] <= limit[3:]).all(1)
            boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
        return dict(bboxes=boxes, scores=scores, labels=labels)

    def _merge_tasks(self, per_task: List[List[Dict[str, Tensor]]], metas: List[dict]) -> List[InstanceData]:
        """Concatenate the tasks of each sample; labels offset by the preceding tasks' class counts and the box
        z moved from the gravity centre to the bottom centre (``CenterHead``'s output convention)."""
        offsets = [sum(self.num_classes[:t]) for t in range(len(per_task))]
        results = []
        for i, meta in enumerate(metas):
            bboxes = torch.cat([task[i]['bboxes'] for task in per_task])
            bboxes[:, 2] = bboxes[:, 2] - bboxes[:, 5] * 0.5
            res = InstanceData()
            res.bboxes_3d = meta['box_type_3d'](bboxes, self.bbox_coder.code_size)
            res.scores_3d = torch.cat([task[i]['scores'] for task in per_task])
            res.labels_3d = torch.cat([task[i]['labels'].int() + off for task, off in zip(per_task, offsets)])
            results.append(res)
        return results

