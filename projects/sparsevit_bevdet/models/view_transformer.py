"""BEVDet's view transformer: Lift-Splat-Shoot (Philion & Fidler 2020) as used by BEVDet (Huang et al. 2021).

Lift: a 1x1 conv predicts, for every image-feature pixel, a softmax over ``D`` depth bins and ``C``
context channels; their outer product places the context along the pixel's ray.
Splat: every frustum point ``(u, v, d)`` (augmented-image pixel coordinates, depth in metres) is taken to
the ego frame with the per-camera matrices and summed into a BEV grid ("voxel pooling").

Camera-aware depth (``camera_aware=True``, off by default as in BEVDet): the depth net also sees each
feature pixel's ray, as four channels computed from the same matrices (:meth:`LSSViewTransformer.ray_encoding`):
the ray's ego-frame direction and the inverse distance at which it meets the ground plane. A network
without absolute position embedding cannot otherwise tell where in the (augmented) image a pixel lies, which
is most of what its depth is; BEVDepth (Li et al. 2022) feeds the camera parameters to its depth net for
the same reason. The depth net is then a 3x3 conv + BN + ReLU followed by the 1x1 projection.

Matrix conventions (those of :mod:`projects.sparsevit_bevdet.datasets.transforms`):

* ``img_aug_matrix`` ``(B, N, 4, 4)``: original pixel ``(u, v, d, 1)`` -> augmented pixel;
* ``cam2img`` ``(B, N, 4, 4)`` (or ``3x3``): intrinsics of the original image, ``cam2img @ (X, Y, Z, 1) =
  (u Z, v Z, Z, 1)``;
* ``cam2ego`` ``(B, N, 4, 4)``: camera -> ego frame of the key frame;
* ``bev_aug_matrix`` ``(B, 4, 4)``: BEV data augmentation, ``p_aug = bev_aug_matrix @ p``.

A frustum point of the augmented image lies in the (augmented) ego frame at
``bev_aug @ cam2ego @ inv(cam2img) @ (u d, v d, d, 1)`` with ``(u, v, d, 1) = inv(img_aug) @ (u', v', d, 1)``.

BEV layout (checked against mmdet3d's ``CenterHead.get_targets_single`` in the tests): the output is
``(B, C * nz, ny, nx)``; row ``iy = floor((y - y_min) / dy)``, column ``ix = floor((x - x_min) / dx)``, with
ego ``x`` forward and ``y`` left as in ``LiDARInstance3DBoxes``. Height bins are stacked z-major along the
channels, as BEVDet does (``nz = 1`` for the usual ``z=[-5, 3, 8]``).
"""
from __future__ import annotations

from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['BEVGeometry', 'LSSViewTransformer', 'pad_to_4x4']

_GRID_KEYS = ('x', 'y', 'z', 'depth')
RAY_CHANNELS = 4  # ego-frame ray direction (3) and inverse ground distance (1)
GROUND_SCALE = 10.0  # metres: the inverse ground distance is given as GROUND_SCALE / distance, order 1 like the rest


def pad_to_4x4(mat: Tensor) -> Tensor:
    """``(..., 3, 3)``, ``(..., 3, 4)`` or ``(..., 4, 4)`` -> ``(..., 4, 4)`` (identity padding)."""
    rows, cols = mat.shape[-2:]
    if (rows, cols) == (4, 4):
        return mat
    if rows != 3 or cols not in (3, 4):
        raise ValueError(f'expected (..., 3, 3), (..., 3, 4) or (..., 4, 4) matrices, got shape {tuple(mat.shape)}')
    out = torch.zeros(*mat.shape[:-2], 4, 4, dtype=mat.dtype, device=mat.device)
    out[..., :3, :cols] = mat
    out[..., 3, 3] = 1
    return out


class BEVGeometry(NamedTuple):
    """Where the frustum points of one batch land in the BEV grid.

    ``point_index``: ``(K,)`` flat index into ``(B, N, D, fH, fW)`` (selects the depth probability), or None
    when every point is kept (static geometry, ``K = B * N * D * fH * fW``);
    ``pixel_index``: ``(K,)`` flat index into ``(B, N, fH, fW)`` (selects the context feature);
    ``ranks``: ``(K,)`` flat index into the output ``(B, nz, ny, nx)``; ``B * nz * ny * nx`` (a cell that is
    dropped) for a point outside the grid in a static geometry.
    """

    point_index: Optional[Tensor]
    pixel_index: Tensor
    ranks: Tensor


def _axis(cfg: Mapping[str, Sequence[float]], key: str) -> Tuple[float, float, float]:
    if key not in cfg:
        raise ValueError(f'grid_config needs keys {_GRID_KEYS} (each [min, max, step]); missing {key!r}')
    value = cfg[key]
    if len(value) != 3:
        raise ValueError(f'grid_config[{key!r}] must be [min, max, step], got {value!r}')
    lo, hi, step = (float(v) for v in value)
    if not (hi > lo and step > 0):
        raise ValueError(f'grid_config[{key!r}] must have max > min and step > 0, got {value!r}')
    return lo, hi, step


def _num_cells(lo: float, hi: float, step: float, key: str) -> int:
    n = (hi - lo) / step
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f'grid_config[{key!r}]: (max - min) / step = {n} is not a whole number of cells')
    return round(n)


class LSSViewTransformer(BaseModule):
    """Lift-Splat view transformer of BEVDet with pure-PyTorch voxel pooling (CPU and CUDA).

    Args:
        grid_config: ``dict(x=[min, max, step], y=[...], z=[...], depth=[min, max, step])``; metres.
            The depth bins are ``arange(min, max, step)`` (BEVDet: ``[1, 60, 1]`` -> 59 bins 1..59 m).
        input_size: ``(H, W)`` of the network input images.
        downsample: stride of the image features the transformer receives.
        in_channels: channels of those features.
        out_channels: context channels ``C`` per frustum point (BEVDet: 64).
        cache_geometry: reuse the BEV indices of the previous call when all matrices are equal (e.g. a
            fixed rig at test time without augmentation); the check is one ``torch.equal``.
        static_geometry: splat every frustum point, those outside the grid into a dropped cell, instead of
            selecting the points inside the grid: shapes then do not depend on the camera matrices and the
            forward never waits for the device (no ``nonzero``, no cache check), so it can be captured as a
            CUDA graph (``BEVDet(cuda_graphs=True)`` needs it) or compiled without graph breaks. It splats
            more points (all of them); ``cache_geometry`` does not apply.
        camera_aware: give the depth net each pixel's ray encoding (see the module docstring).
        depth_net_channels: hidden channels of the camera-aware depth net (default ``in_channels``).

    Forward: ``img_feats (B, N, in_channels, fH, fW)`` and the matrices -> ``(bev (B, C * nz, ny, nx),
    depth (B, N, D, fH, fW))``, ``fH, fW = H // downsample, W // downsample``.
    """

    def __init__(self,
                 grid_config: Dict[str, Sequence[float]],
                 input_size: Sequence[int] = (256, 704),
                 downsample: int = 16,
                 in_channels: int = 512,
                 out_channels: int = 64,
                 cache_geometry: bool = True,
                 static_geometry: bool = False,
                 camera_aware: bool = False,
                 depth_net_channels: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        unknown = sorted(set(grid_config) - set(_GRID_KEYS))
        if unknown:
            raise ValueError(f'grid_config: unknown keys {unknown}; expected {_GRID_KEYS} '
                             f"(BEVDet's old 'xbound'/'dbound' names are not accepted)")
        axes = [_axis(grid_config, k) for k in ('x', 'y', 'z')]
        self.grid_config = {k: list(_axis(grid_config, k)) for k in _GRID_KEYS}
        self.grid_size = tuple(_num_cells(*a, k) for a, k in zip(axes, 'xyz'))  # (nx, ny, nz)
        self.register_buffer('grid_lower', torch.tensor([a[0] for a in axes]), persistent=False)
        self.register_buffer('grid_interval', torch.tensor([a[2] for a in axes]), persistent=False)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.downsample = int(downsample)
        self.feature_size = (self.input_size[0] // self.downsample, self.input_size[1] // self.downsample)
        if min(self.feature_size) < 1:
            raise ValueError(f'input_size {self.input_size} is smaller than downsample {self.downsample}')
        self.register_buffer('frustum', self._create_frustum(), persistent=False)
        self.num_depth = self.frustum.shape[0]
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.camera_aware = bool(camera_aware)
        if self.camera_aware:
            hidden = self.in_channels if depth_net_channels is None else int(depth_net_channels)
            if hidden < 1:
                raise ValueError(f'depth_net_channels must be >= 1, got {depth_net_channels!r}')
            self.depth_net = nn.Sequential(
                nn.Conv2d(self.in_channels + RAY_CHANNELS, hidden, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, self.num_depth + self.out_channels, kernel_size=1))
        elif depth_net_channels is not None:
            raise ValueError('depth_net_channels only applies with camera_aware=True')
        else:
            self.depth_net = nn.Conv2d(self.in_channels, self.num_depth + self.out_channels, kernel_size=1)
        self.cache_geometry = cache_geometry
        self.static_geometry = bool(static_geometry)
        self._geometry_cache: Optional[Tuple[Tensor, BEVGeometry]] = None

    @property
    def bev_channels(self) -> int:
        """Channels of the BEV map: context channels times height bins."""
        return self.out_channels * self.grid_size[2]

    def _create_frustum(self) -> Tensor:
        """``(D, fH, fW, 3)`` frustum points ``(u, v, d)`` in augmented-image pixels and metres.

        Feature pixel ``(i, j)`` of a stride-``s`` map is the centre of its ``s x s`` input patch,
        ``u = (j + 0.5) s - 0.5`` in OpenCV pixel coordinates (the patch-embedding receptive field of
        Swin / SparseViT). BEVDet uses ``linspace(0, W - 1, fW)`` instead, which drifts by up to half a
        stride towards the image border.
        """
        d_lo, d_hi, d_step = self.grid_config['depth']
        depths = torch.arange(d_lo, d_hi, d_step, dtype=torch.float64)
        if depths.numel() == 0:
            raise ValueError(f"grid_config['depth'] = {self.grid_config['depth']} gives no depth bins")
        fh, fw = self.feature_size
        s = float(self.downsample)
        us = (torch.arange(fw, dtype=torch.float64) + 0.5) * s - 0.5
        vs = (torch.arange(fh, dtype=torch.float64) + 0.5) * s - 0.5
        d, v, u = torch.meshgrid(depths, vs, us, indexing='ij')
        return torch.stack([u, v, d], dim=-1).float()

    # -- geometry -----------------------------------------------------------------------------
    def frustum_points_ego(self, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                           bev_aug_matrix: Tensor, frustum: Optional[Tensor] = None) -> Tensor:
        """Ego-frame (after BEV augmentation) ``(x, y, z)`` of every frustum point.

        Args: ``cam2img``, ``cam2ego``, ``img_aug_matrix`` ``(B, N, 4, 4)`` (``cam2img`` may be 3x3);
        ``bev_aug_matrix`` ``(B, 4, 4)``; ``frustum`` ``(D', fH, fW, 3)`` points ``(u', v', d)`` (default: the
        transformer's own frustum). Returns ``(B, N, D, fH, fW, 3)`` float32.
        """
        cam2img = pad_to_4x4(cam2img)
        if cam2ego.shape[-2:] != (4, 4) or img_aug_matrix.shape[-2:] != (4, 4) or bev_aug_matrix.shape[-2:] != (4, 4):
            raise ValueError(f'cam2ego / img_aug_matrix / bev_aug_matrix must be 4x4; got {tuple(cam2ego.shape)}, '
                             f'{tuple(img_aug_matrix.shape)}, {tuple(bev_aug_matrix.shape)}')
        b, n = cam2ego.shape[:2]
        if cam2img.shape[:2] != (b, n) or img_aug_matrix.shape[:2] != (b, n) or bev_aug_matrix.shape[0] != b:
            raise ValueError(f'matrix batch shapes disagree: cam2img {tuple(cam2img.shape)}, cam2ego '
                             f'{tuple(cam2ego.shape)}, img_aug_matrix {tuple(img_aug_matrix.shape)}, '
                             f'bev_aug_matrix {tuple(bev_aug_matrix.shape)}')
        device = cam2ego.device
        # float32 with autocast off: half precision would move points across cells 0.8 m wide at 50 m.
        with torch.autocast(device_type=device.type, enabled=False):
            frustum = (self.frustum if frustum is None else frustum).to(device=device, dtype=torch.float32)
            ones = frustum.new_ones((*frustum.shape[:-1], 1))
            q = torch.cat([frustum, ones], dim=-1)  # (D, fH, fW, 4): (u', v', d, 1)
            # inv_ex: linalg.inv's singularity check would wait for the device (not capturable)
            img_unaug = torch.linalg.inv_ex(img_aug_matrix.float()).inverse
            p = torch.einsum('bnij,dhwj->bndhwi', img_unaug, q)  # (u, v, d, 1) in the original image
            p = torch.cat([p[..., :2] * p[..., 2:3], p[..., 2:]], dim=-1)  # (u d, v d, d, 1)
            img2ego = bev_aug_matrix.float()[:, None] @ cam2ego.float() @ torch.linalg.inv_ex(cam2img.float()).inverse
            pts = torch.einsum('bnij,bndhwj->bndhwi', img2ego[..., :3, :], p)
        return pts

    def ray_encoding(self, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                     bev_aug_matrix: Tensor) -> Tensor:
        """``(B * N, 4, fH, fW)``: per feature pixel, the ego-frame direction of its ray per metre of depth
        ``(dx, dy, dz)`` and ``GROUND_SCALE * max(0, -dz / z_cam)``, the scaled inverse of the depth at which the
        ray meets the ego ground plane ``z = 0`` (0 for rays at or above the horizon; ``z_cam`` is the camera
        height)."""
        with torch.no_grad():
            unit = self.frustum[:2].clone()  # two depth slices; overwrite their depths with 1 m and 2 m
            unit[0, ..., 2] = 1.0
            unit[1, ..., 2] = 2.0
            pts = self.frustum_points_ego(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix, frustum=unit)
            direction = pts[:, :, 1] - pts[:, :, 0]  # (B, N, fH, fW, 3)
            origin_z = (pts[:, :, 0, ..., 2] - direction[..., 2]).clamp_min(1e-3)
            inv_ground = GROUND_SCALE * (-direction[..., 2] / origin_z).clamp_min(0.0)
            rays = torch.cat([direction, inv_ground[..., None]], dim=-1)
            b, n, fh, fw, _ = rays.shape
            return rays.permute(0, 1, 4, 2, 3).reshape(b * n, RAY_CHANNELS, fh, fw)

    def bev_geometry(self, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                     bev_aug_matrix: Tensor) -> BEVGeometry:
        """BEV cell of every frustum point inside the grid (see :class:`BEVGeometry`); cached by matrices
        (with ``static_geometry``: of every point, never cached)."""
        with torch.no_grad():
            if self.static_geometry:
                return self._static_geometry(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
            key = None
            if self.cache_geometry:
                key = torch.cat([pad_to_4x4(cam2img).float().flatten(1), cam2ego.float().flatten(1),
                                 img_aug_matrix.float().flatten(1), bev_aug_matrix.float().flatten(1)], dim=1)
                cached = self._geometry_cache
                if (cached is not None and cached[0].shape == key.shape and cached[0].device == key.device
                        and torch.equal(cached[0], key)):
                    return cached[1]
            pts = self.frustum_points_ego(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
            _, n, d, fh, fw, _ = pts.shape
            cells, inside = self._cells(pts)
            nx, ny, nz = self.grid_size
            point_index = inside.nonzero().squeeze(1)
            cells = cells[point_index]
            batch = point_index // (n * d * fh * fw)
            ranks = ((batch * nz + cells[:, 2]) * ny + cells[:, 1]) * nx + cells[:, 0]
            camera = point_index // (d * fh * fw)  # flat (b, n)
            pixel_index = camera * (fh * fw) + point_index % (fh * fw)
            geometry = BEVGeometry(point_index, pixel_index, ranks)
            if key is not None:
                self._geometry_cache = (key.clone(), geometry)
        return geometry

    def _cells(self, pts: Tensor) -> Tuple[Tensor, Tensor]:
        """``(..., 3)`` ego points -> ``(M, 3)`` long grid cells ``(x, y, z)`` and ``(M,)`` bool inside the grid."""
        lower = self.grid_lower.to(pts.device, torch.float32)
        interval = self.grid_interval.to(pts.device, torch.float32)
        # floor, not truncation: a point 0.1 m below the grid must not land in cell 0
        cells = torch.floor((pts.reshape(-1, 3) - lower) / interval).long()
        nx, ny, nz = self.grid_size
        inside = ((cells[:, 0] >= 0) & (cells[:, 0] < nx) & (cells[:, 1] >= 0) & (cells[:, 1] < ny)
                  & (cells[:, 2] >= 0) & (cells[:, 2] < nz))
        return cells, inside

    def _static_geometry(self, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                         bev_aug_matrix: Tensor) -> BEVGeometry:
        """Every frustum point, in ``(B, N, D, fH, fW)`` order; points outside the grid go to the dropped cell."""
        pts = self.frustum_points_ego(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
        b, n, d, fh, fw, _ = pts.shape
        cells, inside = self._cells(pts)
        nx, ny, nz = self.grid_size
        point = torch.arange(cells.shape[0], device=cells.device)
        batch = point // (n * d * fh * fw)
        ranks = ((batch * nz + cells[:, 2]) * ny + cells[:, 1]) * nx + cells[:, 0]
        ranks = torch.where(inside, ranks, b * nz * ny * nx)
        pixel_index = (point // (d * fh * fw)) * (fh * fw) + point % (fh * fw)
        return BEVGeometry(None, pixel_index, ranks)

    # -- lift / splat -------------------------------------------------------------------------
    def splat(self, context: Tensor, depth: Tensor, geometry: BEVGeometry) -> Tensor:
        """Sum ``depth * context`` of every frustum point into its BEV cell.

        Args:
            context: ``(B, N, C, fH, fW)``; depth: ``(B, N, D, fH, fW)`` (probabilities or any weights).
        Returns:
            ``(B, C * nz, ny, nx)`` (z-major channels).
        """
        b, n, c, fh, fw = context.shape
        nx, ny, nz = self.grid_size
        ctx = context.permute(0, 1, 3, 4, 2).reshape(b * n * fh * fw, c)
        cells = b * nz * ny * nx
        if geometry.point_index is None:  # static: every point, the outside ones into one extra, dropped cell
            values = depth.reshape(-1, 1) * ctx[geometry.pixel_index]
            bev = values.new_zeros(cells + 1, c).index_add_(0, geometry.ranks, values)[:cells]
        else:
            # gather only the points inside the grid: the (K, C) frustum features are never built densely
            values = depth.reshape(-1)[geometry.point_index, None] * ctx[geometry.pixel_index]
            bev = values.new_zeros(cells, c).index_add_(0, geometry.ranks, values)
        return bev.view(b, nz, ny, nx, c).permute(0, 1, 4, 2, 3).reshape(b, nz * c, ny, nx)

    def forward(self, img_feats: Tensor, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                bev_aug_matrix: Tensor) -> Tuple[Tensor, Tensor]:
        """``img_feats (B, N, C_in, fH, fW)`` -> ``(bev (B, C * nz, ny, nx), depth (B, N, D, fH, fW))``."""
        if img_feats.dim() != 5:
            raise ValueError(f'LSSViewTransformer expects (B, N, C, fH, fW) features, got {tuple(img_feats.shape)}')
        b, n, c, fh, fw = img_feats.shape
        if c != self.in_channels or (fh, fw) != self.feature_size:
            raise ValueError(f'LSSViewTransformer was built for {self.in_channels}-channel features of size '
                             f'{self.feature_size} (input_size {self.input_size} / downsample {self.downsample}); '
                             f'got {c} channels of size {(fh, fw)}')
        feats = img_feats.reshape(b * n, c, fh, fw)
        if self.camera_aware:
            rays = self.ray_encoding(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
            feats = torch.cat([feats, rays.to(feats.dtype)], dim=1)
        x = self.depth_net(feats)
        depth = x[:, :self.num_depth].softmax(dim=1).view(b, n, self.num_depth, fh, fw)
        context = x[:, self.num_depth:].view(b, n, self.out_channels, fh, fw)
        geometry = self.bev_geometry(cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
        return self.splat(context, depth, geometry), depth

    def extra_repr(self) -> str:
        return (f'grid_size(nx, ny, nz)={self.grid_size}, depth_bins={self.num_depth}, '
                f'feature_size={self.feature_size}, in_channels={self.in_channels}, '
                f'out_channels={self.out_channels}, camera_aware={self.camera_aware}')

