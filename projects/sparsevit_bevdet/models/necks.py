"""Image neck of BEVDet: fuse the backbone's two deepest maps into one stride-16 map.

BEVDet (Huang et al. 2021) feeds the view transformer a single stride-16 map built from the backbone's
stride-16 and stride-32 outputs (``FPN_LSS`` with ``input_feature_index=(0, 1)``, ``scale_factor=2`` for
Swin; ``CustomFPN`` with ``out_ids=[0]`` for ResNet). :class:`BEVDetImageNeck` does the ``FPN_LSS`` form:
upsample the deeper map to the shallower map's size, concatenate, two conv3x3-BN-ReLU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

__all__ = ['BEVDetImageNeck']


class BEVDetImageNeck(BaseModule):
    """Upsample-concat-conv fusion of two image feature maps (BEVDet's ``FPN_LSS`` as image neck).

    Args:
        in_channels: channels of the two input maps, shallow (stride 16) first, e.g. ``(384, 768)``
            for SparseViT-T with ``out_indices=(2, 3)``.
        out_channels: channels of the fused map (512 in BEVDet).
        input_feature_index: which two entries of the backbone output to fuse, shallow first.
        norm_cfg: norm layer of the two convs.
        align_corners: of the bilinear upsampling (BEVDet: ``True``).

    Forward: sequence of ``(B, C_i, H_i, W_i)`` maps -> ``(B, out_channels, H_s, W_s)`` at the
    shallow map's size. The deep map is resized to that exact size rather than by a fixed factor
    of 2, because Swin pads odd maps before patch merging (a stride-16 map of width 11 gives a
    stride-32 map of width 6).
    """

    def __init__(self,
                 in_channels: Sequence[int] = (384, 768),
                 out_channels: int = 512,
                 input_feature_index: Sequence[int] = (0, 1),
                 norm_cfg: Optional[dict] = None,
                 align_corners: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != 2 or len(input_feature_index) != 2:
            raise ValueError(f'BEVDetImageNeck fuses exactly two maps: in_channels={tuple(in_channels)}, '
                             f'input_feature_index={tuple(input_feature_index)}')
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = int(out_channels)
        self.input_feature_index = tuple(int(i) for i in input_feature_index)
        self.align_corners = align_corners
        norm_cfg = norm_cfg or dict(type='BN')
        self.convs = torch.nn.Sequential(
            ConvModule(sum(self.in_channels), self.out_channels, 3, padding=1, bias=False, norm_cfg=norm_cfg),
            ConvModule(self.out_channels, self.out_channels, 3, padding=1, bias=False, norm_cfg=norm_cfg))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``feats``: backbone outputs; returns the fused ``(B, out_channels, H_s, W_s)`` map."""
        shallow, deep = (feats[i] for i in self.input_feature_index)
        for x, c in ((shallow, self.in_channels[0]), (deep, self.in_channels[1])):
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(f'BEVDetImageNeck expects maps with channels {self.in_channels} at '
                                 f'indices {self.input_feature_index}; got shapes '
                                 f'{[tuple(f.shape) for f in feats]}')
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode='bilinear', align_corners=self.align_corners)
        return self.convs(torch.cat([shallow, deep], dim=1))
