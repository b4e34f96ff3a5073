"""Synthetic Cityscapes: street scenes written in the real Cityscapes layout (``gtFine`` + ``leftImg8bit``).

What is written (``<root>`` = ``out_dir``)::

    <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png       RGB image (H, W)
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png        uint8 official label ids
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   uint8 train ids, 255 = ignore
    <root>/synthetic_cityscapes.json                                                 parameters + statistics

``labelTrainIds`` is what ``cityscapesscripts``' ``createTrainIdLabelImgs`` (and mmseg's
``tools/dataset_converters/cityscapes.py``) would derive from the labelIds: every label whose official
``trainId`` is 255 or -1 (``unlabeled``, ``ego vehicle``, ``rectification border``, ``static``, ...) becomes
255, which mmseg's ``CityscapesDataset`` / ``IoUMetric`` ignore. Cities and file stems follow the real
splits (train cities for ``train``, val cities for ``val``, the 20th frame ``000019`` of each snippet).

A scene: sky on top; a road converging to a vanishing point on the horizon with lane markings, car shadows
and cars; sidewalks (optionally terrain) on both sides with poles carrying traffic signs, pedestrians and
static clutter (ignored label); building facades with windows whose roof and base lines run to the same
vanishing point; trees in front of them; optionally the ego vehicle's bonnet and a rectification border
(both ignored). Objects are painted far to near, so nearer ones occlude. Every region has its own colour
distribution and texture, varied per image and per object, plus global lighting and sensor noise.

Every random draw comes from :func:`~.common.rng_for` keyed by ``(seed, split, image index)``: a seed gives
byte-identical files, independent of the number of images generated.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.atomic_io import atomic_write_json
from .common import (
    add_sensor_noise,
    polygon_mask,
    progress,
    random_shape_polygon,
    rng_for,
    shape_polygon,
    textured_background,
    write_image,
)

__all__ = [
    'CITYSCAPES_LABELS',
    'CITYSCAPES_TRAIN_CLASSES',
    'DRAWN_LABELS',
    'CityscapesLabel',
    'SyntheticCityscapesConfig',
    'SyntheticCityscapesSummary',
    'generate_synthetic_cityscapes',
    'label_ids_to_train_ids',
    'render_street_scene',
    'synthetic_cityscapes_files',
]

PathLike = Union[str, Path]
MARKER_FILE = 'synthetic_cityscapes.json'
GENERATOR_VERSION = 1
SPLITS = ('train', 'val')


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label table (``cityscapesscripts.helpers.labels``)."""

    name: str
    id: int  # value in *_gtFine_labelIds.png
    train_id: int  # value in *_gtFine_labelTrainIds.png; 255 = ignored in training and evaluation
    category: str
    color: Tuple[int, int, int]  # RGB of *_gtFine_color.png


# The 34 labels with a pixel value (the table's 'license plate', id -1, never appears in labelIds images).
CITYSCAPES_LABELS: Tuple[CityscapesLabel, ...] = (
    CityscapesLabel('unlabeled', 0, 255, 'void', (0, 0, 0)),
    CityscapesLabel('ego vehicle', 1, 255, 'void', (0, 0, 0)),
    CityscapesLabel('rectification border', 2, 255, 'void', (0, 0, 0)),
    CityscapesLabel('out of roi', 3, 255, 'void', (0, 0, 0)),
    CityscapesLabel('static', 4, 255, 'void', (0, 0, 0)),
    CityscapesLabel('dynamic', 5, 255, 'void', (111, 74, 0)),
    CityscapesLabel('ground', 6, 255, 'void', (81, 0, 81)),
    CityscapesLabel('road', 7, 0, 'flat', (128, 64, 128)),
    CityscapesLabel('sidewalk', 8, 1, 'flat', (244, 35, 232)),
    CityscapesLabel('parking', 9, 255, 'flat', (250, 170, 160)),
    CityscapesLabel('rail track', 10, 255, 'flat', (230, 150, 140)),
    CityscapesLabel('building', 11, 2, 'construction', (70, 70, 70)),
    CityscapesLabel('wall', 12, 3, 'construction', (102, 102, 156)),
    CityscapesLabel('fence', 13, 4, 'construction', (190, 153, 153)),
    CityscapesLabel('guard rail', 14, 255, 'construction', (180, 165, 180)),
    CityscapesLabel('bridge', 15, 255, 'construction', (150, 100, 100)),
    CityscapesLabel('tunnel', 16, 255, 'construction', (150, 120, 90)),
    CityscapesLabel('pole', 17, 5, 'object', (153, 153, 153)),
    CityscapesLabel('polegroup', 18, 255, 'object', (153, 153, 153)),
    CityscapesLabel('traffic light', 19, 6, 'object', (250, 170, 30)),
    CityscapesLabel('traffic sign', 20, 7, 'object', (220, 220, 0)),
    CityscapesLabel('vegetation', 21, 8, 'nature', (107, 142, 35)),
    CityscapesLabel('terrain', 22, 9, 'nature', (152, 251, 152)),
    CityscapesLabel('sky', 23, 10, 'sky', (70, 130, 180)),
    CityscapesLabel('person', 24, 11, 'human', (220, 20, 60)),
    CityscapesLabel('rider', 25, 12, 'human', (255, 0, 0)),
    CityscapesLabel('car', 26, 13, 'vehicle', (0, 0, 142)),
    CityscapesLabel('truck', 27, 14, 'vehicle', (0, 0, 70)),
    CityscapesLabel('bus', 28, 15, 'vehicle', (0, 60, 100)),
    CityscapesLabel('caravan', 29, 255, 'vehicle', (0, 0, 90)),
    CityscapesLabel('trailer', 30, 255, 'vehicle', (0, 0, 110)),
    CityscapesLabel('train', 31, 16, 'vehicle', (0, 80, 100)),
    CityscapesLabel('motorcycle', 32, 17, 'vehicle', (0, 0, 230)),
    CityscapesLabel('bicycle', 33, 18, 'vehicle', (119, 11, 32)),
)
LABEL_ID: Dict[str, int] = {label.name: label.id for label in CITYSCAPES_LABELS}
#: the 19 evaluated classes in trainId order (mmseg's ``CityscapesDataset.METAINFO['classes']``)
CITYSCAPES_TRAIN_CLASSES: Tuple[str, ...] = tuple(
    label.name for label in sorted(CITYSCAPES_LABELS, key=lambda lb: lb.train_id) if label.train_id != 255)
#: labels this generator paints (the ignored ones test that 255 is handled)
DRAWN_LABELS: Tuple[str, ...] = ('road', 'sidewalk', 'building', 'pole', 'traffic sign', 'vegetation', 'terrain',
                                 'sky', 'person', 'car', 'ego vehicle', 'rectification border', 'static')

# labelId -> trainId for every uint8 value; values outside the table are ignored as well.
_TRAIN_ID_LUT = np.full(256, 255, np.uint8)
for _label in CITYSCAPES_LABELS:
    _TRAIN_ID_LUT[_label.id] = _label.train_id

# The real splits' cities (train: 18, val: 3).
TRAIN_CITIES: Tuple[str, ...] = (
    'aachen', 'bochum', 'bremen', 'cologne', 'darmstadt', 'dusseldorf', 'erfurt', 'hamburg', 'hanover', 'jena',
    'krefeld', 'monchengladbach', 'strasbourg', 'stuttgart', 'tubingen', 'ulm', 'weimar', 'zurich')
VAL_CITIES: Tuple[str, ...] = ('frankfurt', 'lindau', 'munster')
_CITIES = {'train': TRAIN_CITIES, 'val': VAL_CITIES}
ANNOTATED_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """``uint8 (H, W)`` labelIds -> ``uint8 (H, W)`` trainIds (255 for every ignored or unknown id)."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        raise ValueError(f'label_ids_to_train_ids: expected a uint8 labelIds map, got {label_ids.dtype}')
    return _TRAIN_ID_LUT[label_ids]


# ----------------------------------------------------------------------------------------------------
# configuration and file names


@dataclass
class SyntheticCityscapesConfig:
    """What to generate. ``image_size`` is ``(height, width)``; the real set is 1024 x 2048."""

    out_dir: PathLike
    num_train: int = 300
    num_val: int = 50
    image_size: Tuple[int, int] = (128, 256)
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ('num_train', 'num_val', 'seed'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'SyntheticCityscapesConfig.{name} must be a non-negative int, got {value!r}')
        if self.num_train + self.num_val == 0:
            raise ValueError('SyntheticCityscapesConfig: num_train and num_val are both 0, nothing to generate')
        size = tuple(self.image_size)
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in size):
            raise ValueError(f'SyntheticCityscapesConfig.image_size must be (height, width) ints, '
                             f'got {self.image_size!r}')
        if size[0] < 32 or size[1] < 32:
            raise ValueError(f'SyntheticCityscapesConfig.image_size must be at least 32 x 32, got {size}')


def image_stem(split: str, index: int) -> Tuple[str, str]:
    """``(city, '<city>_<seq>_<frame>')`` of image ``index`` of ``split`` (cities in turn)."""
    if split not in _CITIES:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    cities = _CITIES[split]
    city = cities[index % len(cities)]
    return city, f'{city}_{index // len(cities):06d}_{ANNOTATED_FRAME:06d}'


def synthetic_cityscapes_files(root: PathLike, split: str, index: int) -> Dict[str, Path]:
    """Paths of image ``index`` of ``split``: keys ``image``, ``label_ids``, ``train_ids``."""
    city, stem = image_stem(split, index)
    root = Path(root)
    gt = root / 'gtFine' / split / city
    return {'image': root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png',
            'label_ids': gt / f'{stem}_gtFine_labelIds.png',
            'train_ids': gt / f'{stem}_gtFine_labelTrainIds.png'}


# ----------------------------------------------------------------------------------------------------
# rendering

# Mean RGB colour of each painted label; every image and object jitters it.
_BASE_RGB: Dict[str, Tuple[float, float, float]] = {
    'road': (82, 80, 86), 'sidewalk': (168, 156, 160), 'terrain': (150, 150, 90), 'vegetation': (62, 110, 45),
    'pole': (115, 115, 120), 'static': (95, 75, 50), 'ego vehicle': (30, 32, 36), 'rectification border': (0, 0, 0),
}
_BUILDING_RGB = ((150, 150, 148), (185, 165, 135), (150, 85, 65), (110, 112, 125), (200, 195, 185))
_SIGN_RGB = ((200, 35, 35), (30, 70, 190), (230, 200, 30), (235, 235, 235))
_SKY_TOP_RGB = (90, 140, 215)


class _Canvas:
    """The image being painted ``(H, W, 3)`` float32 RGB and its labelIds ``(H, W)`` uint8.

    Two shared zero-mean noise fields give every region a texture: ``grain`` (per pixel) and ``blotch``
    (smooth, about 8 px); a region's pixels are ``colour + a * grain + b * blotch``.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.labels = np.zeros((height, width), np.uint8)  # 0 = unlabeled until painted
        self.grain = rng.normal(0.0, 1.0, (height, width, 1)).astype(np.float32)
        self.blotch = (textured_background(rng, height, width, base_color=(128, 128, 128), gradient=0.0,
                                           blotch=30.0, blotch_scale=8).astype(np.float32) - 128.0) / 30.0

    def jitter(self, rgb: Sequence[float], amount: float = 12.0) -> np.ndarray:
        """``rgb`` with independent per-channel noise of ``amount`` grey levels."""
        return np.asarray(rgb, np.float32) + self.rng.normal(0.0, amount, 3).astype(np.float32)

    def paint(self, polygon: np.ndarray, label: Optional[str], rgb: Sequence[float], grain: float = 4.0,
              blotch: float = 6.0) -> None:
        """Fill ``polygon`` ``(K, 2)`` with a textured ``rgb``; ``label`` None keeps the labels (decoration)."""
        # rasterise only the polygon's bounding box: most shapes are small and full-image masks dominate
        # the generation time otherwise (an integer offset keeps polygon_mask's pixel-centre rule)
        lo, hi = np.floor(polygon.min(axis=0)), np.ceil(polygon.max(axis=0)) + 1
        x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
        x1, y1 = min(self.w, int(hi[0])), min(self.h, int(hi[1]))
        if x1 <= x0 or y1 <= y0:
            return
        mask = polygon_mask(polygon - np.array([x0, y0], np.float64), y1 - y0, x1 - x0)
        self.fill(mask, label, rgb, grain, blotch, (slice(y0, y1), slice(x0, x1)))

    def fill(self, mask: np.ndarray, label: Optional[str], rgb: Sequence[float], grain: float = 4.0,
             blotch: float = 6.0, window: Tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Fill the ``bool`` ``mask`` of the image region ``window`` (default: all of it) like :meth:`paint`."""
        if not mask.any():
            return
        texture = grain * self.grain[window][mask] + blotch * self.blotch[window][mask]
        self.image[window][mask] = np.asarray(rgb, np.float32)[None, :] + texture
        if label is not None:
            self.labels[window][mask] = LABEL_ID[label]


def _quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle ``[x0, x1] x [y0, y1]`` as a polygon ``(4, 2)``."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


@dataclass
class _Street:
    """Perspective of one scene: lines through the vanishing point ``(xv, yh)``.

    A line of slope ``k`` on side ``s`` (-1 left, +1 right) holds the points ``(xv + s * u, yh + k * u)``;
    the road edge, the sidewalk's outer edge and the building base are such lines (``k > 0``), roof
    lines too (``k < 0``).
    """

    h: int
    w: int
    yh: float
    xv: float
    road: Tuple[float, float]  # road-edge slope per side (left, right)
    curb: Tuple[float, float]  # sidewalk outer-edge slope per side
    base: Tuple[float, float]  # building-base slope per side (terrain lies between curb and base)
    terrain: Tuple[bool, bool]

    def point(self, side: int, u: float, slope: float) -> Tuple[float, float]:
        return self.xv + (-1 if side == 0 else 1) * u, self.yh + slope * u

    def wedge(self, side: int, slope_a: float, slope_b: float) -> np.ndarray:
        """The region between two lines of one side, from the vanishing point to beyond the image."""
        far = 4.0 * (self.w + self.h)
        return np.array([[self.xv, self.yh], self.point(side, far, slope_a), self.point(side, far, slope_b)])

    def scale(self, y: float) -> float:
        """Apparent size at image row ``y`` relative to the bottom row (0 at the horizon)."""
        return max(0.0, (y - self.yh) / (self.h - self.yh))

    def x_between(self, side: int, y: float, slope_a: float, slope_b: float, t: float) -> float:
        """x at row ``y`` a fraction ``t`` of the way from line ``slope_a`` to line ``slope_b``."""
        dy = y - self.yh
        u = (1 - t) * dy / slope_a + t * dy / slope_b
        return self.xv + (-1 if side == 0 else 1) * u


def _paint_sky_and_far(canvas: _Canvas, st: _Street) -> None:
    rng, h, w = canvas.rng, canvas.h, canvas.w
    overcast = rng.random() < 0.3
    top = canvas.jitter((185, 190, 198) if overcast else _SKY_TOP_RGB, 10)
    low = canvas.jitter((215, 218, 222) if overcast else (190, 210, 235), 8)
    t = np.clip(np.arange(h, dtype=np.float32) / max(st.yh, 1.0), 0, 1)[:, None, None]
    canvas.image[:] = top * (1 - t) + low * t + 3.0 * canvas.blotch
    canvas.labels[:] = LABEL_ID['sky']
    # distant blocks at the vanishing point close the street
    x = st.xv - w * rng.uniform(0.08, 0.14)
    x_end = st.xv + w * rng.uniform(0.08, 0.14)
    while x < x_end:
        bw = w * rng.uniform(0.02, 0.05)
        top_y = st.yh - h * rng.uniform(0.03, 0.12)
        canvas.paint(_quad(x, top_y, x + bw, st.yh + 1), 'building', canvas.jitter(_BUILDING_RGB[0], 20) * 0.9)
        x += bw


def _paint_ground(canvas: _Canvas, st: _Street) -> None:
    """Road, sidewalks and terrain, over the lower ends of the facades."""
    rng = canvas.rng
    road_rgb = canvas.jitter(_BASE_RGB['road'], 8)
    for side in (0, 1):
        if st.terrain[side]:
            canvas.paint(st.wedge(side, st.curb[side], st.base[side]), 'terrain',
                         canvas.jitter(_BASE_RGB['terrain'], 12), grain=8, blotch=12)
        canvas.paint(st.wedge(side, st.road[side], st.curb[side]), 'sidewalk',
                     canvas.jitter(_BASE_RGB['sidewalk'], 10), grain=5, blotch=6)
    road = np.array([[st.xv, st.yh], st.point(0, 4.0 * canvas.w, st.road[0]),
                     st.point(1, 4.0 * canvas.w, st.road[1])])
    canvas.paint(road, 'road', road_rgb, grain=5, blotch=5)
    # dashed centre line: road label, as in Cityscapes
    lane_t = rng.uniform(0.35, 0.65)
    y = st.yh + 2.0
    while y < canvas.h:
        dash = max(2.0, 0.25 * (y - st.yh))
        y1 = min(y + dash, canvas.h + dash)
        half = [max(0.4, 0.012 * canvas.w * st.scale(v)) for v in (y, y1)]
        xs = [st.x_between(0, v, st.road[0], -st.road[1], lane_t) for v in (y, y1)]
        quad = np.array([[xs[0] - half[0], y], [xs[0] + half[0], y], [xs[1] + half[1], y1], [xs[1] - half[1], y1]])
        canvas.paint(quad, None, canvas.jitter((225, 225, 215), 5), grain=3, blotch=2)
        y = y1 + dash


def _paint_facades(canvas: _Canvas, st: _Street, side: int) -> None:
    """Buildings along one side: each a quad between its roof line and the base line, with windows."""
    rng, w = canvas.rng, canvas.w
    edge = st.xv if side == 0 else w - st.xv  # facades beyond u = edge are outside the image
    u = w * rng.uniform(0.03, 0.09)
    while u < edge:
        width = u * rng.uniform(0.35, 0.9) + 0.03 * w
        if rng.random() < 0.15:  # a gap: sky or the trees behind show through
            u += width * 0.5
            continue
        roof = -rng.uniform(0.3, 1.6) * (st.yh / max(edge, 1.0))
        corners = [st.point(side, u, roof), st.point(side, u + width, roof),
                   st.point(side, u + width, st.base[side]), st.point(side, u, st.base[side])]
        rgb = canvas.jitter(_BUILDING_RGB[rng.integers(len(_BUILDING_RGB))], 14)
        canvas.paint(np.array(corners), 'building', rgb, grain=4, blotch=8)
        u += width
        if width < 6.0:  # windows of a far, narrow facade would be sub-pixel
            continue
        # windows: a grid of darker quads following the facade's perspective (still 'building')
        u0 = u - width
        cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 7))
        win_rgb = canvas.jitter((55, 65, 80), 10)
        for c in range(cols):
            ua, ub = u0 + width * (c + 0.25) / cols, u0 + width * (c + 0.75) / cols
            for r in range(rows):
                fa, fb = (r + 0.2) / (rows + 0.5), (r + 0.7) / (rows + 0.5)
                pts = []
                for uu, f in ((ua, fa), (ub, fa), (ub, fb), (ua, fb)):
                    x, y_roof = st.point(side, uu, roof)
                    _, y_base = st.point(side, uu, st.base[side])
                    pts.append((x, y_roof + f * (y_base - y_roof) * 0.85))
                canvas.paint(np.array(pts), None, win_rgb, grain=3, blotch=4)


class _Thing(NamedTuple):
    depth_y: float  # image row of the object's foot; painted in increasing order (far first)
    kind: str
    side: int
    x: float


def _paint_tree(canvas: _Canvas, st: _Street, x: float, y: float) -> None:
    rng, s = canvas.rng, st.scale(y)
    height = canvas.h * s * rng.uniform(1.1, 1.8)
    trunk_w = max(1.5, 0.012 * canvas.w * s)
    canvas.paint(_quad(x - trunk_w, y - 0.55 * height, x + trunk_w, y), 'vegetation',
                 canvas.jitter((80, 60, 45), 8), grain=4, blotch=3)
    rgb = canvas.jitter(_BASE_RGB['vegetation'], 12)
    crown_y, radius = y - 0.65 * height, 0.3 * height
    for _ in range(int(rng.integers(2, 5))):  # a crown of overlapping blobs
        centre = (x + rng.normal(0, 0.35) * radius, crown_y + rng.normal(0, 0.25) * radius)
        kind = ('ellipse', 'polygon')[int(rng.integers(2))]
        blob = random_shape_polygon(rng, kind, centre, radius * rng.uniform(0.6, 1.0), max_aspect=1.4)
        canvas.paint(blob, 'vegetation', rgb * rng.uniform(0.85, 1.15), grain=14, blotch=10)


def _paint_pole(canvas: _Canvas, st: _Street, x: float, y: float) -> None:
    rng, s = canvas.rng, st.scale(y)
    height = canvas.h * s * rng.uniform(0.9, 1.3)
    half = max(1.0, 0.011 * canvas.w * s * rng.uniform(0.8, 1.3))
    canvas.paint(_quad(x - half, y - height, x + half, y), 'pole', canvas.jitter(_BASE_RGB['pole'], 15), grain=3,
                 blotch=3)
    if rng.random() < 0.8:  # a traffic sign near the top, facing the camera
        radius = max(2.0, 0.045 * canvas.w * s * rng.uniform(0.8, 1.3))
        kind = ('ellipse', 'triangle', 'rectangle', 'polygon')[int(rng.integers(4))]
        centre = (x, y - height + radius * 1.2)
        sign = shape_polygon(kind, centre, (radius, radius), sides=8 if kind == 'polygon' else 5)
        rgb = canvas.jitter(_SIGN_RGB[int(rng.integers(len(_SIGN_RGB)))], 12)
        canvas.paint(sign, 'traffic sign', rgb, grain=2, blotch=2)
        inner = shape_polygon(kind, centre, (radius * 0.55, radius * 0.55))
        canvas.paint(inner, None, canvas.jitter((240, 240, 240), 8), grain=2, blotch=1)


def _paint_person(canvas: _Canvas, st: _Street, x: float, y: float) -> None:
    rng, s = canvas.rng, st.scale(y)
    height = canvas.h * s * rng.uniform(0.45, 0.6)
    half_w = height * rng.uniform(0.11, 0.15)
    coat = canvas.jitter(rng.uniform(20, 200, 3), 5)
    trousers = canvas.jitter(rng.uniform(20, 120, 3), 5)
    stride = rng.uniform(0.0, 0.5) * half_w
    for dx in (-1, 1):  # legs
        leg = np.array([[x + dx * 0.15 * half_w, y - 0.48 * height], [x + dx * 0.8 * half_w, y - 0.48 * height],
                        [x + dx * (0.8 * half_w + stride), y], [x + dx * (0.15 * half_w + stride), y]])
        canvas.paint(leg, 'person', trousers, grain=4, blotch=3)
    torso = shape_polygon('ellipse', (x, y - 0.66 * height), (half_w, 0.22 * height))
    canvas.paint(torso, 'person', coat, grain=4, blotch=3)
    for dx in (-1, 1):  # arms
        canvas.paint(_quad(x + dx * half_w * 0.75 - 0.18 * half_w, y - 0.84 * height,
                           x + dx * half_w * 0.75 + 0.18 * half_w, y - 0.46 * height), 'person', coat * 0.9)
    head = shape_polygon('ellipse', (x, y - 0.93 * height), (0.45 * half_w, 0.075 * height))
    canvas.paint(head, 'person', canvas.jitter((205, 160, 130), 25), grain=3, blotch=2)


def _paint_car(canvas: _Canvas, st: _Street, x: float, y: float) -> None:
    """A car seen from behind: shadow, body, cabin with windows, wheels and lights (all 'car' but the shadow)."""
    rng, s = canvas.rng, st.scale(y)
    width = canvas.w * s * rng.uniform(0.22, 0.32)
    height = width * rng.uniform(0.65, 0.9)
    shadow = shape_polygon('ellipse', (x, y), (0.6 * width, 0.06 * height))
    canvas.paint(shadow, None, canvas.jitter((35, 35, 38), 4), grain=3, blotch=2)
    body_rgb = canvas.jitter(rng.uniform(20, 230, 3) if rng.random() < 0.6 else (rng.uniform(40, 220),) * 3, 8)
    for dx in (-1, 1):  # wheels
        canvas.paint(_quad(x + dx * 0.42 * width - 0.08 * width, y - 0.18 * height,
                           x + dx * 0.42 * width + 0.08 * width, y), 'car', canvas.jitter((25, 25, 25), 4))
    body = np.array([[x - 0.5 * width, y - 0.12 * height], [x - 0.5 * width, y - 0.5 * height],
                     [x - 0.45 * width, y - 0.58 * height], [x + 0.45 * width, y - 0.58 * height],
                     [x + 0.5 * width, y - 0.5 * height], [x + 0.5 * width, y - 0.12 * height]])
    canvas.paint(body, 'car', body_rgb, grain=3, blotch=4)
    cabin = np.array([[x - 0.42 * width, y - 0.58 * height], [x - 0.33 * width, y - height],
                      [x + 0.33 * width, y - height], [x + 0.42 * width, y - 0.58 * height]])
    canvas.paint(cabin, 'car', body_rgb * 0.95, grain=3, blotch=4)
    window = np.array([[x - 0.36 * width, y - 0.62 * height], [x - 0.3 * width, y - 0.93 * height],
                       [x + 0.3 * width, y - 0.93 * height], [x + 0.36 * width, y - 0.62 * height]])
    canvas.paint(window, None, canvas.jitter((45, 55, 65), 8), grain=3, blotch=5)
    for dx in (-1, 1):  # rear lights
        canvas.paint(_quad(x + dx * 0.44 * width - 0.05 * width, y - 0.46 * height,
                           x + dx * 0.44 * width + 0.05 * width, y - 0.36 * height), None,
                     canvas.jitter((200, 30, 30), 10), grain=2, blotch=1)


def _paint_static(canvas: _Canvas, st: _Street, x: float, y: float) -> None:
    """Street furniture (bins, boxes): Cityscapes' 'static', ignored in training and evaluation."""
    rng, s = canvas.rng, st.scale(y)
    half = canvas.w * s * rng.uniform(0.015, 0.03)
    canvas.paint(_quad(x - half, y - half * rng.uniform(1.5, 2.5), x + half, y), 'static',
                 canvas.jitter(_BASE_RGB['static'], 25), grain=4, blotch=4)


_PAINTERS: Dict[str, Callable[[_Canvas, _Street, float, float], None]] = {
    'tree': _paint_tree, 'pole': _paint_pole, 'person': _paint_person, 'car': _paint_car, 'static': _paint_static}


def _place_things(rng: np.random.Generator, st: _Street) -> List[_Thing]:
    """Trees at the curb, poles / persons / static clutter on the sidewalks, cars on the road."""
    things: List[_Thing] = []
    lo = st.yh + 0.15 * (st.h - st.yh)
    for side in (0, 1):
        for kind, count, t_range, y_min in (('tree', rng.integers(0, 4), (0.8, 1.0), lo),
                                            ('pole', rng.integers(0, 3), (0.1, 0.35), st.yh + 0.3 * (st.h - st.yh)),
                                            ('person', rng.integers(0, 4), (0.2, 0.9), st.yh + 0.3 * (st.h - st.yh)),
                                            ('static', rng.integers(0, 2), (0.4, 0.9), lo)):
            for _ in range(int(count)):
                y = rng.uniform(y_min, st.h * 1.05)
                x = st.x_between(side, y, st.road[side], st.curb[side], rng.uniform(*t_range))
                things.append(_Thing(y, kind, side, x))
    for _ in range(int(rng.integers(1, 6))):
        y = rng.uniform(lo, st.h * 1.15)
        x = st.x_between(0, y, st.road[0], -st.road[1], rng.uniform(0.12, 0.88))
        things.append(_Thing(y, 'car', 0, x))
    return sorted(things, key=lambda t: t.depth_y)


def render_street_scene(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(image uint8 (H, W, 3) BGR, labelIds uint8 (H, W))``."""
    h, w = height, width
    yh = h * rng.uniform(0.38, 0.5)
    xv = w * rng.uniform(0.4, 0.6)
    depth = h - yh
    road = tuple(depth / (w * rng.uniform(0.3, 0.6)) for _ in range(2))
    curb = tuple(depth / (depth / r + w * rng.uniform(0.12, 0.35)) for r in road)
    terrain = tuple(bool(rng.random() < 0.4) for _ in range(2))
    base = tuple(depth / (depth / c + (w * rng.uniform(0.1, 0.3) if t else 0.0)) for c, t in zip(curb, terrain))
    st = _Street(h, w, yh, xv, road, curb, base, terrain)  # type: ignore[arg-type]
    canvas = _Canvas(rng, h, w)
    _paint_sky_and_far(canvas, st)
    for side in (0, 1):
        # the facades' lower parts below the horizon, also where a gap between facades shows the sky above
        canvas.paint(st.wedge(side, st.base[side], 0.0), 'building', canvas.jitter(_BUILDING_RGB[0], 10))
        _paint_facades(canvas, st, side)
    _paint_ground(canvas, st)
    for thing in _place_things(rng, st):
        _PAINTERS[thing.kind](canvas, st, thing.x, thing.depth_y)
    if rng.random() < 0.6:  # the ego vehicle's bonnet at the bottom
        hood_h = h * rng.uniform(0.04, 0.1)
        hood = shape_polygon('ellipse', (w * rng.uniform(0.45, 0.55), h + 0.4 * hood_h), (0.75 * w, 1.4 * hood_h))
        canvas.paint(hood, 'ego vehicle', canvas.jitter(_BASE_RGB['ego vehicle'], 8), grain=3, blotch=6)
    if rng.random() < 0.5:  # black rectification border along the left, right and bottom edges
        border = int(rng.integers(1, max(2, w // 128) + 1))
        mask = np.zeros((h, w), bool)
        mask[:, :border] = mask[:, w - border:] = mask[h - border:, :] = True
        canvas.fill(mask, 'rectification border', (0, 0, 0), grain=1, blotch=0)
    # global exposure and colour cast, then sensor noise and a slight blur
    lit = canvas.image * rng.uniform(0.75, 1.15) + rng.normal(0, 6, 3).astype(np.float32)
    rgb = np.clip(np.rint(lit), 0, 255).astype(np.uint8)
    bgr = add_sensor_noise(rng, np.ascontiguousarray(rgb[..., ::-1]), sigma=3.0)
    return bgr, canvas.labels


# ----------------------------------------------------------------------------------------------------
# driver


@dataclass
class SyntheticCityscapesSummary:
    """What :func:`generate_synthetic_cityscapes` wrote."""

    out_dir: Path
    num_images: Dict[str, int]
    #: fraction of all pixels per label name (train classes and the drawn ignored labels)
    pixel_fraction: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        """Per-label pixel share and train id, one line per drawn label."""
        rows = [f'{"label":<22}{"id":>4}{"trainId":>9}{"pixels":>9}']
        for label in CITYSCAPES_LABELS:
            if label.name in self.pixel_fraction:
                rows.append(f'{label.name:<22}{label.id:>4}{label.train_id:>9}'
                            f'{100 * self.pixel_fraction[label.name]:>8.2f}%')
        return '\n'.join(rows)


def _prepare_out_dir(cfg: SyntheticCityscapesConfig) -> None:
    """Refuse to clobber data we did not generate; clear an earlier (complete only with overwrite) one."""
    out = Path(cfg.out_dir)
    marker = out / MARKER_FILE
    existing = [p for p in ('leftImg8bit', 'gtFine', MARKER_FILE) if (out / p).exists()]
    if not existing:
        return
    if not marker.is_file():
        raise FileExistsError(f'{out} already holds {", ".join(existing)} but no {MARKER_FILE}: it does not look '
                              f'generated by this tool; refusing to overwrite it (choose another --out-dir)')
    try:
        complete = bool(json.loads(marker.read_text()).get('complete'))
    except (OSError, ValueError, AttributeError) as err:
        raise FileExistsError(f'{marker} is unreadable ({err}); remove {out} by hand if it is ours') from err
    if complete and not cfg.overwrite:
        raise FileExistsError(f'{out} already holds a complete synthetic Cityscapes ({MARKER_FILE}); pass '
                              f'--overwrite to regenerate it')
    # --overwrite, or an interrupted generation: start from an empty tree
    for p in ('leftImg8bit', 'gtFine'):
        if (out / p).exists():
            shutil.rmtree(out / p)


def generate_synthetic_cityscapes(cfg: SyntheticCityscapesConfig, progress_bar: bool = False,
                                  log: Optional[Callable[[str], None]] = None) -> SyntheticCityscapesSummary:
    """Write the data set described in the module docstring into ``cfg.out_dir``.

    The marker ``synthetic_cityscapes.json`` is written first with ``complete: false`` and rewritten with
    ``complete: true`` and the statistics last, so an interrupted run is recognised (and cleaned) next time.
    """
    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare_out_dir(cfg)
    height, width = (int(v) for v in cfg.image_size)
    params = {'generator': 'sparsevit_bevdet.synthetic.cityscapes', 'generator_version': GENERATOR_VERSION,
              'seed': cfg.seed, 'image_size': [height, width], 'num_images': {'train': cfg.num_train,
                                                                             'val': cfg.num_val}}
    atomic_write_json(out / MARKER_FILE, {**params, 'complete': False}, indent=1)
    counts = np.zeros(256, np.int64)
    jobs = [(split_idx, split, i) for split_idx, (split, n) in enumerate(zip(SPLITS, (cfg.num_train, cfg.num_val)))
            for i in range(n)]
    if log:
        log(f'rendering {cfg.num_train} train + {cfg.num_val} val images at {height}x{width} into {out}')
    for split_idx, split, i in progress(jobs, len(jobs), 'synthetic Cityscapes', enabled=progress_bar):
        image, label_ids = render_street_scene(rng_for(cfg.seed, split_idx, i), height, width)
        paths = synthetic_cityscapes_files(out, split, i)
        write_image(paths['image'], image)
        write_image(paths['label_ids'], label_ids)
        write_image(paths['train_ids'], label_ids_to_train_ids(label_ids))
        counts += np.bincount(label_ids.ravel(), minlength=256)
    total = max(int(counts.sum()), 1)
    fractions = {label.name: float(counts[label.id]) / total for label in CITYSCAPES_LABELS if counts[label.id]}
    summary = SyntheticCityscapesSummary(out, {'train': cfg.num_train, 'val': cfg.num_val}, fractions,
                                         time.perf_counter() - start)
    atomic_write_json(out / MARKER_FILE, {**params, 'complete': True, 'pixel_fraction': fractions}, indent=1)
    return summary
