"""Synthetic nuScenes: a small database in the real nuScenes format, rendered from a simple 3D world.

No nuScenes data can be downloaded on the project's machines, so this package writes an embedded default
dataset that the official devkit (``nuscenes.NuScenes``, ``DetectionEval``) and mmdet3d read unchanged:

* ``<out>/v1.0-mini/*.json``: all 13 tables (category, attribute, visibility, instance, sensor,
  calibrated_sensor, ego_pose, log, scene, sample, sample_data, sample_annotation, map);
* ``<out>/samples/CAM_*/<log>__CAM_*__<timestamp>.jpg``: the 6 cameras of every key frame;
* ``<out>/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin``: a small float32 (x, y, z,
  intensity, ring) point cloud per key frame, in the LiDAR frame;
* ``<out>/maps/<token>.png``: one semantic-prior mask per location (0.1 m per pixel);
* ``<out>/synthetic_nuscenes.json``: the generation parameters (marks the folder as generated).

The world: 10 scenes named as the devkit's mini split (``nuscenes.utils.splits.mini_train`` and
``mini_val``); in each, the ego drives along a constant-speed, constant-yaw-rate trajectory on a flat
ground plane (z = 0) and the 10 detection classes are placed around it with class-typical sizes, every
class present in every scene. Objects move at constant velocity along their heading (or stand still),
so the velocities the devkit derives from prev/next annotations are exact; their attributes follow the
motion (e.g. ``vehicle.moving`` above 0.2 m/s, ``vehicle.parked`` at rest; a resting bus is
``vehicle.stopped``), and every annotation lies inside its class's evaluation range and holds LiDAR
points. Cameras fire a few milliseconds after the LiDAR (as in nuScenes), each sample_data has its own
ego pose, and each camera image renders the world at the camera's own timestamp: sky, ground plane with
a world-fixed texture and horizon haze, object shadows, every box as filled flat-shaded faces (a darker
front face, glass across the upper front and the front part of both sides show the heading; moving vehicles
and cycles show lit head and tail lamps) with exact per-pixel depth ordering (inverse-depth z-buffer), and noise.

Everything derives from one seed: the same seed gives byte-identical tables and images. Images, points
and tables are written atomically, and the tables go to a temporary folder that is renamed to
``v1.0-mini`` only at the very end, so an interrupted run never looks like a complete database.

Modules, in the order the data is made: :mod:`.world` (:class:`SyntheticNuScenesConfig`, the scenes),
:mod:`.render` (camera images), :mod:`.lidar` (point clouds), :mod:`.tables` (the 13 tables, map masks) and
:mod:`.generate` (the driver: parallel rendering, atomic writes). The format constants (table, camera and class
names) come from :mod:`projects.sparsevit_bevdet.datasets.nuscenes_format`, which the real-data converter uses.
"""
from ...datasets.nuscenes_format import CAMERA_NAMES, DETECTION_CLASSES, TABLE_NAMES
from .generate import generate_synthetic_nuscenes
from .world import (
    MARKER_FILE,
    GenerationSummary,
    SyntheticNuScenesConfig,
    build_worlds,
)

__all__ = [
    'CAMERA_NAMES',
    'DETECTION_CLASSES',
    'MARKER_FILE',
    'TABLE_NAMES',
    'GenerationSummary',
    'SyntheticNuScenesConfig',
    'build_worlds',
    'generate_synthetic_nuscenes',
]
