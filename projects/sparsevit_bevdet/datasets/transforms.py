"""BEVDet's data augmentation (Huang et al. 2021, arXiv 2112.11790) as mmdet3d 1.x transforms.

Two transforms, registered in mmdet3d's ``TRANSFORMS``:

* :class:`BEVDetImageAug` (image-view augmentation, BEVDet's ``PrepareImageInputs``): per camera,
  resize -> crop to ``input_size`` (bottom-aligned) -> optional horizontal flip -> rotation about the
  crop centre. It runs after mmdet3d's ``LoadMultiViewImageFromFiles`` and writes, as ``(N, 4, 4)``
  float32 arrays in the camera order of ``results['images']`` (the order of ``results['img']``):

  - ``img_aug_matrix``: original pixel -> augmented pixel, ``[[a, b, 0, tu], [c, d, 0, tv], [0, 0, 1, 0],
    [0, 0, 0, 1]]`` acting on ``(u, v, d, 1)``; pixel coordinates are OpenCV's (pixel ``(row i, col j)``
    is centred at ``u=j, v=i``, as in ``cam2img``). Augmented ``(u', v') = A @ (u, v, 1)`` with the 3x3
    ``A = img_aug_matrix[[0, 1, 3]][:, [0, 1, 3]]``; depth ``d`` passes through unchanged. This is the layout
    of mmdet3d's BEVFusion ``img_aug_matrix``: apply it *after* the perspective division (see below);
  - ``cam2img``: the intrinsics of the *original* image, ``[[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0],
    [0, 0, 0, 1]]`` (``images[cam]['cam2img']`` padded);
  - ``cam2ego``: camera -> ego frame of the *key frame* (the LiDAR key frame's ego pose, the frame of
    ``EgoFrameNuScenesDataset(box_frame='ego')``'s ground truth): the infos' ``images[cam]['cam2keyego']``
    (BEVDet's ``sensor2keyego``). The infos' own ``images[cam]['cam2ego']`` is camera -> ego *at the
    camera's timestamp*, a few ms off, and is not what this key holds.

  An ego point ``p = (x, y, z, 1)`` projects to the augmented image as
  ``q = img_aug_matrix @ perspective(cam2img @ inv(cam2ego) @ p)`` with ``perspective(w) = (w0/w2, w1/w2,
  w2, 1)``: ``q = (u', v', depth, 1)``. Conversely a frustum point ``(u', v', d)`` of the augmented image
  lies at ``cam2ego @ inv(cam2img) @ (u d, v d, d, 1)`` with ``(u, v, d, 1) = inv(img_aug_matrix) @
  (u', v', d, 1)``. Images stay BGR and unnormalised (the model's data preprocessor normalises them).

* :class:`BEVDetBEVAug` (BEV data augmentation "BDA", BEVDet's ``LoadAnnotationsBEVDepth``): a rotation
  about z, a uniform scale and flips of x and/or y applied to ``gt_bboxes_3d`` (ego frame); writes
  ``bev_aug_matrix`` (4x4 float32) with ``p_aug = bev_aug_matrix @ p`` for every point ``p`` of the ego
  frame (box points, centres; velocities transform with its top-left 2x2 block), identity in test mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures import LiDARInstance3DBoxes

__all__ = ['BEVDET_BDA_AUG_CONF', 'BEVDET_DATA_CONFIG', 'BEVDetBEVAug', 'BEVDetDepthTarget', 'BEVDetImageAug',
           'ImageAugParams', 'bev_aug_matrix', 'image_aug_matrix', 'project_ego_points']

# BEVDet's official settings (configs/bevdet/bevdet-r50.py), for reference and as defaults in configs.
BEVDET_DATA_CONFIG: Dict[str, Any] = dict(input_size=(256, 704), src_size=(900, 1600), resize=(-0.06, 0.11),
                                          rot=(-5.4, 5.4), flip=True, crop_h=(0.0, 0.0), resize_test=0.0)
BEVDET_BDA_AUG_CONF: Dict[str, Any] = dict(rot_lim=(-22.5, 22.5), scale_lim=(0.95, 1.05), flip_dx_ratio=0.5,
                                           flip_dy_ratio=0.5)

_DATA_CONFIG_KEYS = ('input_size', 'resize', 'rot', 'flip', 'crop_h', 'resize_test')
_BDA_KEYS = ('rot_lim', 'scale_lim', 'flip_dx_ratio', 'flip_dy_ratio')


def _pair(cfg: Mapping[str, Any], key: str, owner: str) -> Tuple[float, float]:
    value = cfg[key]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f'{owner}[{key!r}] must be a (low, high) pair, got {value!r}')
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f'{owner}[{key!r}] must have low <= high, got {value!r}')
    return low, high


def _check_keys(cfg: Mapping[str, Any], required: Sequence[str], optional: Sequence[str], owner: str) -> None:
    missing = [k for k in required if k not in cfg]
    unknown = [k for k in cfg if k not in required and k not in optional]
    if missing or unknown:
        raise ValueError(f'{owner}: missing keys {missing}, unknown keys {unknown}; expected '
                         f'{list(required)} (optional: {list(optional)})')


# ----------------------------------------------------------------------------------------------------
# image-view augmentation


@dataclass(frozen=True)
class ImageAugParams:
    """One camera's image augmentation, BEVDet's ``(resize, resize_dims, crop, flip, rotate)``.

    ``resize_dims`` is ``(new_w, new_h)``, ``crop`` ``(x0, y0, x1, y1)`` in the resized image (may reach
    outside it: zero padding), ``rotate`` in degrees, counter-clockwise as seen in the image.
    """

    resize: float
    resize_dims: Tuple[int, int]
    crop: Tuple[int, int, int, int]
    flip: bool
    rotate: float


def image_aug_matrix(params: ImageAugParams, src_hw: Tuple[int, int]) -> np.ndarray:
    """The 3x3 affine map (float64) from original to augmented pixel coordinates (OpenCV convention).

    Same composition as BEVDet's ``post_rot``/``post_tran`` (resize, crop, flip, rotate about the crop
    centre) but exact for the warp :class:`BEVDetImageAug` performs: the resize uses the actual
    ``resize_dims`` (BEVDet uses the nominal factor), and flip/rotation centres are in pixel-centre
    coordinates. The two differ by less than 1.5 pixels (at the image corners, from the truncation).
    """
    h, w = src_hw
    new_w, new_h = params.resize_dims
    x0, y0, x1, y1 = params.crop
    out_w, out_h = x1 - x0, y1 - y0
    sx, sy = new_w / w, new_h / h
    # cv2.resize maps pixel centres as u' = sx (u + 0.5) - 0.5.
    mat = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    mat = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ mat
    if params.flip:
        mat = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ mat
    if params.rotate != 0.0:
        # BEVDet's get_rot(h) = [[cos, sin], [-sin, cos]]: PIL's Image.rotate, counter-clockwise on screen
        # (v points down), about the crop centre.
        a = math.radians(params.rotate)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        centre = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
        about = np.eye(3)
        about[:2, :2] = rot
        about[:2, 2] = centre - rot @ centre
        mat = about @ mat
    return mat


def _embed_affine(mat3: np.ndarray) -> np.ndarray:
    """3x3 pixel affine -> 4x4 acting on (u, v, d, 1) with depth unchanged."""
    mat4 = np.eye(4)
    mat4[:2, :2] = mat3[:2, :2]
    mat4[:2, 3] = mat3[:2, 2]
    return mat4


@TRANSFORMS.register_module()
class BEVDetImageAug(BaseTransform):
    """BEVDet's per-camera image augmentation of multi-view images (see the module docstring).

    Args:
        data_config: BEVDet's ``data_config`` subset: ``input_size`` (H, W) of the network input;
            ``resize`` (low, high) added to the fit-width factor ``W_in / W`` in training; ``rot`` (low,
            high) degrees; ``flip`` (bool, p=0.5 in training); ``crop_h`` (low, high) fraction of the resized
            height cut off at the bottom (0: bottom-aligned crop); ``resize_test`` added to the fit-width
            factor in test mode; optional ``src_size`` (H, W) the loaded images must have.
        is_train: sample augmentations (True) or the deterministic test transform (False: fit width,
            bottom crop centred horizontally, no flip, no rotation).
        cam2ego_key: the key of ``results['images'][cam]`` holding camera -> ego of the ground-truth frame;
            ``'cam2keyego'`` (written by :mod:`.nuscenes_converter`) matches ``EgoFrameNuScenesDataset``.

    Required keys: ``img`` (list of HxWxC arrays from ``LoadMultiViewImageFromFiles``), ``images`` (per
    camera ``cam2img`` and ``cam2ego_key``). Modified: ``img``, ``img_shape``, ``pad_shape``. Added:
    ``img_aug_matrix``, ``cam2img``, ``cam2ego`` (``(N, 4, 4)`` float32).
    """

    def __init__(self, data_config: Mapping[str, Any], is_train: bool = True,
                 cam2ego_key: str = 'cam2keyego') -> None:
        owner = 'BEVDetImageAug data_config'
        if not isinstance(data_config, Mapping):
            raise TypeError(f'{owner} must be a dict, got {type(data_config).__name__}')
        _check_keys(data_config, _DATA_CONFIG_KEYS, ('src_size',), owner)
        size = data_config['input_size']
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(s) == s and s > 0 for s in size)):
            raise ValueError(f'{owner}["input_size"] must be (H, W) positive integers, got {size!r}')
        self.input_size = (int(size[0]), int(size[1]))
        src = data_config.get('src_size')
        self.src_size = None if src is None else (int(src[0]), int(src[1]))
        self.resize_range = _pair(data_config, 'resize', owner)
        self.rot_range = _pair(data_config, 'rot', owner)
        self.crop_h_range = _pair(data_config, 'crop_h', owner)
        self.flip = bool(data_config['flip'])
        self.resize_test = float(data_config['resize_test'])
        self.is_train = bool(is_train)
        self.cam2ego_key = cam2ego_key

    def sample_augmentation(self, h: int, w: int) -> ImageAugParams:
        """BEVDet's ``sample_augmentation`` for an ``h`` x ``w`` image (numpy's global RNG in training)."""
        out_h, out_w = self.input_size
        resize = out_w / w
        if self.is_train:
            resize += np.random.uniform(*self.resize_range)
        else:
            resize += self.resize_test
        # The epsilon keeps e.g. 160 * (112 / 160) = 111.99999999999999 from truncating to 111.
        new_w, new_h = int(w * resize + 1e-6), int(h * resize + 1e-6)
        if new_w <= 0 or new_h <= 0:
            raise ValueError(f'BEVDetImageAug: resize factor {resize:.4f} gives an empty {new_h}x{new_w} image '
                             f'from {h}x{w}; check data_config resize/resize_test')
        if self.is_train:
            crop_h = int((1 - np.random.uniform(*self.crop_h_range)) * new_h) - out_h
            crop_w = int(np.random.uniform(0, max(0, new_w - out_w)))
            flip = self.flip and bool(np.random.choice([0, 1]))
            rotate = float(np.random.uniform(*self.rot_range))
        else:
            crop_h = int((1 - np.mean(self.crop_h_range)) * new_h) - out_h
            crop_w = int(max(0, new_w - out_w) / 2)
            flip, rotate = False, 0.0
        return ImageAugParams(resize=float(resize), resize_dims=(new_w, new_h),
                              crop=(crop_w, crop_h, crop_w + out_w, crop_h + out_h), flip=flip, rotate=rotate)

    @staticmethod
    def augment_image(img: np.ndarray, params: ImageAugParams) -> Tuple[np.ndarray, np.ndarray]:
        """Warp one HxWxC image; return it and its 3x3 :func:`image_aug_matrix`."""
        h, w = img.shape[:2]
        new_w, new_h = params.resize_dims
        x0, y0, x1, y1 = params.crop
        mat = image_aug_matrix(params, (h, w))
        # Resize first with area averaging (BEVDet's 1600 -> ~704 is a strong downscale; a single bilinear
        # warp would alias), then crop/flip/rotate in one affine warp of the resized image.
        interp = cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR
        resized = cv2.resize(img, (new_w, new_h), interpolation=interp)
        if resized.ndim == 2 and img.ndim == 3:  # cv2 drops a single channel axis
            resized = resized[..., None]
        resize_mat = image_aug_matrix(ImageAugParams(params.resize, params.resize_dims, (0, 0, new_w, new_h),
                                                     False, 0.0), (h, w))
        rest = mat @ np.linalg.inv(resize_mat)
        if params.flip or params.rotate != 0.0:
            out = cv2.warpAffine(resized, rest[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:  # a pure integer crop: copy, padding with zeros where the crop leaves the image
            out = np.zeros((y1 - y0, x1 - x0, *resized.shape[2:]), resized.dtype)
            sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, new_h), max(x0, 0), min(x1, new_w)
            if sy1 > sy0 and sx1 > sx0:
                out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = resized[sy0:sy1, sx0:sx1]
        if out.ndim == 2 and img.ndim == 3:
            out = out[..., None]
        return out, mat

    def _camera_matrix(self, cam_info: Mapping[str, Any], key: str, cam: str) -> np.ndarray:
        if key not in cam_info:
            raise KeyError(f"BEVDetImageAug: results['images'][{cam!r}] has no {key!r} (keys: {sorted(cam_info)}); "
                           f'create the infos with tools/create_data.py nuscenes')
        mat = np.asarray(cam_info[key], np.float64)
        if key == 'cam2img' and mat.shape in ((3, 3), (3, 4)):
            full = np.eye(4)
            full[:mat.shape[0], :mat.shape[1]] = mat
            mat = full
        if mat.shape != (4, 4) or not np.isfinite(mat).all():
            raise ValueError(f"BEVDetImageAug: results['images'][{cam!r}][{key!r}] must be a finite "
                             f'{"3x3 or " if key == "cam2img" else ""}4x4 matrix, got shape {mat.shape}')
        return mat

    def transform(self, results: dict) -> dict:
        for key, hint in (('img', 'put LoadMultiViewImageFromFiles before BEVDetImageAug'),
                          ('images', 'the dataset needs modality=dict(use_camera=True)')):
            if key not in results:
                raise KeyError(f'BEVDetImageAug: results has no {key!r} ({hint}); keys: {sorted(results)}')
        imgs, images = results['img'], results['images']
        if not isinstance(imgs, (list, tuple)):
            raise TypeError(f"BEVDetImageAug: results['img'] must be a list of per-camera HxWxC arrays "
                            f'(LoadMultiViewImageFromFiles), got {type(imgs).__name__}')
        cams = list(images)
        if len(imgs) != len(cams):
            raise ValueError(f"BEVDetImageAug: {len(imgs)} images but {len(cams)} cameras in results['images'] "
                             f'({cams}); multi-sweep loading (num_ref_frames > 0) is not supported')
        out_imgs: List[np.ndarray] = []
        aug_mats, cam2imgs, cam2egos = [], [], []
        for cam, img in zip(cams, imgs):
            cam_info = images[cam]
            cam2imgs.append(self._camera_matrix(cam_info, 'cam2img', cam))
            cam2egos.append(self._camera_matrix(cam_info, self.cam2ego_key, cam))
            h, w = img.shape[:2]
            if self.src_size is not None and (h, w) != self.src_size:
                raise ValueError(f'BEVDetImageAug: image of {cam} is {h}x{w} but data_config src_size is '
                                 f'{self.src_size[0]}x{self.src_size[1]}')
            out, mat = self.augment_image(img, self.sample_augmentation(h, w))
            out_imgs.append(out)
            aug_mats.append(_embed_affine(mat))
        results['img'] = out_imgs
        results['img_shape'] = self.input_size
        results['pad_shape'] = self.input_size
        results['img_aug_matrix'] = np.stack(aug_mats).astype(np.float32)
        results['cam2img'] = np.stack(cam2imgs).astype(np.float32)
        results['cam2ego'] = np.stack(cam2egos).astype(np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(input_size={self.input_size}, src_size={self.src_size}, '
                f'resize={self.resize_range}, rot={self.rot_range}, flip={self.flip}, crop_h={self.crop_h_range}, '
                f'resize_test={self.resize_test}, is_train={self.is_train}, cam2ego_key={self.cam2ego_key!r})')


def project_ego_points(points: np.ndarray, cam2img: np.ndarray, cam2ego: np.ndarray,
                       img_aug_matrix: np.ndarray) -> np.ndarray:
    """Ego-frame points ``(M, 3)`` -> ``(M, 3)`` ``(u', v', depth)`` in one camera's augmented image.

    ``cam2img``, ``cam2ego``, ``img_aug_matrix``: that camera's 4x4 matrices as :class:`BEVDetImageAug`
    writes them. Points behind the camera get a negative depth (their ``u', v'`` are meaningless).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], 1)
    cam = hom @ np.linalg.inv(np.asarray(cam2ego, np.float64)).T
    img = cam @ np.asarray(cam2img, np.float64).T
    depth = img[:, 2:3]
    uvd = np.concatenate([img[:, :2] / depth, depth, np.ones_like(depth)], 1)
    return (uvd @ np.asarray(img_aug_matrix, np.float64).T)[:, :3]


# ----------------------------------------------------------------------------------------------------
# BEV augmentation


def bev_aug_matrix(rotate_deg: float, scale: float, flip_dx: bool, flip_dy: bool) -> np.ndarray:
    """BEVDet's BDA as a 4x4 float64 matrix ``flip @ scale @ rot_z`` on ego points ``(x, y, z, 1)``.

    ``rot_z`` turns counter-clockwise seen from above (+x towards +y), as mmdet3d's
    ``LiDARInstance3DBoxes.rotate`` with a positive angle; ``flip_dx`` negates x, ``flip_dy`` negates y.
    """
    a = math.radians(rotate_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0 if flip_dx else 1.0, -1.0 if flip_dy else 1.0, 1.0])
    mat = np.eye(4)
    mat[:3, :3] = flip @ (scale * np.eye(3)) @ rot
    return mat


@TRANSFORMS.register_module()
class BEVDetBEVAug(BaseTransform):
    """BEVDet's BEV data augmentation (BDA) of the ego-frame ground truth.

    Training samples a rotation ``U(rot_lim)`` degrees, a scale ``U(scale_lim)`` and flips of x / y with
    probabilities ``flip_dx_ratio`` / ``flip_dy_ratio``; the boxes are rotated, scaled (centre, size,
    velocity), then flipped (yaw ``pi - yaw`` for x, ``-yaw`` for y; velocity flips with the axis), using
    ``LiDARInstance3DBoxes``' own methods. ``bev_aug_matrix`` records the same map. In test mode nothing
    is sampled, boxes (if any) stay as they are and ``bev_aug_matrix`` is the identity.

    Args:
        bda_aug_conf: ``rot_lim`` (low, high) degrees, ``scale_lim`` (low, high), ``flip_dx_ratio``,
            ``flip_dy_ratio`` in [0, 1].
        is_train: sample (True) or identity (False).

    Required keys: ``gt_bboxes_3d`` (``LiDARInstance3DBoxes`` in the ego frame; training only). Modified:
    ``gt_bboxes_3d``, ``points`` (if present). Added: ``bev_aug_matrix`` (4x4 float32).
    """

    def __init__(self, bda_aug_conf: Optional[Mapping[str, Any]] = None, is_train: bool = True) -> None:
        owner = 'BEVDetBEVAug bda_aug_conf'
        conf = dict(BEVDET_BDA_AUG_CONF if bda_aug_conf is None else bda_aug_conf)
        _check_keys(conf, _BDA_KEYS, (), owner)
        self.rot_lim = _pair(conf, 'rot_lim', owner)
        self.scale_lim = _pair(conf, 'scale_lim', owner)
        if self.scale_lim[0] <= 0:
            raise ValueError(f'{owner}["scale_lim"] must be positive, got {self.scale_lim}')
        self.flip_dx_ratio = float(conf['flip_dx_ratio'])
        self.flip_dy_ratio = float(conf['flip_dy_ratio'])
        for key in ('flip_dx_ratio', 'flip_dy_ratio'):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f'{owner}[{key!r}] must lie in [0, 1], got {conf[key]!r}')
        self.is_train = bool(is_train)

    def sample_augmentation(self) -> Tuple[float, float, bool, bool]:
        """``(rotate_deg, scale, flip_dx, flip_dy)``, BEVDet's ``sample_bda_augmentation``."""
        if not self.is_train:
            return 0.0, 1.0, False, False
        rotate = float(np.random.uniform(*self.rot_lim))
        scale = float(np.random.uniform(*self.scale_lim))
        flip_dx = bool(np.random.uniform() < self.flip_dx_ratio)
        flip_dy = bool(np.random.uniform() < self.flip_dy_ratio)
        return rotate, scale, flip_dx, flip_dy

    @staticmethod
    def apply_to_boxes(boxes: LiDARInstance3DBoxes, rotate_deg: float, scale: float, flip_dx: bool,
                       flip_dy: bool) -> None:
        """Apply the BDA to ``boxes`` in place (mmdet3d's box methods; velocity columns included)."""
        if not isinstance(boxes, LiDARInstance3DBoxes):
            raise TypeError(f'BEVDetBEVAug: gt_bboxes_3d must be LiDARInstance3DBoxes in the ego frame (x forward, '
                            f'y left, z up), got {type(boxes).__name__}')
        # rotate(): positive angle is counter-clockwise from above (points @ rot_mat_T with rot_mat_T =
        # [[c, s], [-s, c]]); it adds the angle to yaw and rotates (vx, vy) too.
        boxes.rotate(math.radians(rotate_deg))
        boxes.scale(scale)  # x, y, z, sizes and velocity
        if flip_dx:
            boxes.flip('vertical')  # mmdet3d's 'vertical' BEV flip negates x (and vx): yaw -> pi - yaw
        if flip_dy:
            boxes.flip('horizontal')  # negates y (and vy): yaw -> -yaw
        boxes.limit_yaw(offset=0.5, period=2 * np.pi)

    def transform(self, results: dict) -> dict:
        rotate, scale, flip_dx, flip_dy = self.sample_augmentation()
        mat = bev_aug_matrix(rotate, scale, flip_dx, flip_dy)
        if 'gt_bboxes_3d' in results:
            if self.is_train:
                self.apply_to_boxes(results['gt_bboxes_3d'], rotate, scale, flip_dx, flip_dy)
        elif self.is_train:
            raise KeyError(f"BEVDetBEVAug: results has no 'gt_bboxes_3d' (put LoadAnnotations3D before it, or use "
                           f'is_train=False); keys: {sorted(results)}')
        points = results.get('points')
        if points is not None and self.is_train:
            lin = torch.as_tensor(mat[:3, :3].T, dtype=points.tensor.dtype, device=points.tensor.device)
            points.tensor[:, :3] = points.tensor[:, :3] @ lin
        results['bev_aug_matrix'] = mat.astype(np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(rot_lim={self.rot_lim}, scale_lim={self.scale_lim}, '
                f'flip_dx_ratio={self.flip_dx_ratio}, flip_dy_ratio={self.flip_dy_ratio}, is_train={self.is_train})')


# ----------------------------------------------------------------------------------------------------
# depth supervision


@TRANSFORMS.register_module()
class BEVDetDepthTarget(BaseTransform):
    """LiDAR depth targets per image-feature pixel (BEVDepth-style supervision of the LSS depth).

    Takes the key frame's LiDAR points to the ego frame (``lidar_points['lidar2ego']`` of the infos),
    projects them into every augmented camera image with the matrices :class:`BEVDetImageAug` wrote, and
    keeps, per ``downsample x downsample`` patch of the network input (one pixel of the feature map the
    view transformer receives), the median depth of the points in it. The median, not the nearest point
    (BEVDepth's min pooling): a patch that shows an object usually also holds ground points in front of it,
    and the nearest of those would teach the object's pixels a depth short of the object. Run it after
    ``LoadPointsFromFile`` and ``BEVDetImageAug`` and *before* :class:`BEVDetBEVAug`, which would move the points.

    Args:
        downsample: stride of the view transformer's input features (16 in BEVDet).
        depth_range: ``(min, max)`` depth in metres; points outside are ignored.

    Required keys: ``points`` (``LiDARPoints`` in the LiDAR frame), ``lidar_points['lidar2ego']``,
    ``img_aug_matrix`` / ``cam2img`` / ``cam2ego`` ``(N, 4, 4)``, ``img_shape``. Added: ``gt_depth``
    ``(N, H // downsample, W // downsample)`` float32, 0 where no point falls. Keep it through
    ``Pack3DDetInputs``' ``meta_keys``.
    """

    def __init__(self, downsample: int = 16, depth_range: Tuple[float, float] = (1.0, 60.0)) -> None:
        if int(downsample) < 1:
            raise ValueError(f'BEVDetDepthTarget: downsample must be a positive integer, got {downsample!r}')
        lo, hi = (float(v) for v in depth_range)
        if not 0.0 <= lo < hi:
            raise ValueError(f'BEVDetDepthTarget: depth_range must be (min, max) with 0 <= min < max, '
                             f'got {depth_range!r}')
        self.downsample = int(downsample)
        self.depth_range = (lo, hi)

    def transform(self, results: dict) -> dict:
        for key, hint in (('points', 'put LoadPointsFromFile(coord_type="LIDAR") before it'),
                          ('img_aug_matrix', 'put BEVDetImageAug before it'),
                          ('lidar_points', 'the infos need lidar_points (tools/create_data.py)')):
            if key not in results:
                raise KeyError(f'BEVDetDepthTarget: results has no {key!r} ({hint}); keys: {sorted(results)}')
        if 'bev_aug_matrix' in results:
            raise RuntimeError('BEVDetDepthTarget must run before BEVDetBEVAug (the BEV augmentation moves the '
                               'points away from the cameras\' frame)')
        lidar2ego = np.asarray(results['lidar_points'].get('lidar2ego', np.eye(4)), np.float64)
        pts = results['points'].tensor[:, :3].numpy().astype(np.float64)
        pts_ego = pts @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
        h, w = results['img_shape'][:2]
        fh, fw = h // self.downsample, w // self.downsample
        lo, hi = self.depth_range
        depth = np.zeros((len(results['img_aug_matrix']), fh, fw), np.float32)
        for cam, (aug, intr, c2e) in enumerate(zip(results['img_aug_matrix'], results['cam2img'],
                                                   results['cam2ego'])):
            uvd = project_ego_points(pts_ego, intr, c2e, aug)
            col = np.floor(uvd[:, 0] / self.downsample).astype(np.int64)
            row = np.floor(uvd[:, 1] / self.downsample).astype(np.int64)
            ok = (uvd[:, 2] >= lo) & (uvd[:, 2] < hi) & (col >= 0) & (col < fw) & (row >= 0) & (row < fh)
            if not ok.any():
                continue
            flat = row[ok] * fw + col[ok]
            order = np.lexsort((uvd[ok, 2], flat))  # by cell, then by depth
            cells, first, counts = np.unique(flat[order], return_index=True, return_counts=True)
            sorted_depth = uvd[ok, 2][order]
            lower = sorted_depth[first + (counts - 1) // 2]
            upper = sorted_depth[first + counts // 2]
            depth[cam].flat[cells] = 0.5 * (lower + upper)
        results['gt_depth'] = depth
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(downsample={self.downsample}, depth_range={self.depth_range})'
