"""The LiDAR sweep of a key frame: ground and box-surface points in the LiDAR frame, per-box point counts."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from ...datasets.geometry import quat_to_matrix, rot_z
from .world import SceneWorld


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
