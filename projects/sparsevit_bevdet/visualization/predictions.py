"""Predicted and ground-truth 3D boxes of one sample, drawn on its six cameras and in bird's-eye view.

Boxes are ``LiDARInstance3DBoxes`` tensors in the ego frame of the key frame (x forward, y left, z up):
``x, y, z, l, w, h, yaw[, vx, vy]`` with z at the bottom centre, l along x and yaw counter-clockwise from +x,
the layout BEVDet predicts and ``EgoFrameNuScenesDataset(box_frame='ego')`` serves as ground truth.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence, Tuple

import numpy as np

from ..datasets.nuscenes_format import CAMERA_NAMES
from ..utils.atomic_io import atomic_open

__all__ = ['CAMERA_GRID', 'box_corners', 'plot_predictions', 'plot_sample_predictions', 'project_to_image']

# (row, column) of each camera in the figure, nuScenes style: the front row looks ahead, the back row behind.
CAMERA_GRID = {
    'CAM_FRONT_LEFT': (0, 0), 'CAM_FRONT': (0, 1), 'CAM_FRONT_RIGHT': (0, 2),
    'CAM_BACK_LEFT': (1, 0), 'CAM_BACK': (1, 1), 'CAM_BACK_RIGHT': (1, 2),
}
# Corner order of LiDARInstance3DBoxes.corners in box axes: x0y0z0, x0y0z1, x0y1z1, x0y1z0, x1y0z0, x1y0z1,
# x1y1z1, x1y1z0; x1 is the front face (heading), z0 the bottom.
_EDGES = np.array([(0, 1), (3, 2), (7, 6), (4, 5),   # vertical
                   (0, 3), (3, 7), (7, 4), (4, 0),   # bottom
                   (1, 2), (2, 6), (6, 5), (5, 1)])  # top
_FOOTPRINT = [0, 3, 7, 4]
_FRONT_BOTTOM = [4, 7]
_NEAR = 0.1  # m: box edges are clipped at this depth in front of the camera
GT_COLOR = '#00c800'
PRED_COLOR = '#ff2020'


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """``(N, >=7)`` boxes -> ``(N, 8, 3)`` corners, as ``LiDARInstance3DBoxes.corners`` computes and orders them."""
    import torch
    from mmdet3d.structures import LiDARInstance3DBoxes

    boxes = torch.as_tensor(np.asarray(boxes, np.float64)[:, :7])
    return LiDARInstance3DBoxes(boxes, box_dim=7).corners.numpy()


def _ego_to_camera(points_ego: np.ndarray, cam2ego: np.ndarray) -> np.ndarray:
    """``(N, 3)`` ego-frame points -> ``(N, 3)`` camera-frame points (x right, y down, z forward)."""
    pts = np.asarray(points_ego, np.float64).reshape(-1, 3)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], 1)
    return (hom @ np.linalg.inv(np.asarray(cam2ego, np.float64)).T)[:, :3]


def _camera_to_image(points_cam: np.ndarray, cam2img: np.ndarray) -> np.ndarray:
    """``(N, 3)`` camera-frame points -> ``(N, 2)`` pixels; NaN where the depth is not positive."""
    img = points_cam @ np.asarray(cam2img, np.float64)[:3, :3].T
    depth = img[:, 2:3]
    return np.divide(img[:, :2], depth, out=np.full((len(img), 2), np.nan), where=depth > 0)


def project_to_image(points_ego: np.ndarray, cam2img: np.ndarray,
                     cam2ego: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points ``(N, 3)`` into one camera.

    Args:
        points_ego: ``(N, 3)`` points in the ego frame.
        cam2img: ``(3, 3)`` or ``(4, 4)`` intrinsics.
        cam2ego: ``(4, 4)`` camera -> ego transform.

    Returns:
        ``uv`` ``(N, 2)`` pixel coordinates (NaN for points with depth <= 0) and ``depth`` ``(N,)`` in metres
        along the optical axis (negative behind the camera).
    """
    cam = _ego_to_camera(points_ego, cam2ego)
    return _camera_to_image(cam, cam2img), cam[:, 2]


def _box_segments(corners: np.ndarray, cam2img: np.ndarray, cam2ego: np.ndarray) -> np.ndarray:
    """``(N, 8, 3)`` ego-frame corners -> ``(N, 12, 2, 2)`` pixel edges, NaN for edges wholly behind the near plane.

    An edge with one corner behind the near plane is cut where it crosses it.
    """
    cam = _ego_to_camera(corners.reshape(-1, 3), cam2ego).reshape(-1, 8, 3)
    a, b = cam[:, _EDGES[:, 0]].reshape(-1, 3), cam[:, _EDGES[:, 1]].reshape(-1, 3)
    visible = (a[:, 2] >= _NEAR) | (b[:, 2] >= _NEAR)

    def clip(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        cut = visible & (p[:, 2] < _NEAR)
        t = np.zeros(len(p))
        t[cut] = (_NEAR - p[cut, 2]) / (q[cut, 2] - p[cut, 2])
        return p + t[:, None] * (q - p)

    a, b = clip(a, b), clip(b, a)
    uv = np.stack([_camera_to_image(a, cam2img), _camera_to_image(b, cam2img)], 1)
    uv[~visible] = np.nan
    return uv.reshape(-1, 12, 2, 2)


def _draw_camera(ax: Any, image: np.ndarray, name: str, cam2img: np.ndarray, cam2ego: np.ndarray,
                 gt_corners: np.ndarray, pred_corners: np.ndarray, pred_text: Sequence[str]) -> None:
    from matplotlib.collections import LineCollection

    height, width = image.shape[:2]
    ax.imshow(image)
    for corners, color in ((gt_corners, GT_COLOR), (pred_corners, PRED_COLOR)):
        segments = _box_segments(corners, cam2img, cam2ego).reshape(-1, 2, 2)
        segments = segments[np.isfinite(segments).all(axis=(1, 2))]
        ax.add_collection(LineCollection(segments, colors=color, linewidths=1.0))
    # score text above each prediction whose in-front corners' top lies inside the image
    uv, depth = project_to_image(pred_corners.reshape(-1, 3), cam2img, cam2ego)
    uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
    for box_uv, box_depth, text in zip(uv, depth, pred_text):
        front = box_uv[box_depth >= _NEAR]
        if len(front) == 0:
            continue
        u, v = front[:, 0].mean(), front[:, 1].min()
        if 0 <= u < width and 0 <= v < height:
            ax.text(u, v, text, fontsize=5.5, color='white', va='bottom', ha='center', clip_on=True,
                    bbox=dict(facecolor=PRED_COLOR, alpha=0.75, pad=0.6, edgecolor='none'))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(name, fontsize=8)
    ax.axis('off')


def _draw_bev(ax: Any, gt_corners: np.ndarray, pred_corners: np.ndarray, pred_scores: np.ndarray,
              bev_range: float) -> None:
    """Footprints with a heading tick; plot axes are (y, x) with y increasing to the left."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Circle

    for radius in range(10, int(bev_range) + 1, 10):
        ax.add_patch(Circle((0, 0), radius, fill=False, linestyle=':', linewidth=0.6, color='0.55'))
        ax.text(-radius * 0.72, radius * 0.72, f'{radius} m', fontsize=6, color='0.45', ha='left', va='bottom')
    ax.plot([0], [0], marker='^', markersize=7, color='black', linestyle='none')
    for corners, colors in ((gt_corners, [to_rgba(GT_COLOR)] * len(gt_corners)),
                            (pred_corners, [to_rgba(PRED_COLOR, 0.3 + 0.7 * float(np.clip(s, 0, 1)))
                                            for s in pred_scores])):
        footprint = corners[:, _FOOTPRINT, 1::-1]  # (y, x)
        centre = footprint.mean(axis=1)
        front = corners[:, _FRONT_BOTTOM, 1::-1].mean(axis=1)
        ax.add_collection(PolyCollection(footprint, facecolors='none', edgecolors=colors, linewidths=1.0))
        ax.add_collection(LineCollection(np.stack([centre, front], 1), colors=colors, linewidths=1.0))
    ax.set_xlim(bev_range, -bev_range)
    ax.set_ylim(-bev_range, bev_range)
    ax.set_aspect('equal')
    ax.set_xlabel('y (m, left)', fontsize=7)
    ax.set_ylabel('x (m, forward)', fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title("bird's-eye view (ego frame)", fontsize=8)


def _boxes(name: str, boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 7)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f'{name} must have shape (N, >=7) (x, y, z, l, w, h, yaw[, vx, vy]), got {boxes.shape}')
    return boxes


def _per_box(name: str, values: np.ndarray, boxes_name: str, num_boxes: int) -> np.ndarray:
    values = np.asarray(values).reshape(-1)
    if len(values) != num_boxes:
        raise ValueError(f'{name} has {len(values)} entries but {boxes_name} has {num_boxes} boxes')
    return values


def plot_predictions(images: Sequence[np.ndarray], cam2img: np.ndarray, cam2ego: np.ndarray,
                     gt_boxes: np.ndarray, gt_labels: np.ndarray,
                     pred_boxes: np.ndarray, pred_labels: np.ndarray, pred_scores: np.ndarray,
                     class_names: Sequence[str], out_path: str | Path,
                     camera_names: Sequence[str] = CAMERA_NAMES, score_threshold: float = 0.3,
                     bev_range: float = 51.2, title: str = '') -> Path:
    """Draw one sample's ground truth (green) and predictions (red, score text) on its cameras and in BEV.

    Args:
        images: one ``(H, W, 3)`` uint8 **RGB** image per camera (original, un-augmented).
        cam2img: ``(C, 3, 3)`` or ``(C, 4, 4)`` intrinsics, ``C = len(images)``.
        cam2ego: ``(C, 4, 4)`` camera -> ego frame of the key frame (the boxes' frame).
        gt_boxes: ``(G, >=7)`` ego-frame boxes (layout in the module docstring); ``gt_labels``: ``(G,)``;
            boxes with a label outside ``class_names`` (-1: ignored category) are not drawn.
        pred_boxes: ``(P, >=7)``; ``pred_labels``: ``(P,)`` indices into ``class_names``; ``pred_scores``:
            ``(P,)``. Predictions scoring below ``score_threshold`` are not drawn.
        class_names: label -> class name.
        out_path: PNG written atomically; its folder is created.
        camera_names: name of each camera, the keys of :data:`CAMERA_GRID` (their positions in the figure).
        bev_range: half-width of the BEV panel in metres.
        title: figure title.

    Returns:
        ``out_path`` as a ``Path``.

    Raises:
        ValueError: naming the argument whose length or shape does not fit.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    num_cams = len(images)
    cam2img, cam2ego = np.asarray(cam2img, np.float64), np.asarray(cam2ego, np.float64)
    if len(camera_names) != num_cams:
        raise ValueError(f'camera_names has {len(camera_names)} names but images has {num_cams} images')
    unknown = [c for c in camera_names if c not in CAMERA_GRID]
    if unknown or len(set(camera_names)) != num_cams:
        raise ValueError(f'camera_names must be distinct names out of {list(CAMERA_GRID)}, got {list(camera_names)}')
    if cam2img.ndim != 3 or len(cam2img) != num_cams or cam2img.shape[1:] not in ((3, 3), (4, 4)):
        raise ValueError(f'cam2img must have shape ({num_cams}, 3, 3) or ({num_cams}, 4, 4), got {cam2img.shape}')
    if cam2ego.shape != (num_cams, 4, 4):
        raise ValueError(f'cam2ego must have shape ({num_cams}, 4, 4), got {cam2ego.shape}')
    for name, image in zip(camera_names, images):
        if np.ndim(image) != 3 or np.shape(image)[2] != 3 or np.asarray(image).dtype != np.uint8:
            raise ValueError(f'images: {name} must be an (H, W, 3) uint8 array, got shape {np.shape(image)} '
                             f'and dtype {np.asarray(image).dtype}')
    gt_boxes, pred_boxes = _boxes('gt_boxes', gt_boxes), _boxes('pred_boxes', pred_boxes)
    gt_labels = _per_box('gt_labels', gt_labels, 'gt_boxes', len(gt_boxes)).astype(np.int64)
    pred_labels = _per_box('pred_labels', pred_labels, 'pred_boxes', len(pred_boxes)).astype(np.int64)
    pred_scores = _per_box('pred_scores', pred_scores, 'pred_boxes', len(pred_boxes)).astype(np.float64)
    if ((pred_labels < 0) | (pred_labels >= len(class_names))).any():
        raise ValueError(f'pred_labels must index class_names ({len(class_names)} classes), '
                         f'got values {sorted(set(pred_labels.tolist()))}')

    gt_keep = (gt_labels >= 0) & (gt_labels < len(class_names))
    pred_keep = pred_scores >= score_threshold
    gt_corners = box_corners(gt_boxes[gt_keep])
    pred_corners = box_corners(pred_boxes[pred_keep])
    pred_scores = pred_scores[pred_keep]
    pred_text = [f'{class_names[label]} {score:.2f}' for label, score in zip(pred_labels[pred_keep], pred_scores)]

    fig = Figure(figsize=(19.5, 6.2), dpi=100)
    outer = fig.add_gridspec(1, 2, width_ratios=(3, 1.05), left=0.005, right=0.99, bottom=0.07, top=0.9,
                             wspace=0.07)
    cameras = outer[0].subgridspec(2, 3, wspace=0.03, hspace=0.1)
    for i, name in enumerate(camera_names):
        row, col = CAMERA_GRID[name]
        _draw_camera(fig.add_subplot(cameras[row, col]), np.asarray(images[i]), name, cam2img[i], cam2ego[i],
                     gt_corners, pred_corners, pred_text)
    _draw_bev(fig.add_subplot(outer[1]), gt_corners, pred_corners, pred_scores, bev_range)
    handles = [Line2D([], [], color=GT_COLOR, label=f'ground truth ({len(gt_corners)})'),
               Line2D([], [], color=PRED_COLOR, label=f'prediction, score >= {score_threshold:g} '
                                                      f'({len(pred_corners)}; BEV opacity ~ score)')]
    fig.legend(handles=handles, loc='upper right', ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.005, ha='left', fontsize=10)
    out_path = Path(out_path)
    with atomic_open(out_path, 'wb') as f:
        fig.savefig(f, format='png')
    return out_path


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings (``Det3DDataSample.to_dict()``), else ``getattr(obj, name, None)``."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _to_numpy(value: Any) -> np.ndarray:
    """Boxes (``.tensor``), tensors and arrays -> numpy."""
    value = getattr(value, 'tensor', value)
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def plot_sample_predictions(dataset: Any, index: int, data_sample_with_pred: Any, out_path: str | Path,
                            score_threshold: float = 0.3) -> Path:
    """:func:`plot_predictions` for sample ``index`` of an ``EgoFrameNuScenesDataset(box_frame='ego')``.

    Reads the six original images (cv2, BGR -> RGB), ``images[cam]['cam2img']`` and ``['cam2keyego']`` of the
    infos, the ground truth of ``eval_ann_info`` (``ann_info`` for a training-mode dataset) and
    ``data_sample_with_pred.pred_instances_3d.{bboxes_3d, scores_3d, labels_3d}`` (ego frame, as BEVDet predicts;
    a ``Det3DDataSample`` or its ``to_dict()``).
    """
    import cv2

    if getattr(dataset, 'box_frame', None) != 'ego':
        raise ValueError(f'dataset must serve ego-frame boxes (EgoFrameNuScenesDataset with box_frame="ego"), '
                         f'got {type(dataset).__name__} with box_frame={getattr(dataset, "box_frame", None)!r}')
    info = dataset.get_data_info(index)
    sample_idx = _field(data_sample_with_pred, 'sample_idx')
    if sample_idx is not None and sample_idx != info['sample_idx']:
        raise ValueError(f'data_sample_with_pred is sample {sample_idx}, dataset index {index} is sample '
                         f'{info["sample_idx"]}')
    ann = info.get('eval_ann_info', info.get('ann_info'))
    if ann is None:
        raise KeyError(f'sample {index} has no "eval_ann_info" or "ann_info": build the dataset with '
                       f'load_eval_anns=True')
    pred = _field(data_sample_with_pred, 'pred_instances_3d')
    if pred is None:
        raise ValueError('data_sample_with_pred has no pred_instances_3d')

    cams = list(info['images'])
    images = []
    for cam in cams:
        path = info['images'][cam]['img_path']
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'{cam} image {path} of sample {info["sample_idx"]} could not be read')
        images.append(np.ascontiguousarray(image[..., ::-1]))
    title = f'{info.get("scene_name", "")} sample {info["sample_idx"]} ({info["token"]})'.strip()
    return plot_predictions(
        images,
        cam2img=np.stack([np.asarray(info['images'][c]['cam2img'], np.float64) for c in cams]),
        cam2ego=np.stack([np.asarray(info['images'][c]['cam2keyego'], np.float64) for c in cams]),
        gt_boxes=_to_numpy(ann['gt_bboxes_3d']), gt_labels=_to_numpy(ann['gt_labels_3d']),
        pred_boxes=_to_numpy(_field(pred, 'bboxes_3d')), pred_labels=_to_numpy(_field(pred, 'labels_3d')),
        pred_scores=_to_numpy(_field(pred, 'scores_3d')), class_names=dataset.metainfo['classes'],
        out_path=out_path, camera_names=cams, score_threshold=score_threshold, title=title)
