"""The auxiliary perspective-view loss: targets projected from the 3D boxes, and its place in BEVDet.loss."""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

from projects.sparsevit_bevdet.models.perspective_aux import (
    HEADING_BINS,
    PerspectiveObjectnessHead,
    covering_box_index,
    perspective_attribute_targets,
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


def attributes_of(rows: list, meta: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Heading bins and moving targets of (x, y, z, l, w, h, yaw, vx, vy) rows, first sample."""
    mats = matrices([meta or rig_metainfo()])
    box = LiDARInstance3DBoxes(torch.tensor(rows, dtype=torch.float32), box_dim=9)
    index = covering_box_index([box.corners], mats, FEATURE, STRIDE)
    heading, moving = perspective_attribute_targets([box.tensor], index, mats)
    return heading[0], moving[0]


def covered_value(target: torch.Tensor, cam: int) -> float:
    values = target[cam][target[cam] >= 0].unique()
    assert len(values) == 1, values
    return values.item()


def test_heading_targets_are_the_side_the_camera_sees() -> None:
    """The bin is the box's heading relative to the ray, so the same appearance gives the same bin anywhere."""
    ahead = [10.0, 0.13, 0.0, 4.5, 1.9, 1.6]
    away, toward = attributes_of([[*ahead, 0.0, 5.0, 0.0]]), attributes_of([[*ahead, math.pi, 0.0, 0.0]])
    # driving away shows the back (alpha = 0: bin 0), driving toward shows the front (alpha = pi: half a turn)
    assert covered_value(away[0], FRONT) == 0 and covered_value(toward[0], FRONT) == HEADING_BINS // 2
    assert covered_value(away[1], FRONT) == 1.0 and covered_value(toward[1], FRONT) == 0.0  # 5 m/s vs parked
    # behind the ego, a box heading -x also drives away from the back camera: the same bin
    behind = attributes_of([[-10.0, 0.0, 0.0, 4.5, 1.9, 1.6, math.pi, 0.0, 0.0]])
    assert covered_value(behind[0], BACK) == 0
    # crossing left to right in front (heading -y, alpha = -pi/2) vs right to left: bins a half turn apart
    left_to_right = covered_value(attributes_of([[*ahead, -math.pi / 2, 0.0, 0.0]])[0], FRONT)
    right_to_left = covered_value(attributes_of([[*ahead, math.pi / 2, 0.0, 0.0]])[0], FRONT)
    assert left_to_right == 3 * HEADING_BINS // 4 and right_to_left == HEADING_BINS // 4
    # a mirrored image shows the mirrored side: the lateral direction swaps, front / back stays
    mirror = torch.eye(4)
    mirror[0, 0], mirror[0, 3] = -1.0, IMG_W - 1.0
    flipped = rig_metainfo(img_aug=mirror.numpy())
    assert covered_value(attributes_of([[*ahead, -math.pi / 2, 0.0, 0.0]], flipped)[0], FRONT) == right_to_left
    assert covered_value(attributes_of([[*ahead, math.pi, 0.0, 0.0]], flipped)[0], FRONT) == HEADING_BINS // 2
    # unknown velocity (nuScenes gives NaN for some boxes) is ignored, not called static
    unknown = attributes_of([[*ahead, 0.0, float('nan'), float('nan')]])[1]
    assert (unknown == -1).all()


def test_bevdet_attribute_loss_trains_the_attribute_outputs() -> None:
    torch.manual_seed(0)
    model = build(dict(model_cfg(), perspective_loss_weight=1.0, perspective_attribute_weight=1.0))
    model.init_weights()
    model.train()
    head = model.perspective_head
    assert head.num_attributes == HEADING_BINS + 1 and head.layers[-1].out_channels == len(CLASS_NAMES) + 9
    data = model.data_preprocessor(synthetic_batch(batch_size=1), training=True)
    with_attributes = model(**data, mode='loss')['loss_perspective']
    with_attributes.backward()
    grad = head.layers[-1].weight.grad
    assert grad[len(CLASS_NAMES):].abs().sum() > 0  # the heading and moving logits get gradient
    model.perspective_attribute_weight = 0.0
    classes_only = model(**data, mode='loss')['loss_perspective']
    assert with_attributes > classes_only > 0  # 8-way cross-entropy near log(8) at the start adds to the loss
    with pytest.raises(ValueError, match='needs the perspective head'):
        build(dict(model_cfg(), perspective_attribute_weight=1.0))
