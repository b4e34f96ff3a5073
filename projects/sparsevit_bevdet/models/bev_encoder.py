"""BEV encoder of BEVDet: a small ResNet on the BEV map (``CustomResNet``) and its neck (``FPN_LSS``).

With BEVDet's settings the 64-channel 128x128 BEV map from the view transformer becomes stages of
128 / 256 / 512 channels at 64 / 32 / 16 cells; :class:`BEVFPNLSS` upsamples the deepest stage 4x,
concatenates the first, convolves, and upsamples 2x back to 128x128 with 256 channels for CenterHead.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.backbones.resnet import BasicBlock
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['BEVFPNLSS', 'BEVResNet']


class BEVResNet(BaseModule):
    """BasicBlock ResNet on the BEV map (BEVDet's ``CustomResNet`` with ``block_type='Basic'``).

    Args:
        in_channels: channels of the BEV map (BEVDet: 64).
        num_layers: BasicBlocks per stage.
        num_channels: output channels per stage; default ``in_channels * 2 ** (i + 1)`` (128, 256, 512).
        strides: stride of each stage's first block.
        out_indices: stages returned.
        norm_cfg: norm layer of the blocks.
        with_cp: gradient checkpointing inside the blocks (saves memory at full resolution).

    Forward: ``(B, in_channels, H, W)`` -> tuple of ``(B, num_channels[i], H_i, W_i)`` for ``out_indices``.
    """

    def __init__(self,
                 in_channels: int = 64,
                 num_layers: Sequence[int] = (2, 2, 2),
                 num_channels: Optional[Sequence[int]] = None,
                 strides: Sequence[int] = (2, 2, 2),
                 out_indices: Optional[Sequence[int]] = None,
                 norm_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_channels is None:
            num_channels = [in_channels * 2 ** (i + 1) for i in range(len(num_layers))]
        if not (len(num_layers) == len(num_channels) == len(strides)) or not num_layers:
            raise ValueError(f'num_layers {tuple(num_layers)}, num_channels {tuple(num_channels)} and strides '
                             f'{tuple(strides)} must be non-empty and of equal length')
        self.out_indices = tuple(range(len(num_layers)) if out_indices is None else out_indices)
        if any(not 0 <= i < len(num_layers) for i in self.out_indices):
            raise ValueError(f'out_indices {self.out_indices} outside 0..{len(num_layers) - 1}')
        norm_cfg = norm_cfg or dict(type='BN')
        self.num_channels = tuple(int(c) for c in num_channels)
        stages = []
        cin = in_channels
        for n_blocks, cout, stride in zip(num_layers, self.num_channels, strides):
            # BEVDet's shortcut: a strided 3x3 conv (no norm), kept for checkpoint compatibility of shapes
            shortcut = nn.Conv2d(cin, cout, 3, stride, 1)
            blocks = [BasicBlock(cin, cout, stride=stride, downsample=shortcut, norm_cfg=norm_cfg, with_cp=with_cp)]
            blocks += [BasicBlock(cout, cout, norm_cfg=norm_cfg, with_cp=with_cp) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class BEVFPNLSS(BaseModule):
    """BEVDet's ``FPN_LSS`` BEV neck: fuse a shallow and a deep stage, then upsample.

    Args:
        in_channels: channels after concatenation (BEVDet: ``512 + 128``).
        out_channels: output channels (BEVDet: 256).
        input_feature_index: (shallow, deep) entries of the BEV backbone's outputs (BEVDet: ``(0, 2)``).
        extra_upsample: final upsampling factor (BEVDet: 2, back to the view transformer's resolution);
            ``None`` skips it and returns the fused map at the shallow stage's resolution.
        norm_cfg: norm layer of the convs.
        align_corners: of the bilinear upsampling (BEVDet: ``True``).

    Forward: tuple of BEV maps -> ``(B, out_channels, H_0 * extra_upsample, W_0 * extra_upsample)`` where
    ``H_0, W_0`` is the shallow stage's size. The deep map is resized to that exact size (BEVDet: a fixed
    factor of 4), so odd grid sizes work too.
    """

    def __init__(self,
                 in_channels: int = 640,
                 out_channels: int = 256,
                 input_feature_index: Sequence[int] = (0, 2),
                 extra_upsample: Optional[int] = 2,
                 norm_cfg: Optional[dict] = None,
                 align_corners: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or dict(type='BN')
        self.input_feature_index = tuple(int(i) for i in input_feature_index)
        if len(self.input_feature_index) != 2:
            raise ValueError(f'input_feature_index must name two maps, got {self.input_feature_index}')
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.extra_upsample = extra_upsample
        self.align_corners = align_corners
        mid = out_channels * 2 if extra_upsample else out_channels
        self.fuse = nn.Sequential(
            ConvModule(self.in_channels, mid, 3, padding=1, bias=False, norm_cfg=norm_cfg),
            ConvModule(mid, mid, 3, padding=1, bias=False, norm_cfg=norm_cfg))
        if extra_upsample:
            self.up_convs = nn.Sequential(
                ConvModule(mid, out_channels, 3, padding=1, bias=False, norm_cfg=norm_cfg),
                nn.Conv2d(out_channels, out_channels, kernel_size=1))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        shallow, deep = (feats[i] for i in self.input_feature_index)
        if shallow.shape[1] + deep.shape[1] != self.in_channels:
            raise ValueError(f'BEVFPNLSS was built for {self.in_channels} concatenated channels, got '
                             f'{shallow.shape[1]} + {deep.shape[1]} (input_feature_index {self.input_feature_index})')
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode='bilinear', align_corners=self.align_corners)
        x = self.fuse(torch.cat([shallow, deep], dim=1))
        if self.extra_upsample:
            x = F.interpolate(x, scale_factor=self.extra_upsample, mode='bilinear', align_corners=self.align_corners)
            x = self.up_convs(x)
        return x

