"""Yaw and velocity conventions along the whole path a box takes (issue 17): nuScenes annotation -> info (ego
frame) -> BEV augmentation -> CenterHead targets -> decoded boxes -> devkit submission box. A sign, axis or
period slip at any step would show as systematic orientation / velocity errors (pi, pi/2, a mirror) that
training cannot remove."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from projects.sparsevit_bevdet.synthetic.nuscenes import CAMERA_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU_DEMO = REPO_ROOT / 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py'


def _wrap(angle: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * np.asarray(angle, np.float64)))


def _recipe():
    from mmengine.config import Config

    return Config.fromfile(str(CPU_DEMO))


@pytest.fixture(scope='module')
def classes():
    """The recipe's class order (the datasets' labels and the head's task both use it)."""
    return tuple(_recipe().class_names)


@pytest.fixture(scope='module')
def ego_dataset(synthetic_nuscenes, classes):
    from mmengine.registry import init_default_scope

    from projects.sparsevit_bevdet.datasets import EgoFrameNuScenesDataset

    init_default_scope('mmdet3d')
    return EgoFrameNuScenesDataset(
        box_frame='ego', data_root=str(synthetic_nuscenes.root), ann_file='nuscenes_infos_val.pkl', pipeline=[],
        test_mode=True, metainfo=dict(version='v1.0-mini', classes=classes),
        modality=dict(use_camera=True, use_lidar=False),
        data_prefix=dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMERA_NAMES}))


@pytest.fixture(scope='module')
def head():
    """The CPU demo recipe's head (BEVDetCenterHead, one task of ten classes, 1.6 m cells)."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.sparsevit_bevdet  # noqa: F401  registers the project's modules

    init_default_scope('mmdet3d')
    cfg = _recipe().model
    return MODELS.build(dict(cfg.pts_bbox_head, train_cfg=cfg.train_cfg.pts, test_cfg=cfg.test_cfg.pts)).eval()


def _targets_as_predictions(head, boxes, labels):
    """Head outputs that say exactly what the targets say: heatmap logits +10 at each box's cell of its class
    (-10 elsewhere), and the regression maps holding each box's target at its cell."""
    from mmengine.structures import InstanceData

    heatmaps, anno_boxes, inds, masks = head.get_targets([InstanceData(bboxes_3d=boxes, labels_3d=labels)])
    heat = torch.full_like(heatmaps[0], -10.0)  # (1, C, H, W)
    b, c, h, w = heat.shape
    keep = masks[0][0].bool()
    cells = inds[0][0][keep]
    targets = anno_boxes[0][0][keep]  # (K, 10): reg 2, height 1, dim 3, sin, cos, vx, vy
    # the single task gathers its boxes class by class (CenterHead.get_targets_single): slot k holds the k-th box
    # in stable class order
    task_labels = labels[torch.argsort(labels, stable=True)][keep.nonzero()[:, 0]]
    heat.view(b, c, h * w)[0, task_labels, cells] = 10.0
    maps = torch.zeros(b, targets.shape[1], h * w)
    maps[0][:, cells] = targets.T
    maps = maps.view(b, -1, h, w)
    preds = dict(reg=maps[:, 0:2], height=maps[:, 2:3], dim=maps[:, 3:6], rot=maps[:, 6:8], vel=maps[:, 8:10],
                 heatmap=heat)
    return [[preds]], keep


def _bda_cases():
    return [(0.0, 1.0, False, False), (0.0, 1.0, True, False), (0.0, 1.0, False, True), (0.0, 1.0, True, True),
            (8.0, 1.03, True, False), (-10.0, 0.97, False, True)]


@pytest.mark.parametrize('rotate,scale,flip_dx,flip_dy', _bda_cases())
def test_bev_augmentation_maps_heading_and_velocity_like_points(ego_dataset, rotate, scale, flip_dx, flip_dy):
    """The augmented yaw is the heading vector mapped by the same matrix as the BEV features (a flip mirrors the
    heading, it does not turn it by pi); the augmented velocity is the velocity mapped by it."""
    from projects.sparsevit_bevdet.datasets.transforms import BEVDetBEVAug, bev_aug_matrix

    boxes = ego_dataset.get_ann_info(0)['gt_bboxes_3d']
    assert boxes.tensor.shape[1] == 9 and len(boxes) > 10
    yaw0, vel0 = boxes.yaw.numpy().copy(), boxes.tensor[:, 7:9].numpy().copy()
    aug = boxes.clone()
    BEVDetBEVAug.apply_to_boxes(aug, rotate, scale, flip_dx, flip_dy)
    m = bev_aug_matrix(rotate, scale, flip_dx, flip_dy)[:2, :2]
    heading = np.stack([np.cos(yaw0), np.sin(yaw0)], 1) @ m.T
    np.testing.assert_allclose(_wrap(aug.yaw.numpy() - np.arctan2(heading[:, 1], heading[:, 0])), 0, atol=1e-5)
    np.testing.assert_allclose(aug.tensor[:, 7:9].numpy(), vel0 @ m.T, atol=1e-4)


@pytest.mark.parametrize('rotate,scale,flip_dx,flip_dy', _bda_cases())
def test_head_targets_decode_to_the_same_yaw_and_velocity(ego_dataset, head, rotate, scale, flip_dx, flip_dy):
    """CenterHead's (sin, cos, vx, vy) targets, decoded by the recipe's head (coder, peak pooling, per-class Scale-NMS),
    give back every box's yaw and velocity."""
    from projects.sparsevit_bevdet.datasets.transforms import BEVDetBEVAug

    checked = 0
    for index in range(3):
        ann = ego_dataset.get_ann_info(index)
        boxes, labels = ann['gt_bboxes_3d'].clone(), torch.as_tensor(ann['gt_labels_3d'])
        BEVDetBEVAug.apply_to_boxes(boxes, rotate, scale, flip_dx, flip_dy)
        preds, _ = _targets_as_predictions(head, boxes, labels)
        meta = dict(box_type_3d=type(boxes))
        with torch.no_grad():
            out = head.predict_by_feat(preds, [meta])[0]
        dec = out.bboxes_3d
        assert len(dec) >= 0.8 * len(boxes)  # Scale-NMS may drop a close same-class neighbour
        dist = torch.cdist(dec.gravity_center[:, :2], boxes.gravity_center[:, :2])
        nearest = dist.argmin(1)
        assert bool((dist.min(1).values < 0.05).all())
        assert bool((out.labels_3d == labels[nearest]).all())
        np.testing.assert_allclose(_wrap(dec.yaw.numpy() - boxes.yaw[nearest].numpy()), 0, atol=1e-4)
        np.testing.assert_allclose(dec.tensor[:, 7:9].numpy(), boxes.tensor[nearest, 7:9].numpy(), atol=1e-4)
        checked += len(dec)
    assert checked > 30


def test_decoded_boxes_reach_the_devkit_with_the_annotated_yaw_and_velocity(synthetic_nuscenes, ego_dataset, head,
                                                                             classes):
    """Without augmentation, decoded target boxes converted by the metric (ego -> global) carry each annotation's
    global yaw and the velocity the devkit derives from its neighbours."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.utils import quaternion_yaw
    from pyquaternion import Quaternion

    from projects.sparsevit_bevdet.evaluation import boxes_to_nusc_results

    nusc = NuScenes(version='v1.0-mini', dataroot=str(synthetic_nuscenes.root), verbose=False)
    checked = 0
    for index in range(3):
        info = ego_dataset.get_data_info(index)
        ann = ego_dataset.get_ann_info(index)
        boxes, labels = ann['gt_bboxes_3d'], torch.as_tensor(ann['gt_labels_3d'])
        preds, _ = _targets_as_predictions(head, boxes, labels)
        with torch.no_grad():
            out = head.predict_by_feat(preds, [dict(box_type_3d=type(boxes))])[0]
        dec = out.bboxes_3d
        nine = torch.cat([dec.gravity_center, dec.tensor[:, 3:6], dec.yaw[:, None], dec.tensor[:, 7:9]], 1).numpy()
        results = boxes_to_nusc_results(nine, out.scores_3d.numpy(), out.labels_3d.numpy(), info, classes, 'ego',
                                        {c: 1e9 for c in classes})
        anns = [nusc.get('sample_annotation', t) for t in nusc.get('sample', info['token'])['anns']]
        centres = np.array([a['translation'][:2] for a in anns])
        for res in results:
            j = int(np.argmin(np.linalg.norm(centres - np.asarray(res['translation'][:2]), axis=1)))
            assert math.dist(centres[j], res['translation'][:2]) < 0.05
            yaw_gt = quaternion_yaw(Quaternion(anns[j]['rotation']))
            assert abs(_wrap(quaternion_yaw(Quaternion(res['rotation'])) - yaw_gt)) < 1e-4
            np.testing.assert_allclose(res['velocity'], nusc.box_velocity(anns[j]['token'])[:2], atol=1e-3)
            checked += 1
    assert checked > 30
