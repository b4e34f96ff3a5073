"""Rigid-transform helpers shared by the synthetic generator, the info converter and the metric.

Quaternions are (w, x, y, z) as in nuScenes. The functions are vectorised where the metric needs it
(thousands of boxes per evaluation) and avoid pyquaternion's per-object overhead.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    'matrix_to_quat',
    'pose_matrix',
    'quat_axis_angle',
    'quat_mul',
    'quat_to_matrix',
    'rot_z',
    'yaw_of_matrix',
    'yaw_quat',
]


def quat_to_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrices of quaternions ``(..., 4)`` (normalised first) as ``(..., 3, 3)``."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` with w >= 0 of rotation matrices ``(..., 3, 3)``.

    Shepperd's method: pick the numerically largest of w, x, y, z per matrix.
    """
    r = np.asarray(r, np.float64)
    m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    cand = np.stack([trace, m00, m11, m22], -1)
    pick = np.argmax(cand, -1)
    out = np.empty((*r.shape[:-2], 4))
    with np.errstate(invalid='ignore', divide='ignore'):
        s = np.sqrt(np.maximum(1.0 + trace, 1e-300)) * 2  # 4w
        q_w = np.stack([0.25 * s, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s], -1)
        s = np.sqrt(np.maximum(1.0 + m00 - m11 - m22, 1e-300)) * 2  # 4x
        q_x = np.stack([(m21 - m12) / s, 0.25 * s, (m01 + m10) / s, (m02 + m20) / s], -1)
        s = np.sqrt(np.maximum(1.0 + m11 - m00 - m22, 1e-300)) * 2  # 4y
        q_y = np.stack([(m02 - m20) / s, (m01 + m10) / s, 0.25 * s, (m12 + m21) / s], -1)
        s = np.sqrt(np.maximum(1.0 + m22 - m00 - m11, 1e-300)) * 2  # 4z
        q_z = np.stack([(m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, 0.25 * s], -1)
    for k, q in enumerate((q_w, q_x, q_y, q_z)):
        sel = pick == k
        out[sel] = q[sel]
    out *= np.where(out[..., :1] < 0, -1.0, 1.0)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def quat_mul(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Hamilton product ``a * b`` (rotation ``b`` first, then ``a``)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def quat_axis_angle(axis: Sequence[float], angle: float) -> np.ndarray:
    """Unit quaternion of a rotation by ``angle`` radians about ``axis``."""
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def yaw_quat(yaw: float) -> list:
    """Quaternion (as a list) of a rotation about +z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def rot_z(yaw: float) -> np.ndarray:
    """3x3 rotation about +z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose_matrix(rotation: Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform from a nuScenes (quaternion, translation) pair."""
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(rotation)
    t[:3, 3] = np.asarray(translation, np.float64)
    return t


def yaw_of_matrix(r: np.ndarray) -> np.ndarray:
    """Heading of the rotated x axis, as the devkit's ``quaternion_yaw`` computes it."""
    r = np.asarray(r, np.float64)
    return np.arctan2(r[..., 1, 0], r[..., 0, 0])
