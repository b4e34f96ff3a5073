"""Synthetic nuScenes: a small database in the real nuScenes format, rendered from a simple 3D world.

No nuScenes data can be downloaded on the project's machines, so this module writes an embedded default
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
front face shows the heading) with exact per-pixel depth ordering (inverse-depth z-buffer), and noise.

Everything derives from one seed: the same seed gives byte-identical tables and images. Images, points
and tables are written atomically, and the tables go to a temporary folder that is renamed to
``v1.0-mini`` only at the very end, so an interrupted run never looks like a complete database.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..utils.atomic_io import atomic_write_bytes, atomic_write_json
from .geometry import quat_axis_angle, quat_mul, quat_to_matrix, rot_z, yaw_quat

__all__ = [
    'CAMERA_NAMES',
    'DETECTION_CLASSES',
    'TABLE_NAMES',
    'GenerationSummary',
    'SyntheticNuScenesConfig',
    'generate_synthetic_nuscenes',
]

VERSION = 'v1.0-mini'
MARKER_FILE = 'synthetic_nuscenes.json'
GENERATOR_VERSION = 2

TABLE_NAMES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor',
               'ego_pose', 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
# mmdet3d's camera order (its nuScenes converter and LoadMultiViewImageFromFiles keep dict order).
CAMERA_NAMES = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
                'CAM_BACK_RIGHT')
# mmdet3d's NuScenesDataset class order; info labels index this tuple.
DETECTION_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle',
                     'pedestrian', 'traffic_cone', 'barrier')

# The 23 nuScenes categories (the devkit maps 10 of the detection classes onto them).
CATEGORIES = (
    'human.pedestrian.adult', 'human.pedestrian.child', 'human.pedestrian.wheelchair',
    'human.pedestrian.stroller', 'human.pedestrian.personal_mobility', 'human.pedestrian.police_officer',
    'human.pedestrian.construction_worker', 'animal', 'vehicle.car', 'vehicle.motorcycle',
    'vehicle.bicycle', 'vehicle.bus.bendy', 'vehicle.bus.rigid', 'vehicle.truck', 'vehicle.construction',
    'vehicle.emergency.ambulance', 'vehicle.emergency.police', 'vehicle.trailer', 'movable_object.barrier',
    'movable_object.trafficcone', 'movable_object.pushable_pullable', 'movable_object.debris',
    'static_object.bicycle_rack')
ATTRIBUTES = ('vehicle.moving', 'vehicle.stopped', 'vehicle.parked', 'cycle.with_rider',
              'cycle.without_rider', 'pedestrian.sitting_lying_down', 'pedestrian.standing',
              'pedestrian.moving')
VISIBILITY_LEVELS = (('1', 'v0-40', 0.0), ('2', 'v40-60', 0.4), ('3', 'v60-80', 0.6), ('4', 'v80-100', 0.8))
LOCATIONS = ('boston-seaport', 'singapore-onenorth', 'singapore-queenstown', 'singapore-hollandvillage')
MAP_RESOLUTION = 0.1  # m per pixel; the devkit's MapMask assumes 0.1
MAP_SIZE_PX = 2000  # 200 m x 200 m per location


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """How one detection class is sampled and drawn."""

    name: str
    category: str
    wlh: Tuple[float, float, float]  # mean width, length, height in metres (nuScenes order)
    color_bgr: Tuple[int, int, int]
    count: Tuple[int, int]  # min, max objects per scene (min >= 1: every class in every scene)
    p_moving: float
    speed: Tuple[float, float]  # m/s when moving
    moving_attr: str  # '' for classes without attributes
    static_attr: str


CLASS_SPECS: Dict[str, ClassSpec] = {s.name: s for s in (
    # Large classes first: they are placed first, while free space is plentiful.
    ClassSpec('trailer', 'vehicle.trailer', (2.90, 12.29, 3.87), (50, 85, 140), (1, 1), 0.3, (3, 8),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('bus', 'vehicle.bus.rigid', (2.94, 11.19, 3.47), (30, 205, 240), (1, 1), 0.5, (3, 9),
              'vehicle.moving', 'vehicle.stopped'),
    ClassSpec('truck', 'vehicle.truck', (2.52, 6.94, 2.84), (40, 130, 235), (1, 2), 0.5, (3, 10),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('construction_vehicle', 'vehicle.construction', (2.73, 6.37, 3.19), (20, 150, 190), (1, 1),
              0.3, (1, 3), 'vehicle.moving', 'vehicle.parked'),
    ClassSpec('car', 'vehicle.car', (1.95, 4.62, 1.73), (190, 85, 35), (6, 9), 0.6, (3, 12),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('motorcycle', 'vehicle.motorcycle', (0.77, 2.11, 1.47), (190, 190, 30), (1, 2), 0.6, (4, 10),
              'cycle.with_rider', 'cycle.without_rider'),
    ClassSpec('bicycle', 'vehicle.bicycle', (0.61, 1.70, 1.29), (60, 190, 60), (1, 2), 0.6, (2, 5),
              'cycle.with_rider', 'cycle.without_rider'),
    ClassSpec('pedestrian', 'human.pedestrian.adult', (0.67, 0.73, 1.77), (150, 40, 200), (4, 7), 0.6,
              (0.8, 1.8), 'pedestrian.moving', 'pedestrian.standing'),
    ClassSpec('barrier', 'movable_object.barrier', (2.49, 0.48, 0.99), (215, 215, 215), (3, 5), 0.0, (0, 0),
              '', ''),
    ClassSpec('traffic_cone', 'movable_object.trafficcone', (0.41, 0.41, 1.07), (30, 80, 250), (3, 5), 0.0,
              (0, 0), '', ''),
)}
PLACEMENT_ORDER = tuple(CLASS_SPECS)

# Camera rig at 1600 x 900, close to nuScenes' (yaw of the optical axis in degrees, mounting position on
# the ego in metres, fx = fy, cx, cy). Intrinsics scale with the requested image size.
CAMERA_RIG = {
    'CAM_FRONT': (0.0, (1.70, 0.016, 1.51), 1266.4, 816.3, 491.5),
    'CAM_FRONT_RIGHT': (-55.0, (1.55, -0.493, 1.50), 1260.8, 808.0, 495.3),
    'CAM_FRONT_LEFT': (55.0, (1.52, 0.494, 1.51), 1272.6, 826.6, 479.8),
    'CAM_BACK': (180.0, (0.03, 0.003, 1.58), 809.2, 829.2, 481.8),
    'CAM_BACK_LEFT': (110.0, (1.04, 0.485, 1.59), 1256.7, 817.8, 452.0),
    'CAM_BACK_RIGHT': (-110.0, (1.01, -0.480, 1.56), 1259.5, 807.3, 501.2),
}
# Camera trigger delay after the LiDAR key frame (the LiDAR sweep passes the cameras in turn).
CAMERA_DELAY_US = {'CAM_FRONT': 12_000, 'CAM_FRONT_RIGHT': 20_000, 'CAM_BACK_RIGHT': 29_000,
                   'CAM_BACK': 37_000, 'CAM_BACK_LEFT': 45_000, 'CAM_FRONT_LEFT': 4_000}
LIDAR_MOUNT = (0.943, 0.0, 1.84)
REF_WIDTH, REF_HEIGHT = 1600, 900

# Rendering constants (BGR).
SKY_ZENITH = np.array([205.0, 150.0, 95.0], np.float32)
SKY_HORIZON = np.array([235.0, 220.0, 205.0], np.float32)
GROUND_BASE = np.array([88.0, 92.0, 96.0], np.float32)
HAZE_COLOR = np.array([190.0, 190.0, 188.0], np.float32)
SHADOW_COLOR = (42, 44, 46)
LIGHT_DIR = np.array([0.35, 0.25, 0.90]) / np.linalg.norm([0.35, 0.25, 0.90])  # global frame
NEAR_PLANE = 0.1
NOISE_AMPLITUDE = 7


@dataclasses.dataclass
class SyntheticNuScenesConfig:
    """Parameters of a generated database."""

    out_dir: Path
    seed: int = 0
    samples_per_scene: int = 40  # real nuScenes scenes hold about 40 key frames (20 s at 2 Hz)
    image_size: Tuple[int, int] = (900, 1600)  # (height, width)
    sample_interval_us: int = 500_000  # nuScenes key frames come at 2 Hz
    jpeg_quality: int = 90
    workers: int = 1
    overwrite: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad parameter."""
        if self.samples_per_scene < 2:
            raise ValueError(f'samples_per_scene must be >= 2 (instances must span two samples for the devkit '
                             f'to derive velocities), got {self.samples_per_scene}')
        h, w = self.image_size
        if h < 16 or w < 16:
            raise ValueError(f'image_size must be at least 16x16, got {h}x{w}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {self.jpeg_quality}')
        if self.workers < 1:
            raise ValueError(f'workers must be >= 1, got {self.workers}')
        if not 100_000 <= self.sample_interval_us <= 1_000_000:
            raise ValueError(f'sample_interval_us must be within [1e5, 1e6] us so that prev/next annotations '
                             f'stay within the devkit velocity window, got {self.sample_interval_us}')


@dataclasses.dataclass
class GenerationSummary:
    """What :func:`generate_synthetic_nuscenes` wrote."""

    out_dir: Path
    num_scenes: int
    num_samples: int
    num_images: int
    num_annotations: int
    num_instances: int
    annotations_per_class: Dict[str, Dict[str, int]]  # split -> class -> count
    hidden_annotations: int  # annotations with no visible pixel in any camera (fully occluded)
    seconds: float

    def table(self) -> str:
        """A readable per-class summary."""
        splits = list(self.annotations_per_class)
        lines = [f'{"class":<22}' + ''.join(f'{s:>12}' for s in splits)]
        for cls in DETECTION_CLASSES:
            lines.append(f'{cls:<22}' + ''.join(f'{self.annotations_per_class[s].get(cls, 0):>12}'
                                                 for s in splits))
        lines.append(f'{"total":<22}' + ''.join(f'{sum(self.annotations_per_class[s].values()):>12}'
                                                 for s in splits))
        return '\n'.join(lines)


# Camera axes (x right, y down, z forward) in the ego frame of a camera looking along ego +x.
# As a quaternion: rotate -90 deg about x, then -90 deg about z (so z_cam -> x_ego, x_cam -> -y_ego).
_CAM_BASE_QUAT = quat_mul(quat_axis_angle((0, 0, 1), -math.pi / 2), quat_axis_angle((1, 0, 0), -math.pi / 2))

# Box corners in units of (l/2, w/2, h/2) and the 6 faces as cyclic corner lists with outward normals.
_CORNER_SIGNS = np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                          [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]], np.float64)
_FACES = (((0, 1, 5, 4), (1.0, 0.0, 0.0)),  # front (+x, heading)
          ((2, 3, 7, 6), (-1.0, 0.0, 0.0)),  # back
          ((3, 0, 4, 7), (0.0, 1.0, 0.0)),  # left
          ((1, 2, 6, 5), (0.0, -1.0, 0.0)),  # right
          ((4, 5, 6, 7), (0.0, 0.0, 1.0)))  # top; the bottom face never faces a camera above ground


# ----------------------------------------------------------------------------------------------------
# the world


@dataclasses.dataclass(frozen=True)
class EgoMotion:
    """Constant speed and yaw rate on the ground plane, from ``(x0, y0, yaw0)`` at t = 0."""

    x0: float
    y0: float
    yaw0: float
    speed: float
    yaw_rate: float

    def pose(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, yaw (global) at times ``t`` in seconds."""
        t = np.asarray(t, np.float64)
        yaw = self.yaw0 + self.yaw_rate * t
        if abs(self.yaw_rate) < 1e-9:
            return (self.x0 + self.speed * t * math.cos(self.yaw0),
                    self.y0 + self.speed * t * math.sin(self.yaw0), yaw)
        r = self.speed / self.yaw_rate
        return (self.x0 + r * (np.sin(yaw) - math.sin(self.yaw0)),
                self.y0 - r * (np.cos(yaw) - math.cos(self.yaw0)), yaw)


@dataclasses.dataclass
class SceneObjects:
    """The objects of one scene as parallel arrays (one row per instance)."""

    cls: np.ndarray  # (M,) index into DETECTION_CLASSES
    wlh: np.ndarray  # (M, 3)
    xy0: np.ndarray  # (M, 2) global centre position at scene time 0
    yaw: np.ndarray  # (M,) global heading (constant)
    speed: np.ndarray  # (M,) along the heading, m/s
    first: np.ndarray  # (M,) first sample index the instance is annotated in
    last: np.ndarray  # (M,) last sample index (inclusive)
    color: np.ndarray  # (M, 3) BGR base colour

    def xy(self, t: float) -> np.ndarray:
        """(M, 2) global centre positions at scene time ``t`` seconds."""
        direction = np.stack([np.cos(self.yaw), np.sin(self.yaw)], 1)
        return self.xy0 + (self.speed * t)[:, None] * direction


@dataclasses.dataclass
class CameraCalib:
    """One camera of a log's rig."""

    name: str
    quat: np.ndarray  # cam -> ego rotation
    translation: np.ndarray  # camera position in the ego frame
    intrinsic: np.ndarray  # 3x3

    @property
    def rotation(self) -> np.ndarray:
        return quat_to_matrix(self.quat)


@dataclasses.dataclass
class SceneWorld:
    """Everything needed to render and annotate one scene."""

    index: int
    name: str
    log_name: str
    location: str
    ego: EgoMotion
    base_timestamp: int  # microseconds at scene time 0
    sample_timestamps: np.ndarray  # (N,) int64 microseconds (LiDAR key frames)
    cameras: List[CameraCalib]
    lidar_quat: np.ndarray
    lidar_translation: np.ndarray
    objects: SceneObjects

    def time_of(self, timestamp: int) -> float:
        """Scene time in seconds of a microsecond timestamp."""
        return (int(timestamp) - self.base_timestamp) * 1e-6

    def camera_timestamp(self, sample_index: int, cam: str) -> int:
        return int(self.sample_timestamps[sample_index]) + CAMERA_DELAY_US[cam]

    def filename(self, channel: str, timestamp: int) -> str:
        ext = 'pcd.bin' if channel == 'LIDAR_TOP' else 'jpg'
        return f'samples/{channel}/{self.log_name}__{channel}__{timestamp}.{ext}'


def _scene_names() -> List[Tuple[str, str]]:
    """(scene name, split) for the devkit's mini split, in the devkit's order."""
    from nuscenes.utils.splits import mini_train, mini_val

    return [(n, 'mini_train') for n in mini_train] + [(n, 'mini_val') for n in mini_val]


def _class_ranges() -> Dict[str, float]:
    """Evaluation range per class, from the devkit's detection config (so the two cannot drift)."""
    from nuscenes.eval.detection.config import config_factory

    return dict(config_factory('detection_cvpr_2019').class_range)


def _make_rig(rng: np.random.Generator, image_size: Tuple[int, int]) -> List[CameraCalib]:
    """Per-log camera calibration: the nominal rig with small mounting perturbations."""
    h, w = image_size
    sx, sy = w / REF_WIDTH, h / REF_HEIGHT
    cams = []
    for name in CAMERA_NAMES:
        yaw_deg, pos, f, cx, cy = CAMERA_RIG[name]
        yaw = math.radians(yaw_deg + rng.uniform(-0.3, 0.3))
        pitch = math.radians(rng.uniform(-0.5, 0.5))
        roll = math.radians(rng.uniform(-0.5, 0.5))
        # ego-frame yaw, then pitch about the (ego) y axis and roll about the optical axis.
        q = quat_mul(quat_axis_angle((0, 0, 1), yaw),
                     quat_mul(quat_axis_angle((0, 1, 0), pitch),
                              quat_mul(quat_axis_angle((1, 0, 0), roll), _CAM_BASE_QUAT)))
        q = q / np.linalg.norm(q)
        t = np.asarray(pos) + rng.uniform(-0.01, 0.01, 3)
        k = np.array([[f * sx, 0.0, cx * sx], [0.0, f * sy, cy * sy], [0.0, 0.0, 1.0]])
        cams.append(CameraCalib(name, q, t, k))
    return cams


def _place_objects(rng: np.random.Generator, ego: EgoMotion, times: np.ndarray,
                   ranges: Dict[str, float]) -> SceneObjects:
    """Sample instances around the ego path: inside their class range and clear of the ego and of each
    other at every sample they are annotated in."""
    n = len(times)
    ex, ey, eyaw = ego.pose(times)
    ego_xy = np.stack([ex, ey], 1)
    rows: List[Tuple[int, Tuple[float, float, float], float, float, float, float, int, int, np.ndarray]] = []
    placed_xy: List[np.ndarray] = []  # (N, 2) per placed object, NaN where not annotated
    placed_rad: List[float] = []
    placed_h: List[float] = []
    # A scene of many samples holds as many objects per sample as a 10-sample one: the class counts are per
    # 10 samples, and an instance's annotated span is bounded by how long the moving ego keeps it in range.
    interval = float(np.median(np.diff(times))) if n > 1 else 0.5
    density = max(1, math.ceil(n / 10))
    for cls_name in PLACEMENT_ORDER:
        spec = CLASS_SPECS[cls_name]
        lo, hi = spec.count
        count = int(rng.integers(lo, hi + 1)) * density
        max_range = ranges[cls_name] - 2.0  # margin: rounding never pushes a box out of range
        max_span = int(np.clip(1.2 * max_range / max(ego.speed * interval, 1e-6), 2, n))
        n_placed = 0
        for _ in range(count):
            for _attempt in range(400):
                wlh = tuple(float(v) for v in np.asarray(spec.wlh) * rng.uniform(0.9, 1.1, 3))
                rad = 0.5 * math.hypot(wlh[0], wlh[1])
                if n <= 10 and (n == 2 or rng.random() < 0.75):
                    first, last = 0, n - 1
                else:  # instances enter or leave the scene, annotated in >= 2 samples
                    length = int(rng.integers(2, min(n, max_span) + 1)) if n <= 10 else \
                        int(rng.integers(max(2, max_span // 2), min(n, max_span) + 1))
                    first = int(rng.integers(0, n - length + 1))
                    last = first + length - 1
                k_ref = int(rng.integers(first, last + 1))
                moving = rng.random() < spec.p_moving
                speed = float(rng.uniform(*spec.speed)) if moving else 0.0
                r_min = rad + 4.0
                if r_min >= max_range:
                    raise ValueError(f'class {cls_name}: range {max_range} m too small for its size')
                r = rng.uniform(r_min, max_range)
                theta = rng.uniform(-math.pi, math.pi)
                if cls_name == 'pedestrian' or cls_name == 'traffic_cone':
                    heading = rng.uniform(-math.pi, math.pi)
                elif cls_name == 'barrier':
                    heading = rng.choice([0.0, math.pi / 2]) + rng.normal(0.0, 0.1)
                elif moving:  # traffic flows along or against the ego's direction
                    heading = rng.choice([0.0, math.pi]) + rng.normal(0.0, 0.08)
                else:
                    heading = rng.choice([0.0, math.pi, math.pi / 2, -math.pi / 2]) + rng.normal(0.0, 0.15)
                c, s = math.cos(eyaw[k_ref]), math.sin(eyaw[k_ref])
                lx, ly = r * math.cos(theta), r * math.sin(theta)
                ref_xy = ego_xy[k_ref] + np.array([c * lx - s * ly, s * lx + c * ly])
                yaw = float(eyaw[k_ref] + heading)
                direction = np.array([math.cos(yaw), math.sin(yaw)])
                xy0 = ref_xy - speed * times[k_ref] * direction
                traj = xy0[None] + (speed * times)[:, None] * direction[None]
                span = slice(first, last + 1)
                dist = np.linalg.norm(traj[span] - ego_xy[span], axis=1)
                if dist.max() > max_range or dist.min() < rad + 4.0:
                    continue
                if placed_xy:
                    other = np.stack(placed_xy)[:, span]  # (P, S, 2)
                    o_rad, o_h = np.asarray(placed_rad), np.asarray(placed_h)
                    with np.errstate(invalid='ignore'):
                        gap = np.linalg.norm(other - traj[None, span], axis=-1) - (rad + o_rad)[:, None]
                    if np.nanmin(gap, initial=np.inf) < 0.5:
                        continue
                    rel_new = np.broadcast_to(traj[None, span] - ego_xy[None, span], other.shape)
                    rel_old = other - ego_xy[None, span]
                    new_rad, new_h = np.full_like(o_rad, rad), np.full_like(o_h, wlh[2])
                    if (_hides(rel_old, o_rad, o_h, rel_new, new_rad, new_h).any()
                            or _hides(rel_new, new_rad, new_h, rel_old, o_rad, o_h).any()):
                        continue
                masked = np.full_like(traj, np.nan)
                masked[span] = traj[span]
                placed_xy.append(masked)
                placed_rad.append(rad)
                placed_h.append(wlh[2])
                color = np.clip(np.asarray(spec.color_bgr, np.float64) * rng.uniform(0.8, 1.15)
                                + rng.uniform(-18, 18, 3), 0, 255)
                rows.append((DETECTION_CLASSES.index(cls_name), wlh, float(xy0[0]), float(xy0[1]), yaw,
                             speed, first, last, color))
                n_placed += 1
                break
        if n_placed == 0:
            raise RuntimeError(f'could not place any {cls_name} around the ego path; this is a bug in the '
                               f'placement constraints')
    return SceneObjects(
        cls=np.array([r[0] for r in rows], np.int64),
        wlh=np.array([r[1] for r in rows], np.float64),
        xy0=np.array([[r[2], r[3]] for r in rows], np.float64),
        yaw=np.array([r[4] for r in rows], np.float64),
        speed=np.array([r[5] for r in rows], np.float64),
        first=np.array([r[6] for r in rows], np.int64),
        last=np.array([r[7] for r in rows], np.int64),
        color=np.array([r[8] for r in rows], np.float64))


def _hides(front_rel: np.ndarray, front_rad: np.ndarray, front_h: np.ndarray, back_rel: np.ndarray,
           back_rad: np.ndarray, back_h: np.ndarray) -> np.ndarray:
    """Whether each ``front`` object would mostly hide its ``back`` object from the ego at some sample.

    A cheap angular test on ego-relative centre tracks ``(P, S, 2)`` (NaN where an object is not
    annotated) with per-object radii and heights ``(P,)``: the front object must be nearer, about as
    tall, and cover most of the back object's azimuth interval. It keeps fully occluded annotations rare
    without rendering during placement. Returns ``(P,)`` booleans.
    """
    d_f = np.linalg.norm(front_rel, axis=-1)
    d_b = np.linalg.norm(back_rel, axis=-1)
    f_rad, b_rad = front_rad[:, None], back_rad[:, None]
    with np.errstate(invalid='ignore'):
        nearer = d_f + f_rad < d_b
        half_f = np.arcsin(np.clip(f_rad / np.maximum(d_f, 1e-6), 0, 1))
        half_b = np.arcsin(np.clip(b_rad / np.maximum(d_b, 1e-6), 0, 1))
        diff = np.angle(np.exp(1j * (np.arctan2(front_rel[..., 1], front_rel[..., 0])
                                     - np.arctan2(back_rel[..., 1], back_rel[..., 0]))))
        lo = np.maximum(-half_b, diff - half_f)
        hi = np.minimum(half_b, diff + half_f)
        covered = np.clip(hi - lo, 0, None) / np.maximum(2 * half_b, 1e-9)
        hidden = nearer & (covered > 0.6)
    return (front_h >= 0.8 * back_h) & hidden.any(axis=1)


def build_worlds(cfg: SyntheticNuScenesConfig) -> List[SceneWorld]:
    """Sample the 10 scenes (trajectories, calibration, timestamps, objects) from the seed."""
    ranges = _class_ranges()
    root_seq = np.random.SeedSequence(cfg.seed)
    worlds = []
    for idx, ((name, _split), seq) in enumerate(zip(_scene_names(), root_seq.spawn(len(_scene_names())))):
        rng = np.random.default_rng(seq)
        location = LOCATIONS[idx % len(LOCATIONS)]
        moving = rng.random() > 0.15
        ego = EgoMotion(x0=float(rng.uniform(70, 130)), y0=float(rng.uniform(70, 130)),
                        yaw0=float(rng.uniform(-math.pi, math.pi)),
                        speed=float(rng.uniform(3.0, 9.0)) if moving else 0.0,
                        yaw_rate=float(rng.uniform(-0.06, 0.06)))
        base = 1_533_000_000_000_000 + idx * 7_200_000_000 + int(rng.integers(0, 1_000_000_000))
        jitter = rng.integers(-15_000, 15_001, cfg.samples_per_scene)
        jitter[0] = 0
        stamps = base + np.arange(cfg.samples_per_scene, dtype=np.int64) * cfg.sample_interval_us + jitter
        times = (stamps - base) * 1e-6
        lidar_yaw = -math.pi / 2 + math.radians(rng.uniform(-0.2, 0.2))
        lidar_t = np.asarray(LIDAR_MOUNT) + rng.uniform(-0.01, 0.01, 3)
        date = f'2018-08-{1 + idx:02d}'
        log_name = f'n{idx:03d}-{date}-{10 + idx:02d}-{idx * 5:02d}-00+0800'
        worlds.append(SceneWorld(
            index=idx, name=name, log_name=log_name, location=location, ego=ego, base_timestamp=int(base),
            sample_timestamps=stamps.astype(np.int64), cameras=_make_rig(rng, cfg.image_size),
            lidar_quat=np.asarray(yaw_quat(lidar_yaw)), lidar_translation=lidar_t,
            objects=_place_objects(rng, ego, times, ranges)))
    return worlds


# ----------------------------------------------------------------------------------------------------
# rendering


def _box_corners_ego(center: np.ndarray, wlh: np.ndarray, yaw: float) -> np.ndarray:
    """(8, 3) corners of a box given its gravity centre, (w, l, h) and yaw in one frame."""
    half = np.array([wlh[1], wlh[0], wlh[2]]) / 2
    return (_CORNER_SIGNS * half) @ rot_z(yaw).T + center


def _clip_near(poly: np.ndarray, near: float = NEAR_PLANE) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon (k, 3) to z >= near."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


class _CameraView:
    """Per-scene, per-camera precomputation: projection and the static parts of the background."""

    QUARTER = 4

    def __init__(self, calib: CameraCalib, image_size: Tuple[int, int]):
        self.name = calib.name
        self.h, self.w = image_size
        self.k = calib.intrinsic
        self.r_c2e = calib.rotation
        self.t_c2e = calib.translation
        self.fx, self.fy = self.k[0, 0], self.k[1, 1]
        self.cx, self.cy = self.k[0, 2], self.k[1, 2]
        self.us = np.arange(self.w, dtype=np.float32)
        self.vs = np.arange(self.h, dtype=np.float32)
        # Background at quarter resolution (it is smooth), upsampled per frame.
        q = self.QUARTER
        hq, wq = -(-self.h // q), -(-self.w // q)
        u = (np.arange(wq) + 0.5) * q - 0.5
        v = (np.arange(hq) + 0.5) * q - 0.5
        rays = np.stack(np.broadcast_arrays(((u - self.cx) / self.fx)[None, :],
                                            ((v - self.cy) / self.fy)[:, None], np.ones((1, 1))), -1)
        rays = rays @ self.r_c2e.T  # ego frame
        norm = np.linalg.norm(rays, axis=-1)
        elev = rays[..., 2] / norm
        sky_t = np.clip(elev * 4.0, 0.0, 1.0)[..., None]
        self.sky = ((1 - sky_t) * SKY_HORIZON + sky_t * SKY_ZENITH).astype(np.float32)
        self.ground = elev < -1e-3
        dz = np.where(self.ground, rays[..., 2], -1.0)
        t = -self.t_c2e[2] / dz
        gx = self.t_c2e[0] + t * rays[..., 0]
        gy = self.t_c2e[1] + t * rays[..., 1]
        dist = np.hypot(gx, gy)
        self.ground_xy = np.stack([gx[self.ground], gy[self.ground]], 1)  # (G, 2) ego frame
        self.haze = (1.0 - np.exp(-dist[self.ground] / 70.0)).astype(np.float32)[:, None]
        self.bg_shape = (hq, wq)

    def background(self, ego_xy: np.ndarray, ego_yaw: float, road: Tuple[float, float, float]) -> np.ndarray:
        """Sky, horizon and textured ground (world-fixed, so it moves with the ego) at full resolution."""
        c, s = math.cos(ego_yaw), math.sin(ego_yaw)
        gx = ego_xy[0] + c * self.ground_xy[:, 0] - s * self.ground_xy[:, 1]
        gy = ego_xy[1] + s * self.ground_xy[:, 0] + c * self.ground_xy[:, 1]
        # 4 m paving tiles and dashed lane lines along the scene's road direction.
        tiles = ((np.floor(gx / 4.0) + np.floor(gy / 4.0)) % 2.0) * 7.0 - 3.5
        rx, ry, ryaw = road
        along = (gx - rx) * math.cos(ryaw) + (gy - ry) * math.sin(ryaw)
        across = -(gx - rx) * math.sin(ryaw) + (gy - ry) * math.cos(ryaw)
        lane = (np.abs(((across + 1.75) % 3.5) - 1.75) < 0.12) & ((along % 6.0) < 3.0) & (np.abs(across) < 9)
        shade = (tiles + lane * 95.0).astype(np.float32)[:, None]
        ground = (GROUND_BASE + shade) * (1 - self.haze) + HAZE_COLOR * self.haze
        img = self.sky.copy()
        img[self.ground] = ground
        small = np.clip(img, 0, 255).astype(np.uint8)
        return cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_LINEAR)

    def to_cam(self, pts_ego: np.ndarray) -> np.ndarray:
        return (pts_ego - self.t_c2e) @ self.r_c2e

    def project(self, pts_cam: np.ndarray) -> np.ndarray:
        return np.stack([self.fx * pts_cam[:, 0] / pts_cam[:, 2] + self.cx,
                         self.fy * pts_cam[:, 1] / pts_cam[:, 2] + self.cy], 1)

    def roi(self, uv: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
        x0 = max(math.floor(uv[:, 0].min()), 0)
        x1 = min(math.ceil(uv[:, 0].max()) + 1, self.w)
        y0 = max(math.floor(uv[:, 1].min()), 0)
        y1 = min(math.ceil(uv[:, 1].max()) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, x1, y0, y1

    @staticmethod
    def fill_mask(uv: np.ndarray, roi: Tuple[int, int, int, int]) -> np.ndarray:
        x0, x1, y0, y1 = roi
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        # sub-pixel vertices (shift=4); far-off vertices are clipped by OpenCV itself
        pts = np.round((uv - (x0, y0)) * 16).astype(np.int64)
        pts = np.clip(pts, -(2**30), 2**30).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
        return mask.view(bool)


def _noise_tile(h: int, w: int) -> np.ndarray:
    """A fixed uint8 noise field larger than the image; each image takes a shifted window of it."""
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2 * NOISE_AMPLITUDE + 1, (h + 64, w + 64, 3), dtype=np.uint8)


def render_camera(view: _CameraView, world: SceneWorld, present: np.ndarray, timestamp: int, noise: np.ndarray,
                  noise_offset: Tuple[int, int], return_ids: bool = False) -> Tuple[np.ndarray, ...]:
    """Render one camera image at ``timestamp``.

    Returns the BGR image, and per scene object its visible and its silhouette pixel counts; with
    ``return_ids`` also the per-pixel id map (1 + object index, 0 for background).
    """
    objs = world.objects
    t = world.time_of(timestamp)
    ex, ey, eyaw = (float(v) for v in world.ego.pose(t))
    rot_e = rot_z(eyaw)
    xy = objs.xy(t)
    img = view.background(np.array([ex, ey]), eyaw, (world.ego.x0, world.ego.y0, world.ego.yaw0))
    m = len(objs.cls)
    visible = np.zeros(m, np.int64)
    silhouette = np.zeros(m, np.int64)
    zbuf = np.zeros((view.h, view.w), np.float32)  # inverse depth; 0 = background at infinity
    idbuf = np.zeros((view.h, view.w), np.uint16)  # 1 + object index of the pixel's surface
    drawn = (view.w, 0, view.h, 0)  # bounding box of everything drawn (x0, x1, y0, y1)
    boxes = []
    for i in np.flatnonzero(present):
        center_g = np.array([xy[i, 0], xy[i, 1], objs.wlh[i, 2] / 2])
        center_e = rot_e.T @ (center_g - (ex, ey, 0.0))
        yaw_e = objs.yaw[i] - eyaw
        corners_c = view.to_cam(_box_corners_ego(center_e, objs.wlh[i], yaw_e))
        if corners_c[:, 2].max() < NEAR_PLANE:
            continue
        boxes.append((i, corners_c, yaw_e))
    # Shadows first (on the ground, never occluding an object).
    for _i, corners_c, _ in boxes:
        bottom = corners_c[[0, 1, 2, 3]]
        centre = bottom.mean(0)
        poly = _clip_near(centre + 1.12 * (bottom - centre))
        if len(poly) < 3:
            continue
        uv = view.project(poly)
        roi = view.roi(uv)
        if roi is not None:
            x0, x1, y0, y1 = roi
            img[y0:y1, x0:x1][view.fill_mask(uv, roi)] = SHADOW_COLOR
    for i, corners_c, yaw_e in boxes:
        base = objs.color[i]
        r_obj_cam = view.r_c2e.T @ rot_z(yaw_e)  # object frame -> camera frame
        r_obj_glob = rot_z(objs.yaw[i])
        for face_idx, (corner_ids, normal) in enumerate(_FACES):
            poly_c = corners_c[list(corner_ids)]
            n_c = r_obj_cam @ np.asarray(normal)
            d = float(n_c @ poly_c[0])
            if d > -1e-6:  # back-facing or edge-on
                continue
            poly_c = _clip_near(poly_c)
            if len(poly_c) < 3:
                continue
            uv = view.project(poly_c)
            roi = view.roi(uv)
            if roi is None:
                continue
            x0, x1, y0, y1 = roi
            mask = view.fill_mask(uv, roi)
            if not mask.any():
                continue
            silhouette[i] += int(np.count_nonzero(mask))
            # Inverse depth is affine in pixel coordinates on a plane: exact per-pixel depth test.
            a = n_c[0] / (view.fx * d)
            b = n_c[1] / (view.fy * d)
            c = (n_c[2] - n_c[0] * view.cx / view.fx - n_c[1] * view.cy / view.fy) / d
            inv_z = (a * view.us[x0:x1])[None, :] + (b * view.vs[y0:y1] + c)[:, None]
            zroi = zbuf[y0:y1, x0:x1]
            upd = mask & (inv_z > zroi)
            shade = 0.55 + 0.45 * max(0.0, float((r_obj_glob @ np.asarray(normal)) @ LIGHT_DIR))
            if face_idx == 0:
                shade *= 0.55  # darker front face: the heading is visible
            # copyto(where=...) avoids the gather/scatter of boolean fancy indexing
            np.copyto(zroi, inv_z, where=upd)
            np.copyto(img[y0:y1, x0:x1], np.clip(base * shade, 0, 255).astype(np.uint8), where=upd[..., None])
            np.copyto(idbuf[y0:y1, x0:x1], np.uint16(i + 1), where=upd)
            drawn = (min(drawn[0], x0), max(drawn[1], x1), min(drawn[2], y0), max(drawn[3], y1))
    if drawn[0] < drawn[1]:
        x0, x1, y0, y1 = drawn
        counts = np.bincount(idbuf[y0:y1, x0:x1].ravel(), minlength=m + 1)
        visible += counts[1:m + 1]
    dy, dx = noise_offset
    img = cv2.add(img, noise[dy:dy + view.h, dx:dx + view.w])
    img = cv2.subtract(img, (NOISE_AMPLITUDE, NOISE_AMPLITUDE, NOISE_AMPLITUDE, 0))
    if return_ids:
        return img, visible, silhouette, idbuf
    return img, visible, silhouette


def lidar_points(world: SceneWorld, sample_index: int, present: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A sparse LiDAR sweep in the LiDAR frame: ground rings plus points on the box faces facing the
    sensor. Returns (P, 5) float32 points and per-object point counts (exactly the points inside)."""
    objs = world.objects
    t = world.time_of(int(world.sample_timestamps[sample_index]))
    ex, ey, eyaw = (float(v) for v in world.ego.pose(t))
    rot_e = rot_z(eyaw)
    r_l2e = quat_to_matrix(world.lidar_quat)
    t_l2e = world.lidar_translation
    xy = objs.xy(t)
    counts = np.zeros(len(objs.cls), np.int64)
    chunks = []
    footprints = []
    for i in np.flatnonzero(present):
        center_e = rot_e.T @ (np.array([xy[i, 0], xy[i, 1], objs.wlh[i, 2] / 2]) - (ex, ey, 0.0))
        yaw_e = objs.yaw[i] - eyaw
        width, length, height = objs.wlh[i]
        footprints.append((center_e[:2], yaw_e, length, width))
        to_sensor = t_l2e - center_e
        dist = max(float(np.linalg.norm(to_sensor)), 1.0)
        r_obj = rot_z(yaw_e)
        local_sensor = r_obj.T @ to_sensor
        half = np.array([length, width, height]) / 2
        faces = []
        for axis in range(3):
            sign = 1.0 if local_sensor[axis] > 0 else -1.0
            if axis == 2 and sign < 0:
                continue
            if abs(local_sensor[axis]) > half[axis]:
                others = [a for a in range(3) if a != axis]
                faces.append((axis, sign, others, 4 * half[others[0]] * half[others[1]]))
        area = sum(f[3] for f in faces)
        n_total = int(np.clip(round(2500.0 * area / dist**2), 4, 250))
        pts = []
        for axis, sign, others, face_area in faces:
            k = max(1, round(n_total * face_area / area))
            p = np.zeros((k, 3))
            p[:, axis] = sign * (half[axis] - 0.01)  # just inside the box
            for o in others:
                p[:, o] = rng.uniform(-0.98, 0.98, k) * half[o]
            pts.append(p)
        p = np.concatenate(pts) @ r_obj.T + center_e
        counts[i] = len(p)
        inten = np.full((len(p), 1), 20.0 + 10.0 * objs.cls[i])
        chunks.append(np.concatenate([p, inten], 1))
    # Ground rings around the sensor, minus what falls under a box (those would count as inside it).
    radii = 2.5 * 1.17 ** np.arange(20)
    az = np.linspace(-math.pi, math.pi, 120, endpoint=False)
    rr, aa = np.meshgrid(radii, az, indexing='ij')
    g = np.stack([t_l2e[0] + rr.ravel() * np.cos(aa.ravel()), t_l2e[1] + rr.ravel() * np.sin(aa.ravel()),
                  np.zeros(rr.size)], 1)
    g[:, :2] += rng.normal(0.0, 0.03, (len(g), 2))
    keep = np.ones(len(g), bool)
    for c, yaw, length, width in footprints:
        local = (g[:, :2] - c) @ rot_z(yaw)[:2, :2]
        keep &= ~((np.abs(local[:, 0]) <= length / 2 + 0.05) & (np.abs(local[:, 1]) <= width / 2 + 0.05))
    chunks.append(np.concatenate([g[keep], np.full((int(keep.sum()), 1), 5.0)], 1))
    pts_e = np.concatenate(chunks)
    pts_l = (pts_e[:, :3] - t_l2e) @ r_l2e
    elev = np.degrees(np.arctan2(pts_l[:, 2], np.hypot(pts_l[:, 0], pts_l[:, 1])))
    ring = np.clip(np.round((elev + 30.0) / 40.0 * 31), 0, 31)
    out = np.concatenate([pts_l, pts_e[:, 3:4], ring[:, None]], 1).astype(np.float32)
    return out, counts


# ----------------------------------------------------------------------------------------------------
# parallel rendering of key frames

_WORKER: Dict[str, Any] = {}


def _init_worker(worlds: List[SceneWorld], cfg: SyntheticNuScenesConfig) -> None:
    cv2.setNumThreads(1)  # the pool already uses every core
    _WORKER['worlds'] = worlds
    _WORKER['cfg'] = cfg
    _WORKER['views'] = {}
    _WORKER['noise'] = _noise_tile(*cfg.image_size)


def _render_sample(job: Tuple[int, int]) -> Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Render and write the 6 images and the point cloud of one key frame."""
    scene_idx, k = job
    world: SceneWorld = _WORKER['worlds'][scene_idx]
    cfg: SyntheticNuScenesConfig = _WORKER['cfg']
    views = _WORKER['views'].get(scene_idx)
    if views is None:
        _WORKER['views'] = {scene_idx: [_CameraView(c, cfg.image_size) for c in world.cameras]}
        views = _WORKER['views'][scene_idx]
    objs = world.objects
    present = (objs.first <= k) & (k <= objs.last)
    # Per-frame randomness comes from its own seed so that results do not depend on worker scheduling.
    rng = np.random.default_rng([cfg.seed, scene_idx, k])
    visible = np.zeros(len(objs.cls), np.int64)
    silhouette = np.zeros(len(objs.cls), np.int64)
    out = Path(cfg.out_dir)
    for view in views:
        ts = world.camera_timestamp(k, view.name)
        offset = (int(rng.integers(0, 64)), int(rng.integers(0, 64)))
        img, vis, sil = render_camera(view, world, present, ts, _WORKER['noise'], offset)
        visible += vis
        silhouette += sil
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise RuntimeError(f'JPEG encoding failed for {world.filename(view.name, ts)}')
        # No fsync per image: the database only counts as complete once the tables folder is renamed
        # into place at the end, after every image has been written.
        atomic_write_bytes(out / world.filename(view.name, ts), buf.tobytes(), fsync=False)
    pts, counts = lidar_points(world, k, present, rng)
    ts = int(world.sample_timestamps[k])
    atomic_write_bytes(out / world.filename('LIDAR_TOP', ts), pts.tobytes(), fsync=False)
    return scene_idx, k, visible, silhouette, counts


# ----------------------------------------------------------------------------------------------------
# tables


class _Tokens:
    """Deterministic 32-hex-digit tokens from the seed."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng([seed, 0x70CE])

    def __call__(self) -> str:
        return self._rng.bytes(16).hex()


def _visibility_token(fraction: float) -> str:
    token = VISIBILITY_LEVELS[0][0]
    for tok, _level, lower in VISIBILITY_LEVELS:
        if fraction >= lower:
            token = tok
    return token


def _attribute_name(cls_name: str, speed: float) -> str:
    spec = CLASS_SPECS[cls_name]
    return spec.moving_attr if speed > 0.2 else spec.static_attr


def build_tables(worlds: List[SceneWorld], cfg: SyntheticNuScenesConfig,
                 render: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]]
                 ) -> Tuple[Dict[str, List[dict]], Dict[str, np.ndarray]]:
    """All 13 tables, and the map masks by file name."""
    tok = _Tokens(cfg.seed)
    h, w = cfg.image_size
    t: Dict[str, List[dict]] = {name: [] for name in TABLE_NAMES}
    cat_tok = {}
    for name in CATEGORIES:
        cat_tok[name] = tok()
        t['category'].append({'token': cat_tok[name], 'name': name,
                              'description': f'Synthetic objects of category {name}.'})
    attr_tok = {}
    for name in ATTRIBUTES:
        attr_tok[name] = tok()
        t['attribute'].append({'token': attr_tok[name], 'name': name, 'description': f'Object is {name}.'})
    for vtok, level, lower in VISIBILITY_LEVELS:
        upper = {'1': 40, '2': 60, '3': 80, '4': 100}[vtok]
        t['visibility'].append({'token': vtok, 'level': level, 'description':
                                f'visibility of whole object is between {int(lower * 100)} and {upper}%'})
    sensor_tok = {}
    for ch in (*CAMERA_NAMES, 'LIDAR_TOP'):
        sensor_tok[ch] = tok()
        t['sensor'].append({'token': sensor_tok[ch], 'channel': ch,
                            'modality': 'lidar' if ch == 'LIDAR_TOP' else 'camera'})
    logs_by_location: Dict[str, List[str]] = {loc: [] for loc in LOCATIONS}
    trajectories: Dict[str, List[np.ndarray]] = {loc: [] for loc in LOCATIONS}
    for world in worlds:
        log_token = tok()
        logs_by_location[world.location].append(log_token)
        t['log'].append({'token': log_token, 'logfile': world.log_name, 'vehicle': f'n{world.index:03d}',
                         'date_captured': world.log_name[5:15], 'location': world.location})
        calib_tok = {}
        for cam in world.cameras:
            calib_tok[cam.name] = tok()
            t['calibrated_sensor'].append({
                'token': calib_tok[cam.name], 'sensor_token': sensor_tok[cam.name],
                'translation': cam.translation.tolist(), 'rotation': cam.quat.tolist(),
                'camera_intrinsic': cam.intrinsic.tolist()})
        calib_tok['LIDAR_TOP'] = tok()
        t['calibrated_sensor'].append({
            'token': calib_tok['LIDAR_TOP'], 'sensor_token': sensor_tok['LIDAR_TOP'],
            'translation': world.lidar_translation.tolist(), 'rotation': world.lidar_quat.tolist(),
            'camera_intrinsic': []})
        n = len(world.sample_timestamps)
        scene_token = tok()
        sample_toks = [tok() for _ in range(n)]
        channels = ('LIDAR_TOP', *CAMERA_NAMES)
        sd_toks = {ch: [tok() for _ in range(n)] for ch in channels}
        t['scene'].append({'token': scene_token, 'log_token': log_token, 'nbr_samples': n,
                           'first_sample_token': sample_toks[0], 'last_sample_token': sample_toks[-1],
                           'name': world.name,
                           'description': f'Synthetic drive {world.index}, {world.location}.'})
        for k in range(n):
            ts = int(world.sample_timestamps[k])
            t['sample'].append({'token': sample_toks[k], 'timestamp': ts,
                                'prev': sample_toks[k - 1] if k > 0 else '',
                                'next': sample_toks[k + 1] if k < n - 1 else '', 'scene_token': scene_token})
            for ch in channels:
                ch_ts = ts if ch == 'LIDAR_TOP' else world.camera_timestamp(k, ch)
                x, y, yaw = (float(v) for v in world.ego.pose(world.time_of(ch_ts)))
                pose_token = tok()
                t['ego_pose'].append({'token': pose_token, 'timestamp': ch_ts, 'rotation': yaw_quat(yaw),
                                      'translation': [x, y, 0.0]})
                is_cam = ch != 'LIDAR_TOP'
                t['sample_data'].append({
                    'token': sd_toks[ch][k], 'sample_token': sample_toks[k], 'ego_pose_token': pose_token,
                    'calibrated_sensor_token': calib_tok[ch], 'timestamp': ch_ts,
                    'fileformat': 'jpg' if is_cam else 'pcd', 'is_key_frame': True,
                    'height': h if is_cam else 0, 'width': w if is_cam else 0,
                    'filename': world.filename(ch, ch_ts),
                    'prev': sd_toks[ch][k - 1] if k > 0 else '',
                    'next': sd_toks[ch][k + 1] if k < n - 1 else ''})
        ex, ey, _ = world.ego.pose((world.sample_timestamps - world.base_timestamp) * 1e-6)
        trajectories[world.location].append(np.stack([ex, ey], 1))
        objs = world.objects
        for i in range(len(objs.cls)):
            cls_name = DETECTION_CLASSES[objs.cls[i]]
            spec = CLASS_SPECS[cls_name]
            inst_token = tok()
            ks = list(range(int(objs.first[i]), int(objs.last[i]) + 1))
            ann_toks = [tok() for _ in ks]
            attr = _attribute_name(cls_name, float(objs.speed[i]))
            t['instance'].append({'token': inst_token, 'category_token': cat_tok[spec.category],
                                  'nbr_annotations': len(ks), 'first_annotation_token': ann_toks[0],
                                  'last_annotation_token': ann_toks[-1]})
            for j, k in enumerate(ks):
                xy = world.objects.xy(world.time_of(int(world.sample_timestamps[k])))[i]
                vis, sil, npts = (render[(world.index, k)][c][i] for c in range(3))
                t['sample_annotation'].append({
                    'token': ann_toks[j], 'sample_token': sample_toks[k], 'instance_token': inst_token,
                    'visibility_token': _visibility_token(vis / sil if sil > 0 else 0.0),
                    'attribute_tokens': [attr_tok[attr]] if attr else [],
                    'translation': [float(xy[0]), float(xy[1]), float(objs.wlh[i, 2] / 2)],
                    'size': objs.wlh[i].tolist(), 'rotation': yaw_quat(float(objs.yaw[i])),
                    'prev': ann_toks[j - 1] if j > 0 else '',
                    'next': ann_toks[j + 1] if j < len(ks) - 1 else '',
                    'num_lidar_pts': int(npts), 'num_radar_pts': 0})
    masks = {}
    for loc in LOCATIONS:
        if not logs_by_location[loc]:
            continue
        map_token = tok()
        filename = f'maps/{map_token}.png'
        t['map'].append({'category': 'semantic_prior', 'token': map_token, 'filename': filename,
                         'log_tokens': logs_by_location[loc]})
        masks[filename] = _map_mask(trajectories[loc])
    return t, masks


def _map_mask(trajectories: List[np.ndarray]) -> np.ndarray:
    """Drivable area: a 20 m wide road along each ego path, in the devkit's MapMask pixel convention
    (column = x / res, row = height - y / res)."""
    mask = np.zeros((MAP_SIZE_PX, MAP_SIZE_PX), np.uint8)
    for traj in trajectories:
        start, end = traj[0], traj[-1]
        direction = end - start
        norm = float(np.linalg.norm(direction))
        direction = direction / norm if norm > 1e-6 else np.array([1.0, 0.0])
        # extend the road beyond the driven part so that it runs through the whole view
        pts = np.concatenate([[start - 60 * direction], traj, [end + 60 * direction]])
        px = np.stack([pts[:, 0] / MAP_RESOLUTION, MAP_SIZE_PX - pts[:, 1] / MAP_RESOLUTION], 1)
        cv2.polylines(mask, [np.round(px).astype(np.int32)], False, 255, thickness=int(20 / MAP_RESOLUTION))
    return mask


# ----------------------------------------------------------------------------------------------------
# driver


def _prepare_out_dir(cfg: SyntheticNuScenesConfig) -> None:
    """Refuse to clobber data we did not generate; clear stale output of an earlier generation."""
    out = Path(cfg.out_dir)
    marker = out / MARKER_FILE
    version_dir = out / VERSION
    ours = ('samples', 'sweeps', 'maps', VERSION, MARKER_FILE)
    existing = [p for p in ours if (out / p).exists()]
    if not existing:
        return
    if not marker.is_file():
        raise FileExistsError(f'{out} already holds {", ".join(existing)} but no {MARKER_FILE}: it does not '
                              f'look generated by this tool; refusing to overwrite it (choose another --out-dir)')
    if version_dir.exists() and not cfg.overwrite:
        raise FileExistsError(f'{version_dir} already exists (a complete synthetic database); pass '
                              f'--overwrite to regenerate it')
    # Either --overwrite, or a previous run was interrupted before its tables were in place. Info pkls
    # converted from the old tables would point at tokens that no longer exist: remove them as well.
    for p in ('samples', 'sweeps', 'maps', VERSION):
        if (out / p).exists():
            shutil.rmtree(out / p)
    for stale in out.glob('*_infos_*.pkl'):
        stale.unlink()
    marker.unlink()


def generate_synthetic_nuscenes(cfg: SyntheticNuScenesConfig, progress: bool = False,
                                log: Optional[Callable[[str], None]] = None) -> GenerationSummary:
    """Generate the database described in the module docstring into ``cfg.out_dir``."""
    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare_out_dir(cfg)
    params = {'generator': 'sparsevit_bevdet.synthetic_nuscenes', 'generator_version': GENERATOR_VERSION,
              'version': VERSION, 'seed': cfg.seed, 'samples_per_scene': cfg.samples_per_scene,
              'image_size': list(cfg.image_size), 'sample_interval_us': cfg.sample_interval_us,
              'jpeg_quality': cfg.jpeg_quality}
    # The marker goes first: it lets a later run recognise (and clean) an interrupted generation.
    atomic_write_json(out / MARKER_FILE, params, indent=1)
    worlds = build_worlds(cfg)
    jobs = [(w.index, k) for w in worlds for k in range(len(w.sample_timestamps))]
    render: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(jobs))
    if log:
        log(f'rendering {len(jobs)} key frames x {len(CAMERA_NAMES)} cameras at '
            f'{cfg.image_size[0]}x{cfg.image_size[1]} with {cfg.workers} worker(s)')

    def collect(result: Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]) -> None:
        scene_idx, k, vis, sil, counts = result
        render[(scene_idx, k)] = (vis, sil, counts)
        if bar is not None:
            bar.update()

    if cfg.workers == 1:
        _init_worker(worlds, cfg)
        try:
            for job in jobs:
                collect(_render_sample(job))
        finally:
            _WORKER.clear()
    else:
        method = 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(worlds, cfg)) as pool:
            for result in pool.map(_render_sample, jobs, chunksize=2):
                collect(result)
    if bar is not None:
        print()
    tables, masks = build_tables(worlds, cfg, render)
    for filename, mask in masks.items():
        ok, buf = cv2.imencode('.png', mask)
        if not ok:
            raise RuntimeError(f'PNG encoding failed for {filename}')
        atomic_write_bytes(out / filename, buf.tobytes())
    # Tables last, into a temporary folder renamed into place: v1.0-mini exists only when complete.
    tmp_dir = Path(tempfile.mkdtemp(dir=out, prefix=f'.{VERSION}.', suffix='.tmp'))
    try:
        for name in TABLE_NAMES:
            atomic_write_json(tmp_dir / f'{name}.json', tables[name], indent=0)
        os.chmod(tmp_dir, 0o755)
        os.rename(tmp_dir, out / VERSION)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    split_of = dict(_scene_names())
    per_class: Dict[str, Dict[str, int]] = {'mini_train': {}, 'mini_val': {}}
    for world in worlds:
        split = split_of[world.name]
        objs = world.objects
        for i in range(len(objs.cls)):
            name = DETECTION_CLASSES[objs.cls[i]]
            per_class[split][name] = per_class[split].get(name, 0) + int(objs.last[i] - objs.first[i] + 1)
    hidden = sum(int(np.count_nonzero(
        (render[(w.index, k)][0] == 0) & (w.objects.first <= k) & (k <= w.objects.last)))
        for w in worlds for k in range(len(w.sample_timestamps)))
    return GenerationSummary(
        out_dir=out, num_scenes=len(worlds), num_samples=len(jobs), num_images=len(jobs) * len(CAMERA_NAMES),
        num_annotations=len(tables['sample_annotation']), num_instances=len(tables['instance']),
        annotations_per_class=per_class, hidden_annotations=hidden, seconds=time.perf_counter() - start)

