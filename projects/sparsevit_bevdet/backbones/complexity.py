"""Analytic multiply-accumulate count of SparseViT for a given input shape and pruning ratios.

Counted as SparseViT computes them: patch embedding; LayerNorm-free linear layers (q/k/v and output
projections, FFN) on the real tokens of the computed windows; ``q kᵀ`` and ``attn v`` on every slot
of the computed windows (padding included, attention runs on whole windows); patch merging.
Not counted: LayerNorm, softmax, GELU, gathers (no multiplies).

A block computes ``int(nW * (1 - r))`` windows per image whatever the data, but how many real
tokens they hold depends on which windows win (border windows hold padding). The count assumes
the fullest windows are kept, which is what the L2 ranking favours (padding scores zero); at
ratio 0 and for inputs that are window multiples it is exact.
"""
from __future__ import annotations

import math

import torch

from .sparsevit import SparseViT, WindowGeometry, num_kept_windows


def _real_tokens_per_window(h: int, w: int, window_size: int, shift: int) -> torch.Tensor:
    """``(nW,)`` real (unpadded) tokens of each window, fullest first."""
    geometry = WindowGeometry(h, w, window_size, shift, torch.device('cpu'))
    return (geometry.token_index >= 0).sum(dim=1).sort(descending=True).values


def sparsevit_macs(model: SparseViT, input_shape: tuple[int, int, int, int],
                   swin_layout: bool = False) -> int:
    """MACs of one forward of ``model`` (with its current pruning ratios) on ``(B, C, H, W)``.

    ``swin_layout=True`` counts what mmdet's dense ``SwinTransformer`` computes instead (ratios
    ignored): its q/k/v and output projections also run on the padded tokens.
    """
    b, c_in, h, w = input_shape
    p = model.patch_size
    h, w = math.ceil(h / p), math.ceil(w / p)
    c = model.num_features[0]
    macs = b * h * w * c * c_in * p * p
    ws = model.window_size
    n = ws * ws
    for i, stage in enumerate(model.stages):
        c = model.num_features[i]
        num_windows = math.ceil(h / ws) * math.ceil(w / ws)
        hidden = stage.blocks[0].ffn.layers[1].in_features
        tokens_per_window = {shift: _real_tokens_per_window(h, w, ws, shift)
                             for shift in {block.shift_size for block in stage.blocks}}
        for block, ratio in zip(stage.blocks, stage.pruning_ratios):
            if swin_layout:
                macs += b * (num_windows * n * (4 * c * c + 2 * n * c) + h * w * 2 * c * hidden)
                continue
            k = num_kept_windows(num_windows, ratio)
            tokens = int(tokens_per_window[block.shift_size][:k].sum())
            macs += b * (k * 2 * n * n * c + tokens * (4 * c * c + 2 * c * hidden))
        if stage.downsample is not None:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            macs += b * h * w * 4 * c * stage.downsample.out_channels
    return macs
