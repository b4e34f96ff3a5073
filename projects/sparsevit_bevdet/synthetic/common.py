"""Building blocks shared by the synthetic 2D data generators (COCO, Cityscapes).

Conventions: images are ``uint8`` BGR arrays ``(H, W, 3)`` (OpenCV order, what ``cv2.imencode``
expects); polygons are ``float64`` arrays ``(K, 2)`` of ``(x, y)`` pixel coordinates, where pixel
``(i, j)`` covers ``[j, j + 1) x [i, i + 1)`` so its centre is ``(j + 0.5, i + 0.5)``; masks are
``bool`` arrays ``(H, W)``.

Determinism: every random draw comes from :func:`rng_for`, keyed by the dataset seed and the item's
own keys (split, image index, ...), so an item does not depend on how many items were drawn before
it, on worker order or on the number of workers.

Stable API (other generators import these names; do not rename):

- :func:`rng_for`, :func:`encode_image`, :func:`write_image`
- :data:`SHAPE_KINDS`, :func:`shape_polygon`, :func:`random_shape_polygon`
- :func:`polygon_mask`, :func:`fill_polygon`, :func:`mask_to_polygons`, :func:`mask_bbox`
- :func:`textured_background`, :func:`add_sensor_noise`
- :func:`progress`
"""
from __future__ import annotations

import math
import os
import sys
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import cv2
import numpy as np

from ..utils.atomic_io import atomic_write_bytes

__all__ = [
    'SHAPE_KINDS',
    'add_sensor_noise',
    'encode_image',
    'fill_polygon',
    'mask_bbox',
    'mask_to_polygons',
    'polygon_mask',
    'progress',
    'random_shape_polygon',
    'rng_for',
    'shape_polygon',
    'textured_background',
    'write_image',
]

PathLike = Union[str, os.PathLike]
T = TypeVar('T')

#: shape kinds understood by :func:`shape_polygon`
SHAPE_KINDS: Tuple[str, ...] = ('rectangle', 'ellipse', 'triangle', 'polygon', 'star')

# cv2.fillPoly takes integer vertices; a fixed-point shift keeps sub-pixel accuracy (1/16 px).
_FILL_SHIFT = 4


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``(seed, *keys)`` only (non-negative integers).

    ``np.random.default_rng([seed, *keys])`` hashes the whole sequence through ``SeedSequence``, so
    ``rng_for(0, 1)`` and ``rng_for(0, 2)`` are independent streams, and so are ``rng_for(0, 1, 2)``
    and ``rng_for(0, 12)``.
    """
    entropy = [seed, *keys]
    for value in entropy:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'rng_for: seed and keys must be non-negative integers, got {entropy!r}')
    return np.random.default_rng([int(v) for v in entropy])


def encode_image(image: np.ndarray, ext: str = '.jpg', quality: int = 92) -> bytes:
    """Encode a ``uint8`` ``(H, W, 3)`` BGR or ``(H, W)`` grey image; ``ext`` is ``.jpg`` or ``.png``."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f'encode_image: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}')
    ext = ext.lower()
    if ext in ('.jpg', '.jpeg'):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == '.png':
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        raise ValueError(f'encode_image: unsupported extension {ext!r} (use .jpg or .png)')
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise RuntimeError(f'encode_image: cv2.imencode failed for {ext} image of shape {image.shape}')
    return buf.tobytes()


def write_image(path: PathLike, image: np.ndarray, quality: int = 92, fsync: bool = False) -> None:
    """Encode ``image`` by ``path``'s extension and write it atomically (parent folders are created).

    ``fsync`` defaults to off: generated images are cheap to regenerate, and syncing hundreds of small
    files dominates generation time; the annotation file written last is what marks a set complete.
    """
    ext = os.path.splitext(os.fspath(path))[1]
    atomic_write_bytes(path, encode_image(image, ext, quality), fsync=fsync)


def shape_polygon(kind: str, center: Sequence[float], radii: Sequence[float], angle: float = 0.0,
                  sides: int = 5, inner_ratio: float = 0.45, ellipse_points: int = 32) -> np.ndarray:
    """Vertices ``(K, 2)`` of a shape, counter-clockwise in image coordinates (y down).

    Args:
        kind: one of :data:`SHAPE_KINDS`. ``polygon`` is a regular ``sides``-gon, ``star`` has
            ``sides`` points with inner radius ``inner_ratio`` times the outer one.
        center: ``(cx, cy)`` in pixels.
        radii: ``(rx, ry)`` half extents along x and y before rotation (a rectangle's half width and
            half height; a circle has ``rx == ry``).
        angle: rotation in radians about ``center``.
    """
    rx, ry = float(radii[0]), float(radii[1])
    if rx <= 0 or ry <= 0:
        raise ValueError(f'shape_polygon: radii must be positive, got {tuple(radii)}')
    if kind == 'rectangle':
        unit = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    elif kind in ('ellipse', 'triangle', 'polygon'):
        n = {'ellipse': ellipse_points, 'triangle': 3, 'polygon': sides}[kind]
        if n < 3:
            raise ValueError(f'shape_polygon: {kind} needs at least 3 vertices, got {n}')
        # start at the top (-y) so triangles and odd polygons point up before rotation
        t = -math.pi / 2 - 2 * math.pi * np.arange(n) / n
        unit = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif kind == 'star':
        if sides < 3 or not 0 < inner_ratio < 1:
            raise ValueError(f'shape_polygon: star needs sides >= 3 and 0 < inner_ratio < 1, '
                             f'got sides={sides}, inner_ratio={inner_ratio}')
        t = -math.pi / 2 - math.pi * np.arange(2 * sides) / sides
        r = np.where(np.arange(2 * sides) % 2 == 0, 1.0, inner_ratio)
        unit = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:
        raise ValueError(f'shape_polygon: unknown kind {kind!r}; expected one of {SHAPE_KINDS}')
    pts = unit * np.array([rx, ry])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.asarray(center, dtype=np.float64)[None, :]


def random_shape_polygon(rng: np.random.Generator, kind: str, center: Sequence[float], radius: float,
                         max_aspect: float = 1.6) -> np.ndarray:
    """A shape of ``kind`` with random rotation and aspect, fitting in a circle of ``radius``.

    Rectangles and ellipses get an aspect ratio in ``[1, max_aspect]``; polygons get 5-8 sides and
    stars 5-7 points. The result fits inside the circle, so ``center +- radius`` bounds it.
    """
    aspect = float(rng.uniform(1.0, max_aspect))
    angle = float(rng.uniform(0.0, 2 * math.pi))
    sides = int(rng.integers(5, 9)) if kind == 'polygon' else int(rng.integers(5, 8))
    if kind == 'rectangle':
        # the corner is at distance hypot(rx, ry): scale so it stays within the radius
        hy = radius / math.hypot(aspect, 1.0)
        radii = (hy * aspect, hy)
    elif kind == 'ellipse':
        radii = (radius, radius / aspect)
    else:
        radii = (radius, radius)
    return shape_polygon(kind, center, radii, angle=angle, sides=sides)


def _fixed_point(polygon: np.ndarray) -> np.ndarray:
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f'expected a polygon of shape (K >= 3, 2), got {poly.shape}')
    # cv2 puts pixel (i, j)'s centre at integer (j, i); ours is at (j + 0.5, i + 0.5)
    return np.round((poly - 0.5) * (1 << _FILL_SHIFT)).astype(np.int32)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """``bool (H, W)`` mask of ``polygon`` ``(K >= 3, 2)``, rasterised exactly as COCO's ``annToMask`` does.

    pycocotools' rule (about: pixels whose centre lies inside) is used rather than OpenCV's, whose
    fill also takes every pixel the outline touches, so that a generator's label masks and the masks
    that the COCO API and mmdet decode from the written polygons are the same pixels.
    """
    from pycocotools import mask as mask_utils  # an mmdet dependency; imported late to keep import light

    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f'polygon_mask: expected a polygon of shape (K >= 3, 2), got {poly.shape}')
    rles = mask_utils.frPyObjects([poly.ravel().tolist()], int(height), int(width))
    return mask_utils.decode(rles)[:, :, 0].astype(bool)


def fill_polygon(image: np.ndarray, polygon: np.ndarray, color: Sequence[float],
                 antialias: bool = True) -> None:
    """Paint ``polygon`` ``(K, 2)`` onto ``image`` ``(H, W, 3)`` in place (OpenCV's fill).

    The painted area includes the pixels the outline touches (softened when ``antialias``), one pixel
    ring more than :func:`polygon_mask`; use that for label masks.
    """
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    cv2.fillPoly(image, [_fixed_point(polygon)], tuple(float(c) for c in color), lineType=line,
                 shift=_FILL_SHIFT)


def _offset_polygon(polygon: np.ndarray, distance: float) -> np.ndarray:
    """Move every vertex of a simple polygon ``(K, 2)`` outward by ``distance`` (mitred, capped at 2x)."""
    p = np.asarray(polygon, np.float64)
    signed_area = 0.5 * np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
    orientation = 1.0 if signed_area > 0 else -1.0

    def outward_normals(edges: np.ndarray) -> np.ndarray:
        n = np.stack([edges[:, 1], -edges[:, 0]], axis=1) * orientation
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    n_prev = outward_normals(p - np.roll(p, 1, axis=0))
    n_next = outward_normals(np.roll(p, -1, axis=0) - p)
    miter = n_prev + n_next
    miter /= np.maximum(np.linalg.norm(miter, axis=1, keepdims=True), 1e-12)
    # a mitre of length d / cos(half angle) keeps both edges at distance d; cap it at sharp corners
    cos_half = np.clip(np.sum(miter * n_prev, axis=1), 0.5, 1.0)
    return p + miter * (distance / cos_half)[:, None]


def mask_to_polygons(mask: np.ndarray, min_area: float = 4.0) -> List[np.ndarray]:
    """Outer contours of a ``bool (H, W)`` mask as polygons ``(K >= 3, 2)`` in pixel-edge coordinates.

    OpenCV traces each contour through the centres of the boundary pixels; it is moved to the pixel
    centre convention (+0.5) and then outward by half a pixel, so that it runs along the outer edges
    of the boundary pixels. Rasterising the result again (:func:`polygon_mask`, or pycocotools'
    ``frPyObjects``, which COCO's ``annToMask`` uses) then gives back the same pixels, up to a rare
    pixel at a sharp corner. Holes are not represented (COCO polygons cannot carry them);
    parts whose polygon area is under ``min_area`` px (specks, one-pixel lines) are dropped.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) < 3:
            continue
        polygon = _offset_polygon(contour.reshape(-1, 2).astype(np.float64) + 0.5, 0.5)
        if abs(cv2.contourArea(polygon.astype(np.float32))) >= min_area:
            polygons.append(polygon)
    return polygons


def mask_bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Tight ``(x, y, w, h)`` pixel box of a ``bool (H, W)`` mask, or ``None`` if it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def textured_background(rng: np.random.Generator, height: int, width: int,
                        base_color: Optional[Sequence[float]] = None, gradient: float = 40.0,
                        blotch: float = 25.0, blotch_scale: int = 16) -> np.ndarray:
    """A ``uint8 (H, W, 3)`` background: base colour + linear gradient + smooth colour blotches.

    Args:
        base_color: BGR mean colour; random mid-grey-ish if ``None``.
        gradient: peak amplitude of the per-channel linear gradient across the image.
        blotch: amplitude of the low-frequency noise (bilinearly upsampled from a coarse grid of
            about ``blotch_scale`` px cells), which gives the detector clutter to learn to ignore.
    """
    if base_color is None:
        base = rng.uniform(70, 180, 3)
    else:
        base = np.asarray(base_color, np.float64)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    direction = rng.normal(size=(2, 3))
    ramp = (xx[..., None] / max(width - 1, 1) - 0.5) * direction[0] + \
        (yy[..., None] / max(height - 1, 1) - 0.5) * direction[1]
    image = base + gradient * ramp
    gh, gw = max(2, height // blotch_scale + 1), max(2, width // blotch_scale + 1)
    coarse = rng.normal(0.0, blotch, (gh, gw, 3)).astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(image, 0, 255).astype(np.uint8)


def add_sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float = 4.0,
                     blur: bool = True) -> np.ndarray:
    """Per-pixel Gaussian noise (``sigma`` in grey levels) and an optional 3x3 blur, as a new array."""
    out = image.astype(np.float32)
    if blur:
        out = cv2.GaussianBlur(out, (3, 3), 0.6)
    out += rng.normal(0.0, sigma, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items``, drawing a one-line ``desc: done/total`` counter on stderr when ``enabled``.

    Plain carriage-return updates (about 50 per run) keep logs readable when stderr is a file.
    """
    step = max(1, total // 50)
    for done, item in enumerate(items, start=1):
        yield item
        if enabled and (done % step == 0 or done == total):
            sys.stderr.write(f'\r{desc}: {done}/{total}')
            if done == total:
                sys.stderr.write('\n')
            sys.stderr.flush()
