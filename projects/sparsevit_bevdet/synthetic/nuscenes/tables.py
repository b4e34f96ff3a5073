"""The 13 nuScenes tables (and map masks) of the generated worlds, with deterministic tokens."""
from __future__ import annotations

from typing import Dict, List, Tuple

import cv2
import numpy as np

from ...datasets.geometry import yaw_quat
from ...datasets.nuscenes_format import CAMERA_NAMES, CATEGORIES, DETECTION_CLASSES, TABLE_NAMES
from ..common import rng_for
from .world import (
    ATTRIBUTES,
    CLASS_SPECS,
    LOCATIONS,
    MAP_RESOLUTION,
    MAP_SIZE_PX,
    VISIBILITY_LEVELS,
    SceneWorld,
    SyntheticNuScenesConfig,
)


class _Tokens:
    """Deterministic 32-hex-digit tokens from the seed."""

    def __init__(self, seed: int):
        self._rng = rng_for(seed, 0x70CE)

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
