"""Analytic multiply-accumulate count of SparseViT for a given input shape and pruning ratios.

Counted: patch embedding, q/k/v and output projections, ``q kᵀ`` and ``attn v`` on every computed
window (padded tokens included, as they are computed), FFN on the real tokens of computed windows,
patch merging. Not counted: LayerNorm, softmax, GELU, gathers (no multiplies). The number of
windows a block computes, ``int(nW * (1 - r))`` per image, does not depend on the data; the number
of real tokens in them does (border windows hold padding), so the FFN count of a pruned block
assumes full windows, capped at the map size — exact at ratio 0 and for inputs that are window
multiples.
"""
from __future__ import annotations

import math

from .sparsevit import SparseViT


def sparsevit_macs(model: SparseViT, input_shape: tuple[int, int, int, int]) -> int:
    """MACs of one forward of ``model`` (with its current pruning ratios) on ``(B, C, H, W)``."""
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
            k = min(num_windows, int(num_windows * (1 - ratio)))
            attn = k * (4 * n * c * c + 2 * n * n * c)
            ffn_tokens = min(k * n, h * w)
            macs += b * (attn + ffn_tokens * 2 * c * hidden)
        if stage.downsample is not None:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            macs += b * h * w * 4 * c * stage.downsample.out_channels
    return macs
