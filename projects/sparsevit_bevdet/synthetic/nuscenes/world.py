"""The synthetic world: generation settings, scenes with ego motion, objects and the rig."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...datasets.geometry import quat_axis_angle, quat_mul, quat_to_matrix, rot_z, yaw_quat
from ...datasets.nuscenes_format import CAMERA_NAMES, DETECTION_CLASSES  # the data path's; the converter's too

VERSION = 'v1.0-mini'
# A partial trainval database: scenes named from the devkit's train / val splits, as many as asked for. The
# devkit's evaluation of eval set 'val' takes the val scenes a database holds, so a larger val split than
# mini's two scenes stays a devkit-evaluated nuScenes split.
VERSIONS = ('v1.0-mini', 'v1.0-trainval')
MARKER_FILE = 'synthetic_nuscenes.json'
# 3: class colours made distinguishable (bus / construction vehicle, truck / trailer, barrier / lane lines),
# the v1.0-trainval layout with per-split scene and sample counts; 4: an instance that finds no place for a long
# annotated span after 200 attempts tries shorter ones (v3 failed on a 32-sample val scene of the demo set); 5: objects
# show their heading and vehicles their motion in a single frame (FACE_MARKS: glass across the upper front and
# the front part of both sides; lit head / tail lamps on moving vehicles and cycles). Up to v4 the only cue was a
# darker front face, which the shading of a back face could mimic: the v4 demo's dense detector predicted
# orientation no better than chance and velocity 0 (mAOE 1.46, mAVE 1.57, docs/benchmarks.md, issue 17)
GENERATOR_VERSION = 5

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
    ClassSpec('trailer', 'vehicle.trailer', (2.90, 12.29, 3.87), (60, 25, 160), (1, 1), 0.3, (3, 8),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('bus', 'vehicle.bus.rigid', (2.94, 11.19, 3.47), (30, 215, 245), (1, 1), 0.5, (3, 9),
              'vehicle.moving', 'vehicle.stopped'),
    ClassSpec('truck', 'vehicle.truck', (2.52, 6.94, 2.84), (40, 130, 235), (1, 2), 0.5, (3, 10),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('construction_vehicle', 'vehicle.construction', (2.73, 6.37, 3.19), (215, 60, 125), (1, 1),
              0.3, (1, 3), 'vehicle.moving', 'vehicle.parked'),
    ClassSpec('car', 'vehicle.car', (1.95, 4.62, 1.73), (190, 85, 35), (6, 9), 0.6, (3, 12),
              'vehicle.moving', 'vehicle.parked'),
    ClassSpec('motorcycle', 'vehicle.motorcycle', (0.77, 2.11, 1.47), (190, 190, 30), (1, 2), 0.6, (4, 10),
              'cycle.with_rider', 'cycle.without_rider'),
    ClassSpec('bicycle', 'vehicle.bicycle', (0.61, 1.70, 1.29), (60, 190, 60), (1, 2), 0.6, (2, 5),
              'cycle.with_rider', 'cycle.without_rider'),
    ClassSpec('pedestrian', 'human.pedestrian.adult', (0.67, 0.73, 1.77), (150, 40, 200), (4, 7), 0.6,
              (0.8, 1.8), 'pedestrian.moving', 'pedestrian.standing'),
    ClassSpec('barrier', 'movable_object.barrier', (2.49, 0.48, 0.99), (60, 245, 180), (3, 5), 0.0, (0, 0),
              '', ''),
    ClassSpec('traffic_cone', 'movable_object.trafficcone', (0.41, 0.41, 1.07), (30, 80, 250), (3, 5), 0.0,
              (0, 0), '', ''),
)}
PLACEMENT_ORDER = tuple(CLASS_SPECS)
# Hues (HSV degrees of the RGB colour) at least 14 degrees apart, and the pairs the eye confuses at 128 x 352
# far apart: bus 52 vs construction vehicle 265, truck 28 vs trailer 344, barrier 81 (lime) vs the grey
# ground, lane lines and haze. Generator version 2 had bus 50 / construction vehicle 46, truck 28 / trailer
# 23 and grey barriers.

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
    version: str = VERSION  # 'v1.0-mini' (the devkit's 8 / 2 mini scenes) or 'v1.0-trainval' (partial)
    train_scenes: int = 8  # v1.0-trainval only: the first N scene names of the devkit's train split
    val_scenes: int = 2  # v1.0-trainval only: the first N scene names of the devkit's val split
    val_samples_per_scene: Optional[int] = None  # key frames per val scene (default samples_per_scene)
    image_size: Tuple[int, int] = (900, 1600)  # (height, width)
    sample_interval_us: int = 500_000  # nuScenes key frames come at 2 Hz
    jpeg_quality: int = 90
    workers: int = 1
    overwrite: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad parameter."""
        for field in ('samples_per_scene', 'val_samples_per_scene'):
            value = getattr(self, field)
            if value is not None and value < 2:
                raise ValueError(f'{field} must be >= 2 (instances must span two samples for the devkit '
                                 f'to derive velocities), got {value}')
        if self.version not in VERSIONS:
            raise ValueError(f'version must be one of {", ".join(VERSIONS)}, got {self.version!r}')
        if self.version == 'v1.0-mini' and (self.train_scenes, self.val_scenes) != (8, 2):
            raise ValueError(f'v1.0-mini holds the devkit\'s 8 mini_train and 2 mini_val scenes; got train_scenes='
                             f'{self.train_scenes}, val_scenes={self.val_scenes} (use version v1.0-trainval)')
        if self.version == 'v1.0-trainval':
            from nuscenes.utils.splits import train, val

            for field, names in (('train_scenes', train), ('val_scenes', val)):
                if not 1 <= getattr(self, field) <= len(names):
                    raise ValueError(f'{field} must be in [1, {len(names)}] (the devkit split\'s scenes), got '
                                     f'{getattr(self, field)}')
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
BOX_FACES = (((0, 1, 5, 4), (1.0, 0.0, 0.0)),  # front (+x, heading)
          ((2, 3, 7, 6), (-1.0, 0.0, 0.0)),  # back
          ((3, 0, 4, 7), (0.0, 1.0, 0.0)),  # left
          ((1, 2, 6, 5), (0.0, -1.0, 0.0)),  # right
          ((4, 5, 6, 7), (0.0, 0.0, 1.0)))  # top; the bottom face never faces a camera above ground


@dataclasses.dataclass(frozen=True)
class FaceMark:
    """A flat rectangle painted on one face of a box, from corner ``lo`` to corner ``hi`` in box units (x along
    the heading in l/2, y to the left in w/2, z up in h/2); the two share the face's coordinate."""

    face: int  # index into BOX_FACES
    lo: Tuple[float, float, float]
    hi: Tuple[float, float, float]
    color_bgr: Tuple[int, int, int]
    moving_only: bool  # lamps: lit only while the object moves

    def signs(self) -> np.ndarray:
        """(4, 3) corners in box units, in cyclic order."""
        lo, hi = np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64)
        a, b = (k for k in range(3) if lo[k] != hi[k])
        corners = np.repeat(lo[None], 4, 0)
        corners[[1, 2], a] = hi[a]
        corners[[2, 3], b] = hi[b]
        return corners


GLASS_BGR = (165, 150, 125)  # blue-grey glass reflecting the sky: unlike every class colour and the ground
HEAD_LAMP_BGR = (225, 245, 255)
TAIL_LAMP_BGR = (40, 30, 235)
# Heading marks (a windshield, and cab windows on the front part of both sides, so that a side view shows the
# heading too) on every class but traffic cones (round in the real world: the devkit ignores their orientation);
# lamps on the vehicles and cycles that move (their engines run; a parked vehicle's lamps are off), the single-frame
# cue to motion that real scenes give through lights, lanes and riders.
FACE_MARKS = (
    FaceMark(0, (1.0, -0.8, 0.15), (1.0, 0.8, 0.8), GLASS_BGR, False),
    FaceMark(2, (0.05, 1.0, 0.15), (0.8, 1.0, 0.8), GLASS_BGR, False),
    FaceMark(3, (0.05, -1.0, 0.15), (0.8, -1.0, 0.8), GLASS_BGR, False),
    FaceMark(0, (1.0, 0.45, -0.65), (1.0, 0.9, -0.3), HEAD_LAMP_BGR, True),
    FaceMark(0, (1.0, -0.9, -0.65), (1.0, -0.45, -0.3), HEAD_LAMP_BGR, True),
    FaceMark(1, (-1.0, 0.45, -0.65), (-1.0, 0.9, -0.3), TAIL_LAMP_BGR, True),
    FaceMark(1, (-1.0, -0.9, -0.65), (-1.0, -0.45, -0.3), TAIL_LAMP_BGR, True),
)
UNMARKED_CLASSES = ('traffic_cone',)
UNLIT_CLASSES = ('pedestrian', 'barrier', 'traffic_cone')




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


def scene_names(cfg: Optional[SyntheticNuScenesConfig] = None) -> List[Tuple[str, str]]:
    """(scene name, devkit split) of the generated scenes, train first, in the devkit's order: the mini
    split for v1.0-mini (also without ``cfg``), the first ``train_scenes`` / ``val_scenes`` names of the
    train / val splits for v1.0-trainval."""
    from nuscenes.utils import splits

    if cfg is None or cfg.version == 'v1.0-mini':
        return [(n, 'mini_train') for n in splits.mini_train] + [(n, 'mini_val') for n in splits.mini_val]
    return ([(n, 'train') for n in splits.train[:cfg.train_scenes]]
            + [(n, 'val') for n in splits.val[:cfg.val_scenes]])


def samples_in_scene(cfg: SyntheticNuScenesConfig, split: str) -> int:
    """Key frames of a scene of ``split`` (val scenes may be longer than train ones)."""
    if split.endswith('val') and cfg.val_samples_per_scene is not None:
        return cfg.val_samples_per_scene
    return cfg.samples_per_scene


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
                    # long scenes prefer long spans; after half the attempts any span of >= 2 samples will do,
                    # as a long span crossing a crowded scene may find no gap (seen for a 32-sample val scene)
                    shortest = 2 if n <= 10 or _attempt >= 200 else max(2, max_span // 2)
                    length = int(rng.integers(shortest, min(n, max_span) + 1))
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
    """Sample the scenes (trajectories, calibration, timestamps, objects) from the seed."""
    ranges = _class_ranges()
    root_seq = np.random.SeedSequence(cfg.seed)
    worlds = []
    names = scene_names(cfg)
    for idx, ((name, split), seq) in enumerate(zip(names, root_seq.spawn(len(names)))):
        num_samples = samples_in_scene(cfg, split)
        rng = np.random.default_rng(seq)
        location = LOCATIONS[idx % len(LOCATIONS)]
        moving = rng.random() > 0.15
        ego = EgoMotion(x0=float(rng.uniform(70, 130)), y0=float(rng.uniform(70, 130)),
                        yaw0=float(rng.uniform(-math.pi, math.pi)),
                        speed=float(rng.uniform(3.0, 9.0)) if moving else 0.0,
                        yaw_rate=float(rng.uniform(-0.06, 0.06)))
        base = 1_533_000_000_000_000 + idx * 7_200_000_000 + int(rng.integers(0, 1_000_000_000))
        jitter = rng.integers(-15_000, 15_001, num_samples)
        jitter[0] = 0
        stamps = base + np.arange(num_samples, dtype=np.int64) * cfg.sample_interval_us + jitter
        times = (stamps - base) * 1e-6
        lidar_yaw = -math.pi / 2 + math.radians(rng.uniform(-0.2, 0.2))
        lidar_t = np.asarray(LIDAR_MOUNT) + rng.uniform(-0.01, 0.01, 3)
        date = f'2018-{8 + idx // 28:02d}-{1 + idx % 28:02d}'  # a valid date for up to 140 scenes
        log_name = f'n{idx:03d}-{date}-{(10 + idx) % 24:02d}-{idx * 5 % 60:02d}-00+0800'
        worlds.append(SceneWorld(
            index=idx, name=name, log_name=log_name, location=location, ego=ego, base_timestamp=int(base),
            sample_timestamps=stamps.astype(np.int64), cameras=_make_rig(rng, cfg.image_size),
            lidar_quat=np.asarray(yaw_quat(lidar_yaw)), lidar_translation=lidar_t,
            objects=_place_objects(rng, ego, times, ranges)))
    return worlds



def box_corners(center: np.ndarray, wlh: np.ndarray, yaw: float) -> np.ndarray:
    """(8, 3) corners of a box given its gravity centre, (w, l, h) and yaw in one frame."""
    return box_points(center, wlh, yaw, _CORNER_SIGNS)


def box_points(center: np.ndarray, wlh: np.ndarray, yaw: float, signs: np.ndarray) -> np.ndarray:
    """(K, 3) points given in box units (x in l/2 along the heading, y in w/2, z in h/2) in the box's frame."""
    half = np.array([wlh[1], wlh[0], wlh[2]]) / 2
    return (np.asarray(signs, np.float64) * half) @ rot_z(yaw).T + center
