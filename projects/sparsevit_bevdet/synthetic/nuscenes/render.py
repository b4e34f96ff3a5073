"""Rendering one camera image of the world: sky, textured ground, shadows and flat-shaded boxes with a z-buffer."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import cv2
import numpy as np

from ...datasets.geometry import rot_z
from ...datasets.nuscenes_format import DETECTION_CLASSES
from .world import (
    BOX_FACES,
    FACE_MARKS,
    GROUND_BASE,
    HAZE_COLOR,
    LIGHT_DIR,
    NEAR_PLANE,
    NOISE_AMPLITUDE,
    SHADOW_COLOR,
    SKY_HORIZON,
    SKY_ZENITH,
    UNLIT_CLASSES,
    UNMARKED_CLASSES,
    CameraCalib,
    SceneWorld,
    box_corners,
    box_points,
)

_UNMARKED = tuple(DETECTION_CLASSES.index(c) for c in UNMARKED_CLASSES)
_UNLIT = tuple(DETECTION_CLASSES.index(c) for c in UNLIT_CLASSES)


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


class CameraView:
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


def noise_tile(h: int, w: int) -> np.ndarray:
    """A fixed uint8 noise field larger than the image; each image takes a shifted window of it."""
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2 * NOISE_AMPLITUDE + 1, (h + 64, w + 64, 3), dtype=np.uint8)


def render_camera(view: CameraView, world: SceneWorld, present: np.ndarray, timestamp: int, noise: np.ndarray,
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
        corners_c = view.to_cam(box_corners(center_e, objs.wlh[i], yaw_e))
        if corners_c[:, 2].max() < NEAR_PLANE:
            continue
        boxes.append((i, corners_c, yaw_e, center_e))
    # Shadows first (on the ground, never occluding an object).
    for _i, corners_c, _, _ in boxes:
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
    for i, corners_c, yaw_e, center_e in boxes:
        base = objs.color[i]
        marks = [] if objs.cls[i] in _UNMARKED else [
            m for m in FACE_MARKS if not m.moving_only or (objs.speed[i] > 0 and objs.cls[i] not in _UNLIT)]
        r_obj_cam = view.r_c2e.T @ rot_z(yaw_e)  # object frame -> camera frame
        r_obj_glob = rot_z(objs.yaw[i])
        for face_idx, (corner_ids, normal) in enumerate(BOX_FACES):
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
            for mark in marks:  # coplanar with the face: its visible pixels are the face's
                if mark.face != face_idx:
                    continue
                mark_c = _clip_near(view.to_cam(box_points(center_e, objs.wlh[i], yaw_e, mark.signs())))
                if len(mark_c) < 3:
                    continue
                on = upd & view.fill_mask(view.project(mark_c), roi)
                np.copyto(img[y0:y1, x0:x1], np.asarray(mark.color_bgr, np.uint8), where=on[..., None])
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
