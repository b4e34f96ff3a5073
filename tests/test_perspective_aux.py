"""The auxiliary perspective-view loss: targets projected from the 3D boxes, and its place in BEVDet.loss."""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

from projects.sparsevit_bevdet.models.perspective_aux import (
    PerspectiveObjectnessHead,
    perspective_targets,
    sigmoid_focal_loss,
)
from tests.test_bevdet_model import (
    CLASS_NAMES,
    IMG_H,
    IMG_W,
    NUM_CAMS,
    RIG_YAWS,
    build,
    matrices,
    model_cfg,
    rig_metainfo,
    synthetic_batch,
)

STRIDE = 16
FEATURE = (IMG_H // STRIDE, IMG_W // STRIDE)
FRONT, BACK = RIG_YAWS.index(0.0), RIG_YAWS.index(180.0)


def boxes(rows: list) -> LiDARInstance3DBoxes:
    """(x, y, z bottom, l, w, h, yaw) rows in the ego frame."""
    return LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32), box_dim=7)


def targets_of(rows: list, labels: list, meta: Optional[dict] = None) -> torch.Tensor:
    mats = matrices([meta or rig_metainfo()])
    return perspective_targets([boxes(rows).corners], [torch.tensor(labels)], mats, len(CLASS_NAMES), FEATURE,
                               STRIDE)[0]


def test_box_ahead_marks_the_front_camera_centre_only() -> None:
    car = CLASS_NAMES.index('car')
    target = targets_of([[10.0, 0.13, 0.0, 4.5, 1.9, 1.6, 0.0]], [car])
    assert target.shape == (NUM_CAMS, len(CLASS_NAMES), *FEATURE)
    front = target[FRONT, car]
    assert front[:, FEATURE[1] // 2].sum() >= 1  # the middle column (the optical axis) is covered
    assert target[BACK].sum() == 0 and target[:, [k for k in range(len(CLASS_NAMES)) if k != car]].sum() == 0
    # a 1.9 m wide car at 9 m (140 px focal) spans ~30 px: two or three 16-px columns, not the whole image
    assert 1 <= int(front.any(0).sum()) <= 3


def test_nearest_box_wins_where_boxes_overlap_and_small_boxes_mark_their_centre() -> None:
    car, truck, cone = (CLASS_NAMES.index(c) for c in ('car', 'truck', 'traffic_cone'))
    # a car in front of a larger truck on the same line of sight
    target = targets_of([[6.0, 0.13, 0.0, 4.0, 1.9, 1.6, 0.0], [25.0, 0.13, 0.0, 8.0, 2.5, 3.0, 0.0]],
                        [car, truck])
    col = FEATURE[1] // 2
    row = int(target[FRONT, car, :, col].nonzero()[0])
    assert target[FRONT, car, row, col] == 1 and target[FRONT, truck, row, col] == 0
    assert target[FRONT].sum(0).max() == 1  # one class per pixel
    # a traffic cone 40 m ahead projects to ~1.5 px: it still marks one pixel
    far = targets_of([[41.0, 0.13, -0.5, 0.4, 0.4, 1.0, 0.0]], [cone])
    assert int(far[FRONT, cone].sum()) == 1


def test_boxes_behind_every_camera_and_augmentation() -> None:
    # BEV augmentation rotating the scene by 180 degrees brings a box from behind to the front camera
    car = CLASS_NAMES.index('car')
    rot = torch.eye(4)
    rot[0, 0] = rot[1, 1] = math.cos(math.pi)
    rot[0, 1], rot[1, 0] = -math.sin(math.pi), math.sin(math.pi)
    meta = rig_metainfo(bev_aug=rot.numpy())
    # the box is given in the augmented frame (as the pipeline does): -10 m is behind the ego after rotation
    plain = targets_of([[10.0, 0.13, 0.0, 4.5, 1.9, 1.6, 0.0]], [car])
    rotated = targets_of([[-10.0, -0.13, 0.0, 4.5, 1.9, 1.6, 0.0]], [car], meta)
    torch.testing.assert_close(plain, rotated)


def test_focal_loss_prefers_the_right_logits() -> None:
    target = torch.zeros(2, 3, 4, 4)
    target[0, 1, 2, 2] = 1
    good = torch.full_like(target, -6.0).masked_fill(target.bool(), 6.0)
    assert sigmoid_focal_loss(good, target) < 0.01 < sigmoid_focal_loss(-good, target)
    head = PerspectiveObjectnessHead(8, 3)
    assert torch.sigmoid(head.layers[-1].bias).tolist() == pytest.approx([0.1] * 3, abs=1e-6)


def test_bevdet_loss_includes_the_perspective_term_and_it_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    model = build(dict(model_cfg(), perspective_loss_weight=1.0))
    model.init_weights()
    model.train()
    data = model.data_preprocessor(synthetic_batch(batch_size=1), training=True)
    losses = model(**data, mode='loss')
    assert 'loss_perspective' in losses and torch.isfinite(losses['loss_perspective'])
    losses['loss_perspective'].backward()
    grad = dict(model.named_parameters())['img_backbone.patch_embed.projection.weight'].grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(ValueError, match='perspective_loss_weight must be >= 0'):
        build(dict(model_cfg(), perspective_loss_weight=-1.0))
