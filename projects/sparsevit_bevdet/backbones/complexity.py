"""Analytic multiply-accumulate count of SparseViT for a given input shape and pruning ratios.

Counted as SparseViT computes them: patch embedding; q/k/v and output projections and the FFN on
the real tokens of the map for a block that computes every window (or that computes the whole map and
keeps the kept windows' rows, when those windows hold at least as many slots as the map has tokens),
on every slot of the ``int(nW * (1 - r))`` kept windows otherwise (padded slots included: the shapes
do not depend on which windows win); ``q kᵀ`` and ``attn v`` on every slot of the computed windows;
patch merging. Not counted: LayerNorm, softmax, GELU, gathers (no multiplies) and the shift-mask
channels appended to q and k (a few percent of the attention products of shifted blocks).
"""
from __future__ import annotations

import math

from .sparsevit import SparseViT, num_kept_windows


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
        for ratio in stage.pruning_ratios:
            if swin_layout:
                macs += b * (num_windows * n * (4 * c * c + 2 * n * c) + h * w * 2 * c * hidden)
                continue
            k = num_kept_windows(num_windows, ratio) if ratio > 0 else num_windows
            if k * n >= h * w:  # the whole map (dense, or masked to the kept windows)
                k, tokens = num_windows, h * w
            else:
                tokens = k * n
            macs += b * (k * 2 * n * n * c + tokens * (4 * c * c + 2 * c * hidden))
        if stage.downsample is not None:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            macs += b * h * w * 4 * c * stage.downsample.out_channels
    return macs
