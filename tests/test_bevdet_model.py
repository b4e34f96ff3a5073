"""BEVDet detector: LSS geometry and axes (against mmdet3d's CenterHead targets), loss, predict, overfitting.

Tiny configuration throughout: SparseViT (embed_dims 24) on 6 images of 64x176, a 64x64 BEV grid of
0.8 m cells over +-25.6 m, 15 depth bins (1..29 m, step 2).
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import projects.sparsevit_bevdet  # noqa: F401  (registers the modules)
from projects.sparsevit_bevdet.evaluation import EgoFrameNuScenesMetric
from projects.sparsevit_bevdet.models import BEVDet, LSSViewTransformer
from projects.sparsevit_bevdet.models.view_transformer import GROUND_SCALE, RAY_CHANNELS

IMG_H, IMG_W = 64, 176
NUM_CAMS = 6
FOCAL = 140.0  # nuScenes' ~1266 px focal length scaled to a 176-pixel-wide image
CX, CY = (IMG_W - 1) / 2, (IMG_H - 1) / 2
GRID = dict(x=[-25.6, 25.6, 0.8], y=[-25.6, 25.6, 0.8], z=[-5.0, 3.0, 8.0], depth=[1.0, 30.0, 2.0])
PC_RANGE = [-25.6, -25.6, -5.0, 25.6, 25.6, 3.0]
VOXEL = [0.1, 0.1, 0.2]
OUT_SIZE_FACTOR = 8  # 0.1 m * 8 = 0.8 m = the view transformer's cell, as in BEVDet
TASKS = [dict(num_class=1, class_names=['car']),
         dict(num_class=2, class_names=['truck', 'construction_vehicle']),
         dict(num_class=2, class_names=['bus', 'trailer']),
         dict(num_class=1, class_names=['barrier']),
         dict(num_class=2, class_names=['motorcycle', 'bicycle']),
         dict(num_class=2, class_names=['pedestrian', 'traffic_cone'])]
# CenterHead's label order is the task order flattened (as BEVDet's class_names)
CLASS_NAMES = [name for task in TASKS for name in task['class_names']]
# camera yaws of the nuScenes rig (front, front right, front left, back, back left, back right)
RIG_YAWS = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)


def model_cfg(score_threshold: float = 0.1) -> dict:
    return dict(
        type='BEVDet',
        data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        img_backbone=dict(type='SparseViT', embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 4),
                          out_indices=(2, 3), drop_path_rate=0.0),
        img_neck=dict(type='BEVDetImageNeck', in_channels=(96, 192), out_channels=32),
        img_view_transformer=dict(type='LSSViewTransformer', grid_config=GRID, input_size=(IMG_H, IMG_W),
                                  downsample=16, in_channels=32, out_channels=16),
        img_bev_encoder_backbone=dict(type='BEVResNet', in_channels=16, num_channels=(32, 64, 128)),
        img_bev_encoder_neck=dict(type='BEVFPNLSS', in_channels=128 + 32, out_channels=64),
        pts_bbox_head=dict(
            type='CenterHead', in_channels=64, tasks=TASKS,
            common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
            share_conv_channel=32,
            bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=PC_RANGE[:2],
                            post_center_range=[-35.6, -35.6, -10.0, 35.6, 35.6, 10.0], max_num=100,
                            score_threshold=score_threshold, out_size_factor=OUT_SIZE_FACTOR,
                            voxel_size=VOXEL[:2], code_size=9),
            separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
            loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
            loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
            norm_bbox=True),
        train_cfg=dict(pts=dict(point_cloud_range=PC_RANGE, grid_size=[512, 512, 40], voxel_size=VOXEL,
                                out_size_factor=OUT_SIZE_FACTOR, dense_reg=1, gaussian_overlap=0.1, max_objs=500,
                                min_radius=2, code_weights=[1.0] * 8 + [0.2, 0.2])),
        test_cfg=dict(pts=dict(pc_range=PC_RANGE[:2], post_center_limit_range=[-35.6, -35.6, -10.0, 35.6, 35.6, 10.0],
                               max_per_img=500, max_pool_nms=False, min_radius=[4, 12, 10, 1, 0.85, 0.175],
                               score_threshold=score_threshold, out_size_factor=OUT_SIZE_FACTOR,
                               voxel_size=VOXEL[:2], nms_type='rotate', pre_max_size=1000, post_max_size=83,
                               nms_thr=0.2)))


def build(cfg: dict) -> BEVDet:
    with DefaultScope.overwrite_default_scope('mmdet3d'):  # as a config's default_scope does in the runner
        return MODELS.build(cfg)


def build_model(seed: int = 0, **kwargs) -> BEVDet:
    torch.manual_seed(seed)
    model = build(model_cfg(**kwargs))
    model.init_weights()  # as the runner does: CenterHead's heatmap bias -2.19
    return model


# -- camera rig helpers (written independently of the model's geometry code) ---------------------


def camera_to_ego(yaw_deg: float, translation: Tuple[float, float, float]) -> np.ndarray:
    """4x4 camera -> ego of a level camera looking along ego yaw ``yaw_deg`` (camera x right, y down, z ahead)."""
    a = math.radians(yaw_deg)
    ahead = np.array([math.cos(a), math.sin(a), 0.0])
    right = np.array([math.sin(a), -math.cos(a), 0.0])  # ahead rotated by -90 degrees about ego z (up)
    down = np.array([0.0, 0.0, -1.0])
    mat = np.eye(4)
    mat[:3, :3] = np.stack([right, down, ahead], axis=1)  # columns: camera axes in the ego frame
    mat[:3, 3] = translation
    return mat


def intrinsics(cx: float = CX, cy: float = CY, focal: float = FOCAL) -> np.ndarray:
    return np.array([[focal, 0, cx, 0], [0, focal, cy, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)


def rig_metainfo(bev_aug: np.ndarray = None, img_aug: np.ndarray = None) -> dict:
    cam2ego = np.stack([camera_to_ego(y, (1.0, 0.13, 1.6)) for y in RIG_YAWS])  # off the cell edges
    meta = dict(cam2img=np.stack([intrinsics()] * NUM_CAMS), cam2ego=cam2ego,
                img_aug_matrix=np.stack([np.eye(4) if img_aug is None else img_aug] * NUM_CAMS),
                box_type_3d=LiDARInstance3DBoxes, sample_idx=0)
    if bev_aug is not None:
        meta['bev_aug_matrix'] = bev_aug
    return {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in meta.items()}


def matrices(metas: List[dict]) -> Dict[str, torch.Tensor]:
    out = {k: torch.as_tensor(np.stack([m[k] for m in metas])) for k in ('cam2img', 'cam2ego', 'img_aug_matrix')}
    out['bev_aug_matrix'] = torch.as_tensor(np.stack([m.get('bev_aug_matrix', np.eye(4, dtype=np.float32))
                                                      for m in metas]))
    return out


def gt_boxes() -> Tuple[LiDARInstance3DBoxes, torch.Tensor]:
    """Three boxes (x, y, z bottom, l, w, h, yaw, vx, vy) in the ego frame: car, pedestrian, truck."""
    boxes = torch.tensor([[10.0, 5.0, -1.0, 4.5, 1.9, 1.6, 0.3, 2.0, 0.5],
                          [-6.0, -8.0, -1.0, 0.7, 0.7, 1.8, 1.2, 0.0, 1.0],
                          [14.0, -12.0, -1.0, 8.0, 2.5, 3.0, -0.5, 0.0, 0.0]])
    labels = torch.tensor([CLASS_NAMES.index('car'), CLASS_NAMES.index('pedestrian'), CLASS_NAMES.index('truck')])
    return LiDARInstance3DBoxes(boxes, box_dim=9), labels


def synthetic_batch(batch_size: int = 1, seed: int = 0) -> dict:
    """What the dataloader gives after pseudo_collate: per-sample (N, 3, H, W) images and data samples."""
    gen = torch.Generator().manual_seed(seed)
    imgs, samples = [], []
    for _ in range(batch_size):
        imgs.append(torch.rand(NUM_CAMS, 3, IMG_H, IMG_W, generator=gen) * 255)
        sample = Det3DDataSample(metainfo=rig_metainfo())
        boxes, labels = gt_boxes()
        sample.gt_instances_3d = InstanceData(bboxes_3d=boxes, labels_3d=labels)
        samples.append(sample)
    return dict(inputs=dict(img=imgs), data_samples=samples)


@pytest.fixture(scope='module')
def model() -> BEVDet:
    return build_model()


@pytest.fixture(scope='module')
def view_transformer(model: BEVDet) -> LSSViewTransformer:
    return model.img_view_transformer


# -- geometry -------------------------------------------------------------------------------------


def test_frustum_on_optical_axis_maps_to_depth_ahead(view_transformer: LSSViewTransformer) -> None:
    # principal point at the centre of feature pixel (row 1, column 5): u = 5.5 * 16 - 0.5, v = 1.5 * 16 - 0.5
    cam2img = intrinsics(cx=87.5, cy=23.5)
    offset = (1.2, -0.3, 1.5)
    cam2ego = camera_to_ego(0.0, offset)
    mats = [torch.as_tensor(m, dtype=torch.float32)[None, None] for m in (cam2img, cam2ego, np.eye(4))]
    pts = view_transformer.frustum_points_ego(*mats, torch.eye(4)[None])
    assert pts.shape == (1, 1, 15, 4, 11, 3)
    depths = torch.arange(1.0, 30.0, 2.0)
    expected = torch.stack([depths + offset[0], torch.full_like(depths, offset[1]),
                            torch.full_like(depths, offset[2])], dim=1)
    torch.testing.assert_close(pts[0, 0, :, 1, 5], expected, atol=1e-4, rtol=0)
    # a pixel right of the principal point lies to the right (ego -y), one below it lies lower (ego -z)
    assert (pts[0, 0, :, 1, 6, 1] < offset[1]).all() and (pts[0, 0, :, 2, 5, 2] < offset[2]).all()


def test_ray_encoding_gives_ray_direction_and_inverse_ground_distance(view_transformer: LSSViewTransformer) -> None:
    # level front camera 1.5 m above the ground, principal point at the centre of feature pixel (1, 5)
    cam2img = intrinsics(cx=87.5, cy=23.5)
    mats = [torch.as_tensor(m, dtype=torch.float32)[None, None]
            for m in (cam2img, camera_to_ego(0.0, (1.2, -0.3, 1.5)), np.eye(4))]
    rays = view_transformer.ray_encoding(*mats, torch.eye(4)[None])
    assert rays.shape == (1, RAY_CHANNELS, 4, 11)
    # on the optical axis: straight ahead, never meets the ground
    torch.testing.assert_close(rays[0, :, 1, 5], torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    # one feature row (16 px) below: dz = -16 / focal per metre of depth; meets z = 0 at depth 1.5 / |dz|
    dz = -16.0 / FOCAL
    torch.testing.assert_close(rays[0, :, 2, 5], torch.tensor([1.0, 0.0, dz, GROUND_SCALE * -dz / 1.5]),
                               atol=1e-5, rtol=0)
    # the frustum point at that depth is on the ground
    pts = view_transformer.frustum_points_ego(*mats, torch.eye(4)[None])
    ground_depth = GROUND_SCALE / float(rays[0, 3, 2, 5])
    slope = (pts[0, 0, 1, 2, 5, 2] - pts[0, 0, 0, 2, 5, 2]) / 2.0
    assert float(pts[0, 0, 0, 2, 5, 2] + slope * (ground_depth - 1.0)) == pytest.approx(0.0, abs=1e-4)


def test_camera_aware_depth_net_depends_on_the_rig() -> None:
    torch.manual_seed(0)
    vt = LSSViewTransformer(GRID, input_size=(IMG_H, IMG_W), downsample=16, in_channels=8, out_channels=4,
                            camera_aware=True, depth_net_channels=16).eval()
    feats = torch.randn(1, NUM_CAMS, 8, *vt.feature_size)
    level = matrices([rig_metainfo()])
    tilted = dict(level)
    tilted['cam2ego'] = level['cam2ego'].clone()
    tilted['cam2ego'][..., 2, 3] += 1.0  # cameras 1 m higher: every ray meets the ground further away
    _, depth_level = vt(feats, *level.values())
    _, depth_high = vt(feats, *tilted.values())
    assert not torch.allclose(depth_level, depth_high)
    with pytest.raises(ValueError, match='depth_net_channels only applies'):
        LSSViewTransformer(GRID, input_size=(IMG_H, IMG_W), in_channels=8, depth_net_channels=16)


def test_image_augmentation_is_undone(view_transformer: LSSViewTransformer) -> None:
    meta = rig_metainfo()
    flip = np.array([[-1, 0, 0, IMG_W - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    flipped = rig_metainfo(img_aug=flip)
    plain = view_transformer.frustum_points_ego(*matrices([meta]).values())
    aug = view_transformer.frustum_points_ego(*matrices([flipped]).values())
    # augmented column j shows what original column fW - 1 - j showed
    torch.testing.assert_close(aug, plain.flip(-2), atol=1e-4, rtol=0)

    # a general augmentation (resize 0.5 of a 128x352 image, crop, flip, rotate 5 degrees) is the same
    # camera as un-augmented images with the 3x3 intrinsics A @ K, A the 3x3 affine pixel map of img_aug
    a = math.radians(5.0)
    rotate = np.array([[math.cos(a), math.sin(a), 0, 0], [-math.sin(a), math.cos(a), 0, 0], [0, 0, 1, 0],
                       [0, 0, 0, 1]])
    resize_crop = np.array([[0.5, 0, 0, -0.25 - 3.0], [0, 0.5, 0, -0.25 + 2.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    img_aug = (rotate @ flip @ resize_crop).astype(np.float32)
    original = rig_metainfo(img_aug=img_aug)
    original['cam2img'] = np.stack([intrinsics(cx=175.5, cy=63.5, focal=2 * FOCAL)] * NUM_CAMS).astype(np.float32)
    affine = img_aug[[0, 1, 3]][:, [0, 1, 3]].astype(np.float64)
    k_equivalent = affine @ intrinsics(cx=175.5, cy=63.5, focal=2 * FOCAL)[:3, :3]
    equivalent = dict(original, img_aug_matrix=np.stack([np.eye(4, dtype=np.float32)] * NUM_CAMS),
                      cam2img=np.stack([k_equivalent.astype(np.float32)] * NUM_CAMS))  # 3x3 accepted too
    torch.testing.assert_close(view_transformer.frustum_points_ego(*matrices([original]).values()),
                               view_transformer.frustum_points_ego(*matrices([equivalent]).values()),
                               atol=1e-3, rtol=1e-5)


def test_single_feature_lands_in_centerhead_target_cell(model: BEVDet) -> None:
    vt = model.img_view_transformer
    cam, row, col, depth_bin = 2, 1, 8, 10  # front-left camera, feature pixel (1, 8), depth 1 + 2 * 10 = 21 m
    meta = rig_metainfo()
    # the 3D point of that frustum sample, by the pinhole model (independent of the model's code)
    u, v, d = (col + 0.5) * 16 - 0.5, (row + 0.5) * 16 - 0.5, 1.0 + 2.0 * depth_bin
    cam_point = np.array([(u - CX) * d / FOCAL, (v - CY) * d / FOCAL, d, 1.0])
    ego = meta['cam2ego'][cam].astype(np.float64) @ cam_point
    assert abs(ego[0] - ego[1]) > 2.0, 'x and y must differ so that a transposed map fails'

    context = torch.zeros(1, NUM_CAMS, vt.out_channels, *vt.feature_size)
    context[0, cam, 3, row, col] = 5.0  # one bright channel at one pixel
    depth = torch.zeros(1, NUM_CAMS, vt.num_depth, *vt.feature_size)
    depth[0, cam, depth_bin, row, col] = 1.0
    geometry = vt.bev_geometry(*matrices([meta]).values())
    bev = vt.splat(context, depth, geometry)
    assert bev.shape == (1, 16, 64, 64)
    nonzero = bev[0, 3].nonzero().tolist()
    assert len(nonzero) == 1 and bev.abs().sum() == pytest.approx(5.0)

    # the cell CenterHead trains a box centred at that point on: heatmap peak (row, col) and flat index
    box = LiDARInstance3DBoxes(torch.tensor([[ego[0], ego[1], ego[2] - 0.8, 4.0, 2.0, 1.6, 0.0, 0.0, 0.0]],
                                            dtype=torch.float32), box_dim=9)
    heatmaps, _, inds, masks = model.pts_bbox_head.get_targets_single(
        InstanceData(bboxes_3d=box, labels_3d=torch.tensor([0])))
    heat = heatmaps[0][0]
    assert heat.shape == bev.shape[-2:]
    peak = (heat == heat.max()).nonzero().tolist()
    assert peak == nonzero
    assert masks[0][0] == 1 and inds[0][0] == nonzero[0][0] * heat.shape[1] + nonzero[0][1]
    # and the ego x / y conventions themselves: column from x, row from y
    assert nonzero[0] == [math.floor((ego[1] + 25.6) / 0.8), math.floor((ego[0] + 25.6) / 0.8)]


def test_bev_augmentation_rotates_pooled_map(view_transformer: LSSViewTransformer) -> None:
    torch.manual_seed(1)
    feats = torch.randn(1, NUM_CAMS, view_transformer.in_channels, *view_transformer.feature_size)
    rot90 = np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)  # +90 deg about z
    with torch.no_grad():
        bev, _ = view_transformer(feats, *matrices([rig_metainfo()]).values())
        bev_rot, _ = view_transformer(feats, *matrices([rig_metainfo(bev_aug=rot90)]).values())
    assert bev.abs().sum() > 0
    # (x, y) -> (-y, x): cell (row iy, col ix) moves to (row ix, col 63 - iy), i.e. a clockwise rot90 of
    # the (row, col) array
    expected = torch.rot90(bev, k=-1, dims=(-2, -1))
    torch.testing.assert_close(bev_rot, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(bev_rot, bev, atol=1e-3)


def test_geometry_cache_reused_only_for_equal_matrices(view_transformer: LSSViewTransformer) -> None:
    mats = matrices([rig_metainfo(), rig_metainfo()])
    first = view_transformer.bev_geometry(*mats.values())
    assert view_transformer.bev_geometry(*(m.clone() for m in mats.values())) is first
    moved = dict(mats)
    moved['cam2ego'] = mats['cam2ego'].clone()
    moved['cam2ego'][1, 0, 0, 3] += 3.0
    second = view_transformer.bev_geometry(*moved.values())
    assert second is not first and not torch.equal(second.ranks, first.ranks)
    # batch item 1's points sit in the second half of the flat output
    assert (first.ranks[first.point_index >= first.point_index.max() // 2 + 1] >= 64 * 64).any()


# -- detector -------------------------------------------------------------------------------------


def test_loss_is_finite_and_reaches_backbone() -> None:
    model = build_model()
    model.train()
    data = model.data_preprocessor(synthetic_batch(batch_size=2), training=True)
    assert data['inputs']['imgs'].shape == (2, NUM_CAMS, 3, IMG_H, IMG_W)
    losses = model(**data, mode='loss')
    assert set(losses) == {f'task{i}.loss_{k}' for i in range(len(TASKS)) for k in ('heatmap', 'bbox')}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in ('img_backbone.patch_embed.projection.weight', 'img_view_transformer.depth_net.weight',
                 'img_neck.convs.0.conv.weight', 'img_bev_encoder_backbone.stages.0.0.conv1.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_predict_returns_ego_frame_samples_the_metric_consumes(model: BEVDet) -> None:
    low = build_model(score_threshold=0.01)  # untrained: a low threshold so that boxes come out
    low.eval()
    data = low.data_preprocessor(synthetic_batch(batch_size=2), training=False)
    with torch.no_grad():
        results = low(**data, mode='predict')
        raw = low(**data, mode='tensor')
    assert len(results) == 2
    for sample in results:
        pred = sample.pred_instances_3d
        assert isinstance(pred.bboxes_3d, LiDARInstance3DBoxes) and pred.bboxes_3d.tensor.shape[1] == 9
        k = len(pred.scores_3d)
        assert k > 0 and pred.bboxes_3d.tensor.shape[0] == k and pred.labels_3d.shape == (k,)
        assert pred.labels_3d.dtype == torch.long and 0 <= pred.labels_3d.min() <= pred.labels_3d.max() < 10
        assert torch.isfinite(pred.bboxes_3d.tensor).all() and ((pred.scores_3d >= 0.01) & (pred.scores_3d <= 1)).all()
        assert (pred.bboxes_3d.gravity_center[:, :2].abs() <= 35.6).all()
    metric = EgoFrameNuScenesMetric(data_root='unused', ann_file='unused.pkl')  # process() reads no files
    metric.process({}, results)
    assert metric.results[0]['boxes'].shape[1] == 9
    assert len(raw) == len(TASKS) and raw[0][0]['heatmap'].shape == (2, 1, 64, 64)


def test_overfit_one_sample_halves_the_loss() -> None:
    model = build_model(seed=0)
    model.train()
    data = model.data_preprocessor(synthetic_batch(batch_size=1), training=True)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    history, box_history = [], []
    for _ in range(10):
        losses = model(**copy.copy(data), mode='loss')
        total = sum(losses.values())
        optim.zero_grad()
        total.backward()
        optim.step()
        history.append(total.item())
        box_history.append(sum(v.item() for k, v in losses.items() if k.endswith('loss_bbox')))
    assert all(math.isfinite(x) for x in history)
    assert history[-1] < 0.5 * history[0], history
    # not only the empty heatmap cells: the box regression at the three ground-truth centres improves too
    assert box_history[-1] < 0.6 * box_history[0], box_history


def test_pruning_ratios_reach_the_image_encoder(model: BEVDet) -> None:
    model.image_encoder.set_pruning_ratios(0.5)
    try:
        assert model.image_encoder is model.img_backbone
        assert all(r == 0.5 for stage in model.image_encoder.pruning_ratios for r in stage)
        model.eval()
        data = model.data_preprocessor(synthetic_batch(), training=False)
        with torch.no_grad():
            feats = model.extract_feat(data['inputs'], data['data_samples'])
        assert feats[0].shape == (1, 64, 64, 64) and torch.isfinite(feats[0]).all()
    finally:
        model.image_encoder.set_pruning_ratios(0.0)


# -- errors ---------------------------------------------------------------------------------------


def test_missing_metainfo_key_names_key_and_sample(model: BEVDet) -> None:
    data = model.data_preprocessor(synthetic_batch(batch_size=2), training=False)
    meta = dict(data['data_samples'][1].metainfo)
    meta.pop('img_aug_matrix')
    meta['sample_idx'] = 7
    data['data_samples'][1] = Det3DDataSample(metainfo=meta)
    with pytest.raises(KeyError, match=r"img_aug_matrix.*data_samples\[1\] \(sample_idx 7\)"):
        model.extract_feat(data['inputs'], data['data_samples'])


def test_init_sets_heatmap_prior(model: BEVDet) -> None:
    # mmdet3d's CenterHead keeps its task heads in an nn.ModuleList that mmengine's init skips
    for head in model.pts_bbox_head.task_heads:
        torch.testing.assert_close(head.heatmap[-1].bias.detach(), torch.full_like(head.heatmap[-1].bias, -2.19))


def test_class_order_mismatch_is_rejected() -> None:
    cfg = model_cfg()
    build(dict(cfg, class_names=CLASS_NAMES))
    nuscenes_order = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
                      'traffic_cone', 'barrier']
    with pytest.raises(ValueError, match='label order'):
        build(dict(cfg, class_names=nuscenes_order))


def test_head_grid_mismatch_is_rejected() -> None:
    cfg = model_cfg()
    cfg['pts_bbox_head']['bbox_coder']['pc_range'] = [-51.2, -51.2]
    with pytest.raises(ValueError, match='pc_range'):
        build(cfg)
    cfg = model_cfg()
    cfg['train_cfg']['pts']['grid_size'] = [1024, 1024, 40]
    with pytest.raises(ValueError, match='grid_size'):
        build(cfg)


# -- depth supervision ---------------------------------------------------------------------------

def test_depth_loss_rewards_the_right_bin(model: BEVDet) -> None:
    vt = model.img_view_transformer
    fh, fw = vt.feature_size
    d = vt.num_depth
    gt = np.zeros((1, fh, fw), np.float32)
    gt[0, 0, 0] = vt.grid_config['depth'][0] + 2 * vt.grid_config['depth'][2]  # bin 2
    sample = Det3DDataSample(metainfo=dict(gt_depth=gt))
    right = torch.zeros(1, 1, d, fh, fw)
    right[:, :, 2] = 1.0
    wrong = torch.zeros(1, 1, d, fh, fw)
    wrong[:, :, 3] = 1.0
    uniform = torch.full((1, 1, d, fh, fw), 1.0 / d)
    losses = [float(model.depth_loss(x, [sample])) for x in (right, uniform, wrong)]
    assert losses[0] < 1e-3 < losses[1] < losses[2]
    with pytest.raises(KeyError, match='BEVDetDepthTarget'):
        model.depth_loss(right, [Det3DDataSample()])
