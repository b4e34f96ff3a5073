"""Prediction figure (projects/sparsevit_bevdet/visualization): projection on a hand-made camera, the box corner
layout, ground truth ahead of CAM_FRONT landing in its image, a PNG of ground truth fed back as predictions on the
synthetic nuScenes of ``conftest.synthetic_nuscenes``, and errors naming the bad argument."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from projects.sparsevit_bevdet.synthetic.nuscenes import CAMERA_NAMES, DETECTION_CLASSES
from projects.sparsevit_bevdet.testing.nuscenes import gt_as_predictions
from projects.sparsevit_bevdet.visualization import box_corners, plot_predictions, plot_sample_predictions
from projects.sparsevit_bevdet.visualization.predictions import _box_segments, project_to_image

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO_ROOT / 'configs/_base_/datasets/nuscenes_synth_bevdet.py'
K = np.array([[800.0, 0.0, 640.0], [0.0, 800.0, 360.0], [0.0, 0.0, 1.0]])
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _forward_camera(position=(1.5, 0.0, 1.6)) -> np.ndarray:
    """cam2ego of a camera looking along ego +x: camera x (right) = ego -y, y (down) = ego -z, z = ego +x."""
    cam2ego = np.eye(4)
    cam2ego[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    cam2ego[:3, 3] = position
    return cam2ego


@pytest.fixture(scope='module')
def val_dataset(synthetic_nuscenes):
    from mmdet3d.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.sparsevit_bevdet  # noqa: F401  (registration)

    cfg = Config.fromfile(str(BASE_CONFIG))
    cfg.val_dataloader.dataset.data_root = f'{synthetic_nuscenes.root}/'
    init_default_scope('mmdet3d')
    return DATASETS.build(cfg.val_dataloader.dataset)


@pytest.mark.parametrize('intrinsics', [K, np.pad(K, ((0, 1), (0, 1))) + np.diag([0, 0, 0, 1.0])])
def test_point_straight_ahead_projects_to_the_principal_point(intrinsics):
    cam2ego = _forward_camera()
    points = np.array([[11.5, 0.0, 1.6],    # 10 m straight ahead
                       [11.5, 1.0, 2.6],    # ... 1 m to the left and 1 m up
                       [-3.5, 0.0, 1.6]])   # 5 m behind
    uv, depth = project_to_image(points, intrinsics, cam2ego)
    assert np.allclose(uv[0], [640.0, 360.0]) and depth[0] == pytest.approx(10.0)
    assert np.allclose(uv[1], [640.0 - 80.0, 360.0 - 80.0])  # left -> smaller u, up -> smaller v
    assert depth[2] == pytest.approx(-5.0) and np.isnan(uv[2]).all()


def test_box_corner_layout_matches_footprint_and_heading():
    """mmdet3d's corners: z is the bottom, yaw turns the length axis counter-clockwise, corners 4 and 7 the front."""
    corners = box_corners(np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, math.pi / 2]]))[0]
    assert np.allclose(corners.min(0), [9.0, -2.0, -1.0]) and np.allclose(corners.max(0), [11.0, 2.0, 0.5])
    assert np.allclose(corners[[4, 7], 1], 2.0)  # heading +y: the front face is at y = +l/2
    assert np.allclose(corners[[0, 3, 7, 4], 2], -1.0)  # the footprint corners are the bottom ones
    assert box_corners(np.zeros((0, 9))).shape == (0, 8, 3)


def test_edges_behind_the_camera_are_dropped_or_clipped():
    cam2ego = _forward_camera(position=(0.0, 0.0, 0.0))
    corners = box_corners(np.array([[1.0, 0.0, -0.5, 4.0, 2.0, 1.0, 0.0]]))  # x from -1 to 3: straddles the camera
    segments = _box_segments(corners, K, cam2ego)[0]
    finite = np.isfinite(segments).all(axis=(1, 2))
    assert finite.sum() == 8  # the 4 edges of the rear face (x = -1) are dropped, the 4 long edges clipped


def test_ground_truth_ahead_of_cam_front_projects_into_its_image(val_dataset):
    checked = 0
    for index in range(len(val_dataset)):
        info = val_dataset.get_data_info(index)
        boxes = info['eval_ann_info']['gt_bboxes_3d']
        centres = boxes.gravity_center.numpy()
        # within +-17 deg of straight ahead and far enough that the centre is not below the image's bottom edge
        ahead = centres[(centres[:, 0] > 8.0) & (np.abs(centres[:, 1]) < 0.3 * centres[:, 0])]
        front, back = info['images']['CAM_FRONT'], info['images']['CAM_BACK']
        uv, depth = project_to_image(ahead, front['cam2img'], front['cam2keyego'])
        assert (depth > 0).all()
        assert ((uv >= 0) & (uv < [front['width'], front['height']])).all(), (index, uv)
        assert (project_to_image(ahead, back['cam2img'], back['cam2keyego'])[1] < 0).all()
        checked += len(ahead)
    assert checked > 0


def test_ground_truth_as_predictions_plot(val_dataset, tmp_path):
    import cv2

    predictions = gt_as_predictions(val_dataset)
    index = int(np.argmax([len(p.pred_instances_3d.labels_3d) for p in predictions]))
    out = plot_sample_predictions(val_dataset, index, predictions[index], tmp_path / 'figs' / 'predictions.png')
    assert out == tmp_path / 'figs' / 'predictions.png' and out.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(out))
    assert image.shape[1] > 1500 and 500 < image.shape[0] < image.shape[1]
    assert image.std() > 10  # not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ['predictions.png']  # no temporary file left behind
    # the dict form (Det3DDataSample.to_dict()) works too; the wrong sample is refused
    plot_sample_predictions(val_dataset, index, predictions[index].to_dict(), tmp_path / 'dict.png')
    with pytest.raises(ValueError, match='data_sample_with_pred is sample'):
        plot_sample_predictions(val_dataset, (index + 1) % len(val_dataset), predictions[index], tmp_path / 'x.png')


def _inputs() -> dict:
    cam2ego = np.stack([_forward_camera()] * 6)
    box = np.array([[12.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    return dict(images=[np.zeros((90, 160, 3), np.uint8)] * 6, cam2img=np.stack([K] * 6), cam2ego=cam2ego,
                gt_boxes=box, gt_labels=np.array([0]), pred_boxes=box, pred_labels=np.array([0]),
                pred_scores=np.array([0.9]), class_names=DETECTION_CLASSES)


@pytest.mark.parametrize('argument, value', [
    ('images', [np.zeros((90, 160, 3), np.uint8)] * 5),
    ('images', [np.zeros((90, 160), np.uint8)] * 6),
    ('cam2img', np.stack([K] * 5)),
    ('cam2ego', np.stack([np.eye(4)] * 6)[:, :3]),
    ('camera_names', ('CAM_FRONT', 'CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')),
    ('gt_boxes', np.zeros((1, 6))),
    ('gt_labels', np.array([0, 1])),
    ('pred_labels', np.array([10])),
    ('pred_scores', np.array([0.5, 0.5])),
])
def test_bad_inputs_name_the_argument(tmp_path, argument, value):
    kwargs = dict(_inputs(), **{argument: value})
    with pytest.raises(ValueError, match=argument):
        plot_predictions(out_path=tmp_path / 'bad.png', **kwargs)
    assert not (tmp_path / 'bad.png').exists()


def test_hand_made_plot_without_predictions(tmp_path):
    kwargs = dict(_inputs(), pred_boxes=np.zeros((0, 9)), pred_labels=[], pred_scores=[], camera_names=CAMERA_NAMES)
    out = plot_predictions(out_path=tmp_path / 'p.png', title='no predictions', **kwargs)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
