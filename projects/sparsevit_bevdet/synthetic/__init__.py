"""Synthetic data sets in their real on-disk formats: nuScenes (:mod:`.nuscenes`), COCO instances, Cityscapes.

:mod:`.common` holds what the generators share (seeding, shapes, masks, backgrounds, image writing).
"""
from . import common  # noqa: F401
from .cityscapes import SyntheticCityscapesConfig, generate_synthetic_cityscapes, label_ids_to_train_ids  # noqa: F401
from .common import (  # noqa: F401
    SHAPE_KINDS,
    add_sensor_noise,
    encode_image,
    fill_polygon,
    mask_bbox,
    mask_to_polygons,
    polygon_mask,
    progress,
    random_shape_polygon,
    rng_for,
    shape_polygon,
    textured_background,
    write_image,
)
