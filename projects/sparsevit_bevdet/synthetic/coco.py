"""A synthetic COCO instance-segmentation set: coloured shapes on textured backgrounds.

Written in COCO's on-disk layout, so pycocotools' ``COCO`` and mmdet's ``CocoDataset`` / ``CocoMetric``
read it unchanged (the config only names the classes)::

    <out_dir>/annotations/instances_train2017.json
    <out_dir>/annotations/instances_val2017.json
    <out_dir>/train2017/000000000001.jpg ...
    <out_dir>/val2017/000000000001.jpg ...

Five categories, each one shape kind with its own hue (jittered per object), so shape and colour both
tell them apart. Objects may overlap; later ones are drawn on top. Every annotation describes the
visible part only: ``segmentation`` is the polygons of the visible mask, ``bbox`` ``[x, y, w, h]`` its
tight pixel box and ``area`` its pixel count, all taken from the mask that pycocotools decodes from
those polygons (what ``annToMask`` and mmdet see). Placements that would hide more than
``max_occlusion`` of an object, cut a hole into it (COCO polygons cannot carry holes) or leave it
smaller than ``min_visible_area`` are redrawn.

Determinism: image ``i`` of a split draws from :func:`~.common.rng_for` ``(seed, split, i)``, so a
seed gives the same files (JSON byte-identical, JPEGs identical for one OpenCV build) whatever the
number of images.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import cv2
import numpy as np

from ..utils.atomic_io import atomic_write_json
from .common import (
    add_sensor_noise,
    fill_polygon,
    mask_bbox,
    mask_to_polygons,
    polygon_mask,
    progress,
    rng_for,
    shape_polygon,
    textured_background,
    write_image,
)

__all__ = ['CATEGORIES', 'CLASSES', 'SyntheticCocoConfig', 'generate_synthetic_coco', 'render_image']


@dataclasses.dataclass(frozen=True)
class ShapeCategory:
    """One category: a shape kind (:func:`~.common.shape_polygon`) painted in one BGR hue."""

    id: int
    name: str
    kind: str
    sides: int
    color_bgr: Tuple[int, int, int]


CATEGORIES: Tuple[ShapeCategory, ...] = (
    ShapeCategory(1, 'rectangle', 'rectangle', 4, (50, 50, 215)),   # red
    ShapeCategory(2, 'ellipse', 'ellipse', 0, (60, 185, 60)),      # green
    ShapeCategory(3, 'triangle', 'triangle', 3, (210, 110, 40)),   # blue
    ShapeCategory(4, 'hexagon', 'polygon', 6, (40, 205, 225)),     # yellow
    ShapeCategory(5, 'star', 'star', 5, (195, 60, 195)),           # magenta
)
#: class names in category-id order: ``metainfo=dict(classes=CLASSES)`` in an mmdet config
CLASSES: Tuple[str, ...] = tuple(c.name for c in CATEGORIES)

SPLITS = {'train': 0, 'val': 1}  # rng key of each split
_DESCRIPTION = 'synthetic COCO (projects.sparsevit_bevdet.synthetic.coco)'  # marks sets this module wrote
_MAX_TRIES = 40  # placements tried per object before the image keeps fewer objects


@dataclasses.dataclass
class SyntheticCocoConfig:
    """What :func:`generate_synthetic_coco` writes.

    Attributes:
        out_dir: data root (``data/coco-synth`` by default in the CLI).
        num_train, num_val: images per split.
        image_size: ``(height, width)`` in pixels, each >= 32 (mmdet's default ``filter_cfg`` drops
            smaller images).
        seed: non-negative int; the set is a function of the seed and the sizes.
        objects: ``(min, max)`` objects attempted per image.
        radius: ``(min, max)`` object radius as a fraction of ``min(height, width)``.
        max_occlusion: the largest fraction of an object that later objects may hide.
        min_visible_area: the smallest area in pixels an object may have, and keep visible under
            later objects (placements breaking it are redrawn; an image may end up with fewer objects
            when the radius range is too small for it).
        jpeg_quality: 1-100.
        overwrite: replace a synthetic set already in ``out_dir`` (never anything else).
    """

    out_dir: Union[str, Path]
    num_train: int = 300
    num_val: int = 60
    image_size: Tuple[int, int] = (160, 160)
    seed: int = 0
    objects: Tuple[int, int] = (2, 6)
    radius: Tuple[float, float] = (0.08, 0.22)
    max_occlusion: float = 0.4
    min_visible_area: int = 36
    jpeg_quality: int = 92
    overwrite: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its value."""
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f'SyntheticCocoConfig.{field}={getattr(self, field)!r}: {why}')

        for field in ('num_train', 'num_val', 'seed', 'min_visible_area', 'jpeg_quality'):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise bad(field, 'must be a non-negative int')
        for field in ('num_train', 'num_val'):
            if getattr(self, field) < 1:
                raise bad(field, 'must be >= 1 (mmdet cannot train or validate on an empty split)')
        if not 1 <= self.jpeg_quality <= 100:
            raise bad('jpeg_quality', 'must be in 1..100')
        if len(self.image_size) != 2 or any(int(s) != s or s < 32 for s in self.image_size):
            raise bad('image_size', 'must be (height, width), two ints >= 32')
        lo, hi = self.objects
        if not (int(lo) == lo and int(hi) == hi and 1 <= lo <= hi):
            raise bad('objects', 'must be (min, max) ints with 1 <= min <= max')
        r_lo, r_hi = self.radius
        if not 0 < r_lo <= r_hi <= 0.45:
            raise bad('radius', 'must be (min, max) fractions of the image side with 0 < min <= max <= 0.45')
        if not 0 <= self.max_occlusion < 1:
            raise bad('max_occlusion', 'must be in [0, 1)')


@dataclasses.dataclass
class _Instance:
    category: ShapeCategory
    polygon: np.ndarray  # (K, 2) full outline
    full: np.ndarray     # (H, W) bool, the whole shape
    visible: np.ndarray  # (H, W) bool, what later objects leave visible
    color: np.ndarray    # (3,) BGR


def _has_hole(mask: np.ndarray) -> bool:
    """Whether any part of ``mask`` (H, W) encloses background (a contour with a parent)."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def _draw_shape(rng: np.random.Generator, cat: ShapeCategory, height: int, width: int,
                radius: float) -> np.ndarray:
    """A random outline ``(K, 2)`` of ``cat`` inside the image, fitting a circle of ``radius``."""
    angle = float(rng.uniform(0.0, 2 * math.pi))
    aspect = float(rng.uniform(1.0, 1.7))
    if cat.kind == 'rectangle':
        half_h = radius / math.hypot(aspect, 1.0)
        radii = (half_h * aspect, half_h)
    elif cat.kind == 'ellipse':
        radii = (radius, radius / aspect)
    else:
        radii = (radius, radius)
    # keep the circle one pixel inside the image, so no object is cut by the border
    cx = float(rng.uniform(radius + 1, width - radius - 1))
    cy = float(rng.uniform(radius + 1, height - radius - 1))
    return shape_polygon(cat.kind, (cx, cy), radii, angle=angle, sides=max(cat.sides, 3),
                         inner_ratio=float(rng.uniform(0.4, 0.55)))


def _place(rng: np.random.Generator, cfg: SyntheticCocoConfig) -> List[_Instance]:
    """Objects in paint order, each with its visible mask; every constraint of the module holds."""
    height, width = cfg.image_size
    side = min(height, width)
    count = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    placed: List[_Instance] = []
    for _ in range(count):
        for _try in range(_MAX_TRIES):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            radius = float(rng.uniform(*cfg.radius)) * side
            polygon = _draw_shape(rng, cat, height, width, radius)
            full = polygon_mask(polygon, height, width)
            if full.sum() < cfg.min_visible_area:
                continue
            # the new object goes on top: earlier objects lose what it covers
            updated = [inst.visible & ~full for inst in placed]
            if all(vis.sum() >= max(cfg.min_visible_area, (1 - cfg.max_occlusion) * inst.full.sum())
                   and not _has_hole(vis) for inst, vis in zip(placed, updated)):
                for inst, vis in zip(placed, updated):
                    inst.visible = vis
                jitter = rng.uniform(0.8, 1.15) * np.asarray(cat.color_bgr) + rng.uniform(-20, 20, 3)
                placed.append(_Instance(cat, polygon, full, full.copy(), np.clip(jitter, 0, 255)))
                break
    return placed


def render_image(cfg: SyntheticCocoConfig, split: str, index: int
                 ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Image ``index`` of ``split``: ``uint8 (H, W, 3)`` BGR and its annotations (without ids).

    Each annotation has ``category_id``, ``segmentation`` (list of flat ``[x0, y0, x1, y1, ...]``
    polygons), ``bbox`` ``[x, y, w, h]``, ``area`` and ``iscrowd`` 0.
    """
    from pycocotools import mask as mask_utils

    if split not in SPLITS:
        raise ValueError(f'split must be one of {sorted(SPLITS)}, got {split!r}')
    height, width = cfg.image_size
    rng = rng_for(cfg.seed, SPLITS[split], index)
    # a desaturated base keeps the background from looking like any category's hue
    grey = float(rng.uniform(80, 170))
    image = textured_background(rng, height, width, base_color=grey + rng.uniform(-15, 15, 3), blotch=15.0)
    instances = _place(rng, cfg)
    annotations = []
    for inst in instances:
        fill_polygon(image, inst.polygon, inst.color)
    for inst in instances:
        polygons = mask_to_polygons(inst.visible)
        if not polygons:
            continue
        segmentation = [[round(float(v), 2) for v in poly.ravel()] for poly in polygons]
        # the label is what the COCO API decodes from the written polygons, not our raster
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        mask = mask_utils.decode(rle).astype(bool)
        box = mask_bbox(mask)
        if box is None or mask.sum() < cfg.min_visible_area // 2:
            continue
        annotations.append(dict(category_id=inst.category.id, segmentation=segmentation,
                                area=float(mask.sum()), bbox=[float(v) for v in box], iscrowd=0))
    return add_sensor_noise(rng, image, sigma=3.0), annotations


def _file_name(image_id: int) -> str:
    return f'{image_id:012d}.jpg'


def generate_split(cfg: SyntheticCocoConfig, split: str, num_images: int, show_progress: bool = False
                   ) -> Dict[str, Any]:
    """Write the JPEGs of ``split`` and then its ``instances_<split>2017.json``; return the JSON dict."""
    root = Path(cfg.out_dir)
    height, width = cfg.image_size
    images, annotations = [], []
    for index in progress(range(num_images), num_images, f'synthetic COCO {split}', enabled=show_progress):
        image_id = index + 1  # COCO ids start at 1
        image, anns = render_image(cfg, split, index)
        write_image(root / f'{split}2017' / _file_name(image_id), image, quality=cfg.jpeg_quality)
        images.append(dict(id=image_id, file_name=_file_name(image_id), height=height, width=width))
        for ann in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, **ann))
    info = dict(description=_DESCRIPTION, version='1.0',
                year=2017, seed=cfg.seed, image_size=[height, width])
    categories = [dict(id=c.id, name=c.name, supercategory='shape') for c in CATEGORIES]
    dataset = dict(info=info, licenses=[], images=images, annotations=annotations, categories=categories)
    # written last: a complete JSON means every image it names is on disk
    atomic_write_json(root / 'annotations' / f'instances_{split}2017.json', dataset)
    return dataset


def _clear_existing(cfg: SyntheticCocoConfig) -> None:
    """Refuse to write over an existing set unless ``overwrite``; never delete a set we did not write."""
    root = Path(cfg.out_dir)
    found = [root / 'annotations' / f'instances_{split}2017.json' for split in SPLITS]
    found = [path for path in found if path.exists()]
    if not found:
        return
    if not cfg.overwrite:
        raise FileExistsError(f'{found[0]} exists; pass overwrite=True (--overwrite) to regenerate {root}')
    for path in found:
        try:
            description = json.loads(path.read_text()).get('info', {}).get('description')
        except (OSError, ValueError, AttributeError) as err:
            raise FileExistsError(f'{path} is not a readable COCO file ({err}); refusing to overwrite {root}'
                                  ) from err
        if description != _DESCRIPTION:
            raise FileExistsError(f'{path} was not written by this generator (info.description='
                                  f'{description!r}); refusing to overwrite {root}')
    # old images of a larger set would linger unreferenced; remove them with their annotations
    for sub in ('train2017', 'val2017', 'annotations'):
        shutil.rmtree(root / sub, ignore_errors=True)


def generate_synthetic_coco(cfg: SyntheticCocoConfig, show_progress: bool = False) -> Dict[str, Any]:
    """Write both splits under ``cfg.out_dir``; return a summary (images, annotations per split).

    Raises:
        ValueError: a bad config field.
        FileExistsError: ``out_dir`` holds a set and ``overwrite`` is off, or it holds a set this
            generator did not write.
    """
    cfg.validate()
    _clear_existing(cfg)
    summary: Dict[str, Any] = dict(out_dir=str(cfg.out_dir), seed=cfg.seed, image_size=list(cfg.image_size))
    for split, count in (('train', cfg.num_train), ('val', cfg.num_val)):
        dataset = generate_split(cfg, split, count, show_progress)
        per_class = np.bincount([a['category_id'] for a in dataset['annotations']],
                                minlength=len(CATEGORIES) + 1)[1:]
        summary[split] = dict(images=len(dataset['images']), annotations=len(dataset['annotations']),
                              per_class=dict(zip(CLASSES, per_class.tolist())))
    return summary

