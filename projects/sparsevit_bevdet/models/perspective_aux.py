"""Auxiliary perspective-view supervision of the image features (training only).

A detector trained from scratch learns what an object looks like only through the long path image
encoder -> depth x context -> BEV pooling -> BEV encoder -> CenterHead. This module adds a short path: a
small head on the image features (the view transformer's input) classifies every feature pixel by the 3D
box that covers it in that camera, with targets projected from the same ground-truth boxes and camera
matrices the BEV head uses (so every image and BEV augmentation is accounted for). It is dropped at test
time and costs one 3x3 and one 1x1 conv per feature map. Image-view auxiliary losses of this kind are
common in camera 3D detectors that train their image encoders jointly (e.g. BEVFormer v2's perspective head).

Target rule: feature pixel ``(i, j)`` (centre ``u = (j + 0.5) s - 0.5``, ``v = (i + 0.5) s - 0.5`` in
augmented-image pixels, stride ``s``) is positive for class ``k`` when it lies inside the 2D bounding box of
the projected corners (those at least ``NEAR_PLANE`` in front of the camera) of a class-``k`` box and that box
is the nearest one covering it; a box too small to cover any pixel centre marks the pixel of its projected
centre.

Attributes (``num_attributes=HEADING_BINS + 1``): on the pixels a box covers, the head also classifies the box's
heading relative to the camera ray through its centre (the observation angle ``alpha = yaw - azimuth``, which
is what its appearance shows: which side faces the camera) into :data:`HEADING_BINS` bins, and whether it
moves (speed above :data:`MOVING_SPEED`). Heading and motion are otherwise supervised only by CenterHead's L1 on
(sin, cos, vx, vy) at the end of the BEV path, which averages to nothing while the features cannot tell front
from back (docs/benchmarks.md, issue 17). Where the image was mirrored by the augmentation, alpha is mirrored
too, so the target is what the pixels show.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
from torch import Tensor, nn

__all__ = ['HEADING_BINS', 'MOVING_SPEED', 'PerspectiveObjectnessHead', 'class_targets', 'covering_box_index',
           'perspective_attribute_targets', 'perspective_targets', 'sigmoid_focal_loss']

NEAR_PLANE = 0.1  # metres: corners closer to (or behind) the image plane are not projected
HEADING_BINS = 8  # observation-angle classes of 45 degrees
MOVING_SPEED = 0.5  # m/s: slower boxes count as static


class PerspectiveObjectnessHead(nn.Module):
    """``(B * N, C, fH, fW)`` image features -> ``(B * N, num_classes + num_attributes, fH, fW)`` logits: the
    class logits first, then the attribute logits (:data:`HEADING_BINS` heading bins and one moving logit when
    ``num_attributes`` is ``HEADING_BINS + 1``).

    The class biases start at the logit of ``prior_prob`` (focal-loss practice), so the loss starts small.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int = 64,
                 prior_prob: float = 0.1, num_attributes: int = 0) -> None:
        super().__init__()
        if min(in_channels, num_classes, hidden_channels) < 1:
            raise ValueError(f'in_channels, num_classes and hidden_channels must be >= 1, got '
                             f'{in_channels}, {num_classes}, {hidden_channels}')
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f'prior_prob must be in (0, 1), got {prior_prob!r}')
        if num_attributes not in (0, HEADING_BINS + 1):
            raise ValueError(f'num_attributes must be 0 or {HEADING_BINS + 1} (heading bins and moving), '
                             f'got {num_attributes!r}')
        self.num_classes, self.num_attributes = num_classes, num_attributes
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_classes + num_attributes, kernel_size=1))
        with torch.no_grad():
            self.layers[-1].bias.zero_()
            self.layers[-1].bias[:num_classes] = float(torch.logit(torch.tensor(prior_prob)))

    def forward(self, feats: Tensor) -> Tensor:
        return self.layers(feats)


def covering_box_index(corners: Sequence[Tensor], mats: Dict[str, Tensor], feature_size: Sequence[int],
                       stride: int) -> Tensor:
    """Per camera and feature pixel, the index of the nearest box covering it (see the module docstring).

    Args:
        corners: per sample ``(M, 8, 3)`` box corners in the (BEV-augmented) ego frame.
        mats: ``cam2img``, ``cam2ego``, ``img_aug_matrix`` ``(B, N, 4, 4)`` and ``bev_aug_matrix`` ``(B, 4, 4)``
            (:func:`~.bevdet.collect_camera_matrices`).
        feature_size: ``(fH, fW)``; stride: feature stride in input pixels.

    Returns:
        ``(B, N, fH, fW)`` long: the box's index in its sample's ``corners``, -1 where no box covers the pixel.
    """
    fh, fw = (int(x) for x in feature_size)
    b, n = mats['cam2ego'].shape[:2]
    device = mats['cam2ego'].device
    out = torch.full((b, n, fh, fw), -1, dtype=torch.long, device=device)
    us = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * stride - 0.5
    vs = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * stride - 0.5
    with torch.no_grad():
        for i in range(b):
            if len(corners[i]) == 0:
                continue
            box_corners = corners[i].to(device, torch.float32)  # (M, 8, 3)
            homo = torch.cat([box_corners, box_corners.new_ones(*box_corners.shape[:2], 1)], dim=-1)
            for cam in range(n):
                ego2cam = torch.linalg.inv(mats['bev_aug_matrix'][i] @ mats['cam2ego'][i, cam])
                p_cam = homo @ ego2cam.T  # (M, 8, 4)
                depth = p_cam[..., 2]
                in_front = depth > NEAR_PLANE
                visible = in_front.any(dim=1)
                if not visible.any():
                    continue
                z = depth.clamp_min(NEAR_PLANE)
                pix = p_cam @ mats['cam2img'][i, cam].T  # (u z, v z, z, 1)
                uvd1 = torch.stack([pix[..., 0] / z, pix[..., 1] / z, z, torch.ones_like(z)], dim=-1)
                aug = uvd1 @ mats['img_aug_matrix'][i, cam].T
                u, v = aug[..., 0], aug[..., 1]
                big = torch.finfo(u.dtype).max
                u0 = torch.where(in_front, u, big).amin(1)
                u1 = torch.where(in_front, u, -big).amax(1)
                v0 = torch.where(in_front, v, big).amin(1)
                v1 = torch.where(in_front, v, -big).amax(1)
                box_depth = torch.where(in_front, depth, big).amin(1)  # nearest visible corner
                inside = ((us[None, None] >= u0[:, None, None]) & (us[None, None] <= u1[:, None, None])
                          & (vs[None, :, None] >= v0[:, None, None]) & (vs[None, :, None] <= v1[:, None, None]))
                inside &= visible[:, None, None]
                # boxes too small to cover a pixel centre mark the pixel of their projected centre
                centre = aug.mean(1)
                cj = torch.floor((centre[:, 0] + 0.5) / stride).long()
                ci = torch.floor((centre[:, 1] + 0.5) / stride).long()
                small = visible & ~inside.flatten(1).any(1) & (cj >= 0) & (cj < fw) & (ci >= 0) & (ci < fh)
                for m in torch.nonzero(small).flatten().tolist():
                    inside[m, ci[m], cj[m]] = True
                if not inside.any():
                    continue
                # nearest box wins where boxes overlap in the image
                ranked = torch.where(inside, box_depth[:, None, None], big)
                out[i, cam] = torch.where(inside.any(0), ranked.argmin(0), -1)
    return out


def class_targets(index: Tensor, labels: Sequence[Tensor], num_classes: int) -> Tensor:
    """``(B, N, fH, fW)`` :func:`covering_box_index` and per-sample ``(M,)`` class indices -> ``(B, N, K, fH, fW)``
    float class targets in {0, 1}."""
    b, n, fh, fw = index.shape
    out = torch.zeros(b, n, num_classes, fh, fw, device=index.device)
    for i in range(b):
        covered = index[i] >= 0  # (N, fH, fW)
        if covered.any():
            cls = labels[i].to(index.device)[index[i][covered]]
            cams, rows, cols = torch.nonzero(covered, as_tuple=True)
            out[i, cams, cls, rows, cols] = 1.0
    return out


def perspective_targets(corners: Sequence[Tensor], labels: Sequence[Tensor], mats: Dict[str, Tensor],
                        num_classes: int, feature_size: Sequence[int], stride: int) -> Tensor:
    """Per-camera class targets of the feature pixels (see the module docstring).

    Args:
        corners, mats, feature_size, stride: see :func:`covering_box_index`.
        labels: per sample ``(M,)`` class indices.
        num_classes: ``K``.

    Returns:
        ``(B, N, K, fH, fW)`` float targets in {0, 1}.
    """
    return class_targets(covering_box_index(corners, mats, feature_size, stride), labels, num_classes)


def perspective_attribute_targets(boxes: Sequence[Tensor], index: Tensor,
                                  mats: Dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Heading-bin and moving targets of the covered feature pixels (see the module docstring).

    Args:
        boxes: per sample ``(M, >= 9)`` box tensors in the (BEV-augmented) ego frame: centre x, y, z, l, w, h, yaw
            (counter-clockwise from +x), vx, vy.
        index: ``(B, N, fH, fW)`` :func:`covering_box_index` of the same boxes.
        mats: the camera matrices (as :func:`covering_box_index`).

    Returns:
        ``(B, N, fH, fW)`` long heading bin (-1: ignore) and ``(B, N, fH, fW)`` float moving target (-1: ignore; also
        where the box's velocity is unknown).
    """
    heading = torch.full_like(index, -1)
    moving = torch.full(index.shape, -1.0, device=index.device)
    width = 2 * math.pi / HEADING_BINS
    for i in range(index.shape[0]):
        if len(boxes[i]) == 0:
            continue
        box = boxes[i].to(index.device, torch.float32)
        # camera centres in the (BEV-augmented) ego frame, and whether each image was mirrored
        cam2ego = mats['bev_aug_matrix'][i] @ mats['cam2ego'][i]  # (N, 4, 4)
        mirrored = torch.linalg.det(mats['img_aug_matrix'][i, :, :2, :2]) < 0  # (N,)
        for cam in range(index.shape[1]):
            covered = index[i, cam] >= 0
            if not covered.any():
                continue
            m = index[i, cam][covered]
            offset = box[m, :2] - cam2ego[cam, :2, 3]
            alpha = box[m, 6] - torch.atan2(offset[:, 1], offset[:, 0])
            if mirrored[cam]:
                alpha = -alpha
            # bins centred on multiples of 45 degrees: bin 0 is alpha = 0 (the back faces the camera), bin 4 the front
            heading[i, cam][covered] = torch.remainder(torch.round(alpha / width), HEADING_BINS).long()
            velocity = box[m, 7:9]
            known = torch.isfinite(velocity).all(1)
            speed = velocity.nan_to_num(0.0).norm(dim=1)
            moving[i, cam][covered] = torch.where(known, (speed > MOVING_SPEED).float(), -1.0)
    return heading, moving


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017) summed over all elements and divided by the number of positives."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        prob = logits.sigmoid()
        ce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction='none')
        p_t = prob * targets + (1 - prob) * (1 - targets)
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * (1 - p_t) ** gamma * ce
        return loss.sum() / targets.sum().clamp_min(1.0)

