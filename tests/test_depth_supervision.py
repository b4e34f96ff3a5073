"""LiDAR depth supervision (BEVDepth-style): BEVDetDepthTarget's per-feature-pixel targets (the loss is
tested in test_bevdet_model.py)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch

from projects.sparsevit_bevdet.datasets.transforms import BEVDetDepthTarget

# camera at the ego origin looking along ego +x: x_cam = -y_ego, y_cam = -z_ego, z_cam = x_ego
CAM2EGO = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float32)
CAM2IMG = np.array([[100, 0, 56, 0], [0, 100, 32, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)


def _results(points_ego: np.ndarray, img_aug: Optional[np.ndarray] = None) -> dict:
    from mmdet3d.structures import LiDARPoints

    img_aug = np.eye(4, dtype=np.float32) if img_aug is None else img_aug

    # the LiDAR sits 1 m above the ego origin: lidar2ego adds it back
    lidar2ego = np.eye(4)
    lidar2ego[2, 3] = 1.0
    pts_lidar = points_ego - np.array([0.0, 0.0, 1.0])
    return {'points': LiDARPoints(torch.as_tensor(pts_lidar, dtype=torch.float32), points_dim=3),
            'lidar_points': {'lidar2ego': lidar2ego.tolist()}, 'img_shape': (64, 112),
            'img_aug_matrix': img_aug[None], 'cam2img': CAM2IMG[None], 'cam2ego': CAM2EGO[None]}


def test_depth_target_is_the_median_depth_per_feature_pixel() -> None:
    # (10, 0, 0) -> pixel (56, 32) -> cell (row 2, col 3); (20, 0, 0) and (30, 0, 0) land in the same cell
    # (10, 1, 0) -> u = 56 - 10 = 46 -> col 2; a point behind the camera and one beyond 60 m are ignored
    pts = np.array([[20.0, 0.0, 0.0], [10.0, 0.0, 0.0], [30.0, 0.0, 0.0], [10.0, 1.0, 0.0], [-5.0, 0.0, 0.0],
                    [80.0, 0.0, 0.0]])
    out = BEVDetDepthTarget(downsample=16, depth_range=(1.0, 60.0))(_results(pts))
    depth = out['gt_depth']
    assert depth.shape == (1, 4, 7) and depth.dtype == np.float32
    assert depth[0, 2, 3] == pytest.approx(20.0)
    assert depth[0, 2, 2] == pytest.approx(10.0)
    assert np.count_nonzero(depth) == 2
    # an even count takes the mean of the two middle depths
    even = BEVDetDepthTarget()(_results(pts[:2]))['gt_depth']
    assert even[0, 2, 3] == pytest.approx(15.0)


def test_depth_target_follows_the_image_augmentation() -> None:
    flip = np.array([[-1, 0, 0, 111], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)  # u' = 111 - u
    out = BEVDetDepthTarget(downsample=16)(_results(np.array([[10.0, 1.0, 0.0]]), flip))
    # u = 46 -> u' = 65 -> col 4
    assert out['gt_depth'][0, 2, 4] == pytest.approx(10.0)


def test_depth_target_errors() -> None:
    with pytest.raises(ValueError, match='depth_range'):
        BEVDetDepthTarget(depth_range=(5.0, 1.0))
    with pytest.raises(KeyError, match='LoadPointsFromFile'):
        BEVDetDepthTarget()({'img_aug_matrix': np.eye(4)[None], 'lidar_points': {}})
    results = _results(np.array([[10.0, 0.0, 0.0]]))
    results['bev_aug_matrix'] = np.eye(4)
    with pytest.raises(RuntimeError, match='before BEVDetBEVAug'):
        BEVDetDepthTarget()(results)

