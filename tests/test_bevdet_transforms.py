"""BEVDet data pipeline: BEVDetImageAug (image-view augmentation + camera matrices), BEVDetBEVAug (BDA), the
base config fragment and packing, on the small synthetic nuScenes of ``conftest.synthetic_nuscenes``."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
import torch

from projects.sparsevit_bevdet.datasets.transforms import (
    BEVDET_BDA_AUG_CONF,
    BEVDET_DATA_CONFIG,
    BEVDetBEVAug,
    BEVDetImageAug,
    ImageAugParams,
    bev_aug_matrix,
    image_aug_matrix,
    project_ego_points,
)
from projects.sparsevit_bevdet.synthetic.nuscenes import DETECTION_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO_ROOT / 'configs/_base_/datasets/nuscenes_synth_bevdet.py'
# 90x160 synthetic images -> a 64x112 input keeps BEVDet's ratios (fit width 0.7, then 0.64..0.81).
SMALL_DATA_CONFIG = dict(BEVDET_DATA_CONFIG, input_size=(64, 112), src_size=(90, 160))
META_KEYS = ('sample_idx', 'token', 'filename', 'num_views', 'ori_shape', 'img_shape', 'pad_shape', 'cam2img',
             'cam2ego', 'img_aug_matrix', 'bev_aug_matrix', 'ego2global', 'box_type_3d', 'box_mode_3d')


def _adapt(cfg: Any, root: Path) -> Any:
    """The base config pointed at the test's synthetic root and its 90x160 images."""
    data_root = f'{root}/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
        for step in loader.dataset.pipeline:
            if step['type'] == 'BEVDetImageAug':
                step['data_config'] = dict(step['data_config'], input_size=(64, 112), src_size=(90, 160))
    cfg.val_evaluator.data_root = data_root
    cfg.val_evaluator.ann_file = data_root + 'nuscenes_infos_val.pkl'
    return cfg


@pytest.fixture(scope='module')
def cfg(synthetic_nuscenes):
    from mmengine.config import Config

    return _adapt(Config.fromfile(str(BASE_CONFIG)), synthetic_nuscenes.root)


@pytest.fixture(scope='module')
def datasets(cfg):
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope

    import projects.sparsevit_bevdet  # noqa: F401  (registration)

    init_default_scope('mmdet3d')
    return DATASETS.build(cfg.train_dataloader.dataset), DATASETS.build(cfg.val_dataloader.dataset)


def _compose(steps: List[dict]):
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet3d')
    return Compose(steps)


def _identity_results(imgs: List[np.ndarray]) -> dict:
    """Minimal multi-view results for calling BEVDetImageAug directly."""
    cams = [f'CAM_{i}' for i in range(len(imgs))]
    k = [[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]]
    return {'img': imgs, 'images': {c: {'cam2img': k, 'cam2keyego': np.eye(4).tolist()} for c in cams}}


# ----------------------------------------------------------------------------------------------------
# config and packing


def test_config_fragment_is_inheritable_plain_data(tmp_path, cfg):
    from mmdet3d.registry import METRICS
    from mmengine.config import Config

    base = Config.fromfile(str(BASE_CONFIG))
    assert tuple(base.class_names) == DETECTION_CLASSES
    assert base.metainfo == dict(version='v1.0-mini', classes=list(DETECTION_CLASSES))
    assert base.data_root == 'data/nuscenes-synth/' and tuple(base.input_size) == (256, 704)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in base.data_config.items()} == BEVDET_DATA_CONFIG
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in base.bda_aug_conf.items()} == BEVDET_BDA_AUG_CONF
    assert [s['type'] for s in base.train_pipeline] == [
        'LoadMultiViewImageFromFiles', 'BEVDetImageAug', 'LoadAnnotations3D', 'BEVDetBEVAug', 'ObjectRangeFilter',
        'ObjectNameFilter', 'Pack3DDetInputs']
    assert base.train_pipeline[0]['to_float32'] and base.train_pipeline[0]['num_views'] == 6
    for loader, test_mode in ((base.train_dataloader, False), (base.val_dataloader, True)):
        assert loader.dataset.type == 'EgoFrameNuScenesDataset' and loader.dataset.box_frame == 'ego'
        assert loader.dataset.test_mode is test_mode and loader.sampler.type == 'DefaultSampler'
    assert base.val_evaluator == dict(type='EgoFrameNuScenesMetric', box_frame='ego', data_root='data/nuscenes-synth/',
                                      ann_file='data/nuscenes-synth/nuscenes_infos_val.pkl')
    # a model config reuses the top-level variables
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{BASE_CONFIG}']\nsize = {{{{_base_.input_size}}}}\n"
                     'model = dict(grid=_base_.point_cloud_range)\n')
    loaded = Config.fromfile(str(child))
    assert tuple(loaded.size) == (256, 704) and loaded.model.grid == [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
    # the evaluator's arguments match EgoFrameNuScenesMetric's constructor
    metric = METRICS.build(cfg.val_evaluator)
    assert metric.box_frame == 'ego' and metric.ann_file.endswith('nuscenes_infos_val.pkl')


def test_train_pipeline_shapes_and_packed_meta(datasets, synthetic_nuscenes):
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmengine.dataset import pseudo_collate

    train, _ = datasets
    np.random.seed(0)
    items = [train[i] for i in range(3)]
    for item in items:
        img = item['inputs']['img']
        assert isinstance(img, torch.Tensor) and img.shape == (6, 3, 64, 112) and img.dtype == torch.float32
        meta = item['data_samples'].metainfo
        assert set(META_KEYS) <= set(meta), set(META_KEYS) - set(meta)
        for key in ('cam2img', 'cam2ego', 'img_aug_matrix'):
            assert meta[key].shape == (6, 4, 4) and meta[key].dtype == np.float32, key
        assert meta['bev_aug_matrix'].shape == (4, 4) and meta['bev_aug_matrix'].dtype == np.float32
        assert tuple(meta['img_shape']) == (64, 112) and tuple(meta['ori_shape']) == (90, 160)
        assert meta['num_views'] == 6 and len(meta['filename']) == 6 and meta['box_type_3d'] is LiDARInstance3DBoxes
        gt = item['data_samples'].gt_instances_3d
        assert isinstance(gt.bboxes_3d, LiDARInstance3DBoxes) and gt.bboxes_3d.tensor.shape[1] == 9
        assert len(gt.bboxes_3d) == len(gt.labels_3d) > 0
        assert gt.labels_3d.min() >= 0 and gt.labels_3d.max() < 10
        xy = gt.bboxes_3d.tensor[:, :2].abs()
        assert (xy < 51.2).all()  # ObjectRangeFilter after the BEV augmentation
        yaw = gt.bboxes_3d.tensor[:, 6]
        assert ((yaw >= -math.pi) & (yaw <= math.pi)).all()
    batch = pseudo_collate(items)
    assert len(batch['inputs']['img']) == 3 and len(batch['data_samples']) == 3


def test_camera_matrices_come_from_the_key_frame_ego(datasets):
    """cam2ego is camera -> ego of the LiDAR key frame (the GT frame), not the camera-time ego."""
    train, _ = datasets
    info = train.get_data_info(0)
    np.random.seed(1)
    meta = train[0]['data_samples'].metainfo
    key_e2g = np.asarray(info['ego2global'])
    assert np.allclose(np.asarray(meta['ego2global']), key_e2g)
    moved = 0.0
    for i, (cam, ci) in enumerate(info['images'].items()):
        expect = np.linalg.inv(key_e2g) @ np.asarray(ci['ego2global']) @ np.asarray(ci['cam2ego'])
        assert np.allclose(meta['cam2ego'][i], expect, atol=1e-4), cam
        assert np.allclose(meta['cam2ego'][i], np.asarray(ci['cam2keyego']), atol=1e-5)
        assert np.allclose(meta['cam2img'][i][:3, :3], np.asarray(ci['cam2img']))
        assert np.allclose(meta['cam2img'][i][3], [0, 0, 0, 1]) and np.allclose(meta['cam2img'][i][:3, 3], 0)
        moved = max(moved, float(np.abs(meta['cam2ego'][i][:3, 3] - np.asarray(ci['cam2ego'])[:3, 3]).max()))
    assert moved > 1e-3  # the synthetic ego moves between LiDAR and camera timestamps: the keys differ


def test_val_pipeline_is_deterministic_with_identity_bda(datasets):
    _, val = datasets
    a, b = val[0], val[0]
    assert torch.equal(a['inputs']['img'], b['inputs']['img'])
    ma, mb = a['data_samples'].metainfo, b['data_samples'].metainfo
    assert np.array_equal(ma['img_aug_matrix'], mb['img_aug_matrix'])
    assert np.array_equal(ma['bev_aug_matrix'], np.eye(4, dtype=np.float32))
    # fit width (160 -> 112: 0.7, 90 -> 63 rows), bottom crop of 64 rows (one zero row on top), no flip/rotation
    expect = np.eye(4)
    expect[0, 0], expect[1, 1] = 112 / 160, 63 / 90
    expect[0, 3], expect[1, 3] = 0.5 * 112 / 160 - 0.5, 0.5 * 63 / 90 - 0.5 + 1
    assert np.allclose(ma['img_aug_matrix'], expect[None], atol=1e-6)
    assert torch.all(a['inputs']['img'][:, :, 0] == 0)  # the padded top row
    # BEVDetBEVAug in test mode leaves boxes untouched
    from mmdet3d.structures import LiDARInstance3DBoxes

    boxes = LiDARInstance3DBoxes(torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3, 1.0, -2.0]]), box_dim=9)
    res = BEVDetBEVAug(BEVDET_BDA_AUG_CONF, is_train=False)({'gt_bboxes_3d': boxes.clone()})
    assert torch.equal(res['gt_bboxes_3d'].tensor, boxes.tensor)
    assert np.array_equal(res['bev_aug_matrix'], np.eye(4, dtype=np.float32))


# ----------------------------------------------------------------------------------------------------
# image augmentation geometry


def _blob(h: int, w: int, u: float, v: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = 255.0 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma ** 2))
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def _centroid(img: np.ndarray) -> np.ndarray:
    m = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    return np.array([(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()])


@pytest.mark.parametrize('src, data_config, sigma, n', [
    ((90, 160), SMALL_DATA_CONFIG, 1.5, 60),
    ((900, 1600), BEVDET_DATA_CONFIG, 4.0, 8),
])
def test_marked_pixel_lands_at_img_aug_matrix(src, data_config, sigma, n):
    """A blob at (u, v) ends up at img_aug_matrix @ (u, v, d, 1) after the warp, for sampled train-mode
    augmentations including flips and rotations."""
    h, w = src
    aug = BEVDetImageAug(data_config, is_train=True)
    rng = np.random.default_rng(0)
    np.random.seed(0)
    errors, flips, rots = [], set(), []
    while len(errors) < n:
        pts = np.stack([rng.uniform(0.2 * w, 0.8 * w, 6), rng.uniform(0.4 * h, 0.9 * h, 6)], 1)
        res = aug(_identity_results([_blob(h, w, u, v, sigma) for u, v in pts]))
        assert len(res['img']) == 6 and res['img'][0].shape == (*data_config['input_size'], 3)
        for i, (u, v) in enumerate(pts):
            mat = res['img_aug_matrix'][i].astype(np.float64)
            expect = (mat @ np.array([u, v, 7.0, 1.0]))
            assert expect[2] == pytest.approx(7.0)  # depth passes through
            out_h, out_w = res['img'][i].shape[:2]
            margin = 4 * sigma
            if not (margin < expect[0] < out_w - 1 - margin and margin < expect[1] < out_h - 1 - margin):
                continue  # the blob left the crop
            errors.append(float(np.linalg.norm(_centroid(res['img'][i]) - expect[:2])))
            flips.add(bool(mat[0, 0] < 0))
            rots.append(math.degrees(math.atan2(mat[0, 1], abs(mat[0, 0]))))
    assert flips == {False, True}
    assert max(abs(r) for r in rots) > 2.0  # rotations were exercised
    # exact up to resampling (measured < 0.02 px): a flip about fW instead of fW - 1 (1 px) or a wrong
    # rotation sign (several px) fails
    assert max(errors) < 0.25, f'max error {max(errors):.3f} px, mean {np.mean(errors):.3f}'


def _bevdet_reference(params: ImageAugParams, scale_xy: tuple) -> np.ndarray:
    """BEVDet's post_rot/post_tran (PrepareImageInputs.img_transform) as 3x3, pixel-corner coordinates."""
    x0, y0, x1, y1 = params.crop
    post_rot, post_tran = np.diag(scale_xy), -np.array([x0, y0], float)
    if params.flip:
        a, b = np.array([[-1.0, 0.0], [0.0, 1.0]]), np.array([x1 - x0, 0.0])
        post_rot, post_tran = a @ post_rot, a @ post_tran + b
    r = params.rotate / 180 * np.pi
    a = np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
    b = np.array([x1 - x0, y1 - y0]) / 2
    b = a @ -b + b
    post_rot, post_tran = a @ post_rot, a @ post_tran + b
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = post_rot, post_tran
    return out


def test_matrix_follows_bevdet_math():
    """Our matrix is BEVDet's (resize -> crop -> flip -> rotate about the crop centre) in OpenCV pixel-centre
    coordinates with the resize factor actually applied; within 1.5 px of BEVDet's nominal-factor matrix."""
    aug = BEVDetImageAug(BEVDET_DATA_CONFIG, is_train=True)
    np.random.seed(3)
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # pixel centre -> pixel corner coordinates
    corners = np.array([[0, 0, 1], [1599, 0, 1], [0, 899, 1], [1599, 899, 1], [800, 450, 1]], float).T
    for _ in range(50):
        p = aug.sample_augmentation(900, 1600)
        assert p.crop[3] - p.crop[1] == 256 and p.crop[2] - p.crop[0] == 704
        assert p.crop[3] == p.resize_dims[1]  # crop_h=(0, 0): bottom-aligned
        assert 0.38 - 1e-9 <= p.resize <= 0.55 + 1e-9 and -5.4 <= p.rotate <= 5.4
        ours = shift @ image_aug_matrix(p, (900, 1600)) @ np.linalg.inv(shift)
        exact = _bevdet_reference(p, (p.resize_dims[0] / 1600, p.resize_dims[1] / 900))
        assert np.allclose(ours, exact, atol=1e-9)
        nominal = _bevdet_reference(p, (p.resize, p.resize))
        # BEVDet ignores that the resized size is truncated to integers: < 1 px per axis at the far corner
        assert np.linalg.norm(((ours - nominal) @ corners)[:2], axis=0).max() < math.sqrt(2)


def test_projection_consistency_on_synthetic_scenes(datasets):
    """Real pipeline pieces on the synthetic set: ego-frame GT centres projected with the augmented matrices
    land where the augmented image shows what the original image shows at the plain projection."""
    train, _ = datasets
    load = _compose([dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
                     dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True)])
    augment = _compose([dict(type='BEVDetImageAug', data_config=SMALL_DATA_CONFIG, is_train=True),
                        dict(type='BEVDetBEVAug', bda_aug_conf=BEVDET_BDA_AUG_CONF, is_train=True)])
    np.random.seed(5)
    diffs, wrong, flipped = [], [], set()
    for idx in range(6):
        orig = load(copy.deepcopy(train.get_data_info(idx)))
        centres = orig['gt_bboxes_3d'].gravity_center.numpy().astype(np.float64)
        res = augment(copy.deepcopy(orig))
        # BDA: the augmented boxes are the original ones moved by bev_aug_matrix
        bda = res['bev_aug_matrix'].astype(np.float64)
        moved = np.concatenate([centres, np.ones((len(centres), 1))], 1) @ bda.T
        assert np.allclose(res['gt_bboxes_3d'].gravity_center.numpy(), moved[:, :3], atol=1e-3)
        for i in range(6):
            uvd = project_ego_points(centres, res['cam2img'][i], res['cam2ego'][i], np.eye(4))
            uvd_aug = project_ego_points(centres, res['cam2img'][i], res['cam2ego'][i], res['img_aug_matrix'][i])
            flipped.add(bool(res['img_aug_matrix'][i][0, 0] < 0))
            ok = ((uvd[:, 2] > 1.0) & (uvd[:, 0] > 2) & (uvd[:, 0] < 157) & (uvd[:, 1] > 2) & (uvd[:, 1] < 87)
                  & (uvd_aug[:, 0] > 2) & (uvd_aug[:, 0] < 109) & (uvd_aug[:, 1] > 2) & (uvd_aug[:, 1] < 61))
            assert np.allclose(uvd_aug[:, 2], uvd[:, 2], rtol=1e-4)
            for (u, v), (ua, va) in zip(uvd[ok, :2], uvd_aug[ok, :2]):
                src = orig['img'][i][round(v), round(u)]
                diffs.append(np.abs(res['img'][i][round(va), round(ua)] - src).mean())
                # control: the same point without the augmentation's flip/rotation
                wrong.append(np.abs(res['img'][i][round(va), round(111 - ua)] - src).mean())
    assert len(diffs) >= 20 and flipped == {False, True}
    assert np.median(diffs) < 8.0, np.median(diffs)  # about 2.5 (JPEG noise, interpolation, box edges)
    assert np.median(wrong) > 4 * np.median(diffs)


# ----------------------------------------------------------------------------------------------------
# BEV augmentation


def _random_boxes(n: int, seed: int):
    from mmdet3d.structures import LiDARInstance3DBoxes

    rng = np.random.default_rng(seed)
    t = np.concatenate([rng.uniform(-40, 40, (n, 2)), rng.uniform(-1, 1, (n, 1)), rng.uniform(0.5, 8, (n, 3)),
                        rng.uniform(-np.pi, np.pi, (n, 1)), rng.uniform(-10, 10, (n, 2))], 1)
    return LiDARInstance3DBoxes(torch.tensor(t, dtype=torch.float32), box_dim=9)


def _inside(boxes, pts: np.ndarray) -> np.ndarray:
    """(n_box, n_pt) whether points lie in the boxes (tolerance 1e-3)."""
    t = boxes.tensor.double().numpy()
    c, s = np.cos(t[:, 6]), np.sin(t[:, 6])
    d = pts[None, :, :] - t[:, None, :3]
    lx = c[:, None] * d[..., 0] + s[:, None] * d[..., 1]
    ly = -s[:, None] * d[..., 0] + c[:, None] * d[..., 1]
    return ((np.abs(lx) <= t[:, None, 3] / 2 + 1e-3) & (np.abs(ly) <= t[:, None, 4] / 2 + 1e-3)
            & (d[..., 2] >= -1e-3) & (d[..., 2] <= t[:, None, 5] + 1e-3))


@pytest.mark.parametrize('flip_dx', [False, True])
@pytest.mark.parametrize('flip_dy', [False, True])
@pytest.mark.parametrize('rotate, scale', [(0.0, 1.0), (22.5, 0.95), (-17.0, 1.05), (-22.5, 1.0)])
def test_bev_aug_maps_box_points_and_velocity(flip_dx, flip_dy, rotate, scale):
    """Every point of a box moves with bev_aug_matrix onto the augmented box; corners, heading and
    velocity agree; sizes scale. Through BEVDetBEVAug.transform with the parameters pinned."""
    conf = dict(rot_lim=(rotate, rotate), scale_lim=(scale, scale), flip_dx_ratio=float(flip_dx),
                flip_dy_ratio=float(flip_dy))
    from mmdet3d.structures.points import LiDARPoints

    before = _random_boxes(16, seed=abs(int(rotate * 10)) + 2 * flip_dx + flip_dy)
    pts = torch.randn(50, 4) * 20
    res = BEVDetBEVAug(conf, is_train=True)({'gt_bboxes_3d': before.clone(),
                                             'points': LiDARPoints(pts.clone(), points_dim=4)})
    after, mat = res['gt_bboxes_3d'], res['bev_aug_matrix'].astype(np.float64)
    assert np.allclose(mat, bev_aug_matrix(rotate, scale, flip_dx, flip_dy), atol=1e-6)
    assert np.allclose(res['points'].tensor[:, :3].numpy(), pts[:, :3].double().numpy() @ mat[:3, :3].T, atol=1e-3)
    assert torch.equal(res['points'].tensor[:, 3], pts[:, 3])
    lin = mat[:3, :3]
    # corners: the same set (flips reorder them)
    cb = before.corners.double().numpy() @ lin.T
    ca = after.corners.double().numpy()
    for i in range(len(before)):
        dist = np.linalg.norm(cb[i][:, None] - ca[i][None], axis=2)
        assert dist.min(1).max() < 1e-3 and dist.min(0).max() < 1e-3
    # random points inside each box stay inside the augmented box
    rng = np.random.default_rng(1)
    t = before.tensor.double().numpy()
    local = rng.uniform(-0.5, 0.5, (len(t), 20, 3)) * t[:, None, 3:6] + [0, 0, 0.5] * t[:, None, 3:6]
    c, s = np.cos(t[:, 6]), np.sin(t[:, 6])
    world = np.stack([c[:, None] * local[..., 0] - s[:, None] * local[..., 1],
                      s[:, None] * local[..., 0] + c[:, None] * local[..., 1], local[..., 2]], -1) + t[:, None, :3]
    inside = _inside(after, world.reshape(-1, 3) @ lin.T).reshape(len(t), len(t), 20)
    assert inside[np.arange(len(t)), np.arange(len(t))].all()
    # heading (front direction) and velocity transform with the linear part; sizes scale
    ta = after.tensor.double().numpy()
    heading = np.stack([np.cos(t[:, 6]), np.sin(t[:, 6])], 1) @ lin[:2, :2].T
    assert np.allclose(heading / np.linalg.norm(heading, axis=1, keepdims=True),
                       np.stack([np.cos(ta[:, 6]), np.sin(ta[:, 6])], 1), atol=1e-5)
    assert np.allclose(ta[:, 7:9], t[:, 7:9] @ lin[:2, :2].T, atol=1e-4)
    assert np.allclose(ta[:, 3:6], t[:, 3:6] * scale, atol=1e-4)
    assert ((ta[:, 6] >= -np.pi - 1e-6) & (ta[:, 6] <= np.pi + 1e-6)).all()


def test_bev_aug_sampling_covers_bevdet_ranges():
    aug = BEVDetBEVAug(BEVDET_BDA_AUG_CONF, is_train=True)
    np.random.seed(0)
    samples = [aug.sample_augmentation() for _ in range(400)]
    rot, scale = np.array([s[0] for s in samples]), np.array([s[1] for s in samples])
    assert rot.min() >= -22.5 and rot.max() <= 22.5 and rot.max() - rot.min() > 40
    assert scale.min() >= 0.95 and scale.max() <= 1.05
    for k in (2, 3):
        assert 0.4 < np.mean([s[k] for s in samples]) < 0.6


# ----------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_missing_key():
    from mmdet3d.structures import CameraInstance3DBoxes

    imgs = [np.zeros((90, 160, 3), np.float32) for _ in range(2)]
    aug = BEVDetImageAug(SMALL_DATA_CONFIG, is_train=False)
    res = _identity_results(imgs)
    del res['images']['CAM_1']['cam2keyego']
    with pytest.raises(KeyError, match=r"'CAM_1'.*'cam2keyego'"):
        aug(res)
    res = _identity_results(imgs)
    del res['images']['CAM_0']['cam2img']
    with pytest.raises(KeyError, match=r"'CAM_0'.*'cam2img'"):
        aug(res)
    res = _identity_results(imgs)
    res['images']['CAM_0']['cam2keyego'] = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match=r"'CAM_0'.*'cam2keyego'.*shape \(2, 2\)"):
        aug(res)
    with pytest.raises(KeyError, match=r"no 'img'.*LoadMultiViewImageFromFiles"):
        aug({'images': _identity_results(imgs)['images']})
    with pytest.raises(KeyError, match=r"no 'images'.*use_camera"):
        aug({'img': imgs})
    res = _identity_results(imgs)
    res['img'] = imgs[:1]
    with pytest.raises(ValueError, match='1 images but 2 cameras'):
        aug(res)
    with pytest.raises(ValueError, match=r'CAM_0 is 45x80 but data_config src_size is 90x160'):
        aug(_identity_results([np.zeros((45, 80, 3), np.float32)]))
    with pytest.raises(ValueError, match=r"missing keys \['rot'\].*unknown keys \['rotation'\]"):
        BEVDetImageAug({**{k: v for k, v in SMALL_DATA_CONFIG.items() if k != 'rot'}, 'rotation': (0, 0)})
    with pytest.raises(ValueError, match="'scale_lim'"):
        BEVDetBEVAug(dict(BEVDET_BDA_AUG_CONF, scale_lim=(1.05, 0.95)))
    with pytest.raises(KeyError, match=r"no 'gt_bboxes_3d'.*LoadAnnotations3D"):
        BEVDetBEVAug(BEVDET_BDA_AUG_CONF, is_train=True)({})
    cam_boxes = CameraInstance3DBoxes(torch.zeros((1, 7)))
    with pytest.raises(TypeError, match=r'LiDARInstance3DBoxes.*CameraInstance3DBoxes'):
        BEVDetBEVAug(BEVDET_BDA_AUG_CONF, is_train=True)({'gt_bboxes_3d': cam_boxes})


def test_other_camera_key_is_selectable():
    """cam2ego_key='cam2ego' (e.g. infos from mmdet3d's own converter) reads that key instead."""
    res = _identity_results([np.zeros((90, 160, 3), np.float32)])
    c2e = np.eye(4)
    c2e[:3, 3] = [1.0, 2.0, 3.0]
    res['images']['CAM_0']['cam2ego'] = c2e.tolist()
    out = BEVDetImageAug(SMALL_DATA_CONFIG, is_train=False, cam2ego_key='cam2ego')(res)
    assert np.allclose(out['cam2ego'][0], c2e)
    assert 'cam2ego' in repr(BEVDetImageAug(SMALL_DATA_CONFIG, cam2ego_key='cam2ego'))


def test_uint8_and_out_of_image_crops():
    """uint8 images stay uint8; a crop reaching outside the resized image is zero-padded (BEVDet's PIL crop)."""
    img = np.full((90, 160, 3), 200, np.uint8)
    cfg = dict(SMALL_DATA_CONFIG, resize_test=-0.2)  # 0.5: 45x80, smaller than the 64x112 input
    out = BEVDetImageAug(cfg, is_train=False)(_identity_results([img]))
    res = out['img'][0]
    assert res.dtype == np.uint8 and res.shape == (64, 112, 3)
    mat = out['img_aug_matrix'][0].astype(np.float64)
    # image content occupies the bottom 45 rows and the left 80 columns (crop_w = 0, crop_h = 45 - 64)
    assert np.allclose(mat[:2, 3], [0.5 * 0.5 - 0.5, 0.5 * 0.5 - 0.5 + 19])
    assert (res[19:, :80] == 200).all() and (res[:19] == 0).all() and (res[:, 80:] == 0).all()
