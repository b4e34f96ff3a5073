"""SparseViT: Swin Transformer with window-level activation pruning (Chen et al., CVPR 2023).

Every block runs at window level: LayerNorm, (shifted) window attention, both residuals and the
FFN are computed on the tokens of a set of windows. A block with pruning ratio ``r`` computes only
the ``max(1, int(nW * (1 - r)))`` windows of each image with the largest activation norm (ranked
in float32); the tokens of the other windows pass through unchanged. With every ratio at 0 the
model is exactly mmdet's ``SwinTransformer`` and loads its state dict. Pruned blocks take a dynamic
path in eager mode and a static-shape path (no host synchronisation) under ``torch.compile`` and
export; both keep the same windows (see :class:`SparseViT`).

Layout. Between blocks the feature map is kept as a flat ``(B * H * W, C)`` tensor in map order.
Padding to window multiples, the cyclic shift and the window partition are a single
``index_select`` with a precomputed token index (:class:`WindowGeometry`), so no padded or rolled
copy of the map is ever built. Padded tokens are zero after the first LayerNorm, as in Swin; the
residuals and the FFN run only on real tokens, so the dense path does not pay for padding.

Reading order: helpers (ratios, geometry, window selection) -> attention -> FFN -> block ->
stage -> patch embedding / merging -> model.
"""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import constant_init, trunc_normal_, trunc_normal_init
from torch import Tensor, nn

from .weight_converters import load_pretrained_swin

RatioSpec = Union[float, Sequence[Sequence[float]]]

ARCH_SETTINGS: dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}

# map sizes x shifts x devices whose window index maps a stage keeps
GEOMETRY_CACHE_SIZE = 32
# Swin's value for attention between tokens that came from different regions after the shift.
SHIFT_MASK_VALUE = -100.0


# ----------------------------------------------------------------------------------------------
# Pruning ratios and the search space
# ----------------------------------------------------------------------------------------------
def normalize_pruning_ratios(ratios: RatioSpec, depths: Sequence[int]) -> list[list[float]]:
    """Expand and validate a ratio spec into one float per block.

    Args:
        ratios: a float (the same ratio for every block) or one sequence per stage with one
            ratio per block.
        depths: number of blocks of each stage.

    Raises:
        ValueError: naming the stage, block and value for a ratio outside [0, 1), a wrong number
            of stages or blocks, or ratios that decrease within a stage (the window ranking of a
            stage is shared, so later blocks can only keep a prefix of it).
    """
    if isinstance(ratios, (int, float)):
        ratios = [[float(ratios)] * d for d in depths]
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
        raise ValueError(f'pruning_ratios must be a float or one list per stage, got {ratios!r}')
    if len(ratios) != len(depths):
        raise ValueError(
            f'pruning_ratios has {len(ratios)} stages, the model has {len(depths)} '
            f'(depths={tuple(depths)})')
    out: list[list[float]] = []
    for stage, (stage_ratios, depth) in enumerate(zip(ratios, depths)):
        if isinstance(stage_ratios, (int, float)) or not isinstance(stage_ratios, Sequence):
            raise ValueError(
                f'pruning_ratios[{stage}] must be a list of {depth} ratios, got {stage_ratios!r}')
        if len(stage_ratios) != depth:
            raise ValueError(
                f'pruning_ratios[{stage}] has {len(stage_ratios)} ratios, stage {stage} has {depth} blocks')
        stage_out = []
        for block, value in enumerate(stage_ratios):
            r = float(value)
            if not (0.0 <= r < 1.0) or math.isnan(r):
                raise ValueError(
                    f'pruning ratio of stage {stage}, block {block} is {value!r}; expected 0 <= r < 1')
            if stage_out and r < stage_out[-1]:
                raise ValueError(
                    f'pruning ratios must be non-decreasing within a stage: stage {stage}, block {block} '
                    f'has {r} after {stage_out[-1]}')
            stage_out.append(r)
        out.append(stage_out)
    return out


@dataclass(frozen=True)
class StageSearchSpace:
    """Search-space description of one stage.

    Attributes:
        stage: stage index.
        depth: number of blocks.
        num_groups: independent ratios in the search (``depth // 2``); group ``g`` is the
            W-MSA / SW-MSA pair of blocks ``2g`` and ``2g + 1`` and they share one ratio.
        embed_dims: channels of the stage.
        downsample_factor: stride of the stage's feature map w.r.t. the input image.
    """

    stage: int
    depth: int
    num_groups: int
    embed_dims: int
    downsample_factor: int

    @property
    def group_blocks(self) -> list[tuple[int, ...]]:
        """The block indices of each group (an odd last block joins the last group)."""
        groups = [tuple(range(2 * g, 2 * g + 2)) for g in range(self.num_groups)]
        if self.depth % 2 and groups:
            groups[-1] = (*groups[-1], self.depth - 1)
        elif self.depth % 2:
            groups = [(0,)]
        return groups


def expand_group_ratios(space: Sequence[StageSearchSpace],
                        group_ratios: Sequence[Sequence[float]]) -> list[list[float]]:
    """Turn one ratio per search group into one ratio per block (the backbone's format)."""
    if len(group_ratios) != len(space):
        raise ValueError(f'expected group ratios for {len(space)} stages, got {len(group_ratios)}')
    blocks: list[list[float]] = []
    for stage, ratios in zip(space, group_ratios):
        groups = stage.group_blocks
        if len(ratios) != len(groups):
            raise ValueError(
                f'stage {stage.stage} has {len(groups)} ratio groups, got {len(ratios)} ratios')
        per_block = [0.0] * stage.depth
        for ratio, members in zip(ratios, groups):
            for b in members:
                per_block[b] = float(ratio)
        blocks.append(per_block)
    return blocks


# ----------------------------------------------------------------------------------------------
# Window geometry and selection
# ----------------------------------------------------------------------------------------------
def is_tracing() -> bool:
    """Whether the forward is being captured as a graph: ``torch.compile``, ``torch.export``, ONNX
    export (either exporter) or ``torch.jit.trace``. Such a forward takes the static-shape path (see
    :class:`SparseViT`). Checked once per forward: the last two checks cost microseconds."""
    # is_compiling() first: dynamo folds it to a constant and never traces the other calls
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _symbolic() -> bool:
    """Whether dynamo or ``torch.export`` is tracing (``torch.compile``, ONNX export): tensors made now are
    graph values (fake under export), so index maps are built in the graph and never cached. Cheap, unlike
    :func:`is_tracing`; ``torch.jit.trace`` runs on real tensors and may use the caches."""
    return torch.compiler.is_compiling()


def _cache_context() -> contextlib.AbstractContextManager:
    """Index tensors cached across forwards are built outside inference mode: built under
    ``torch.inference_mode`` they would be inference tensors, which a later training forward cannot
    save for backward. A traced forward builds them fresh, so it needs (and dynamo takes) no context."""
    return contextlib.nullcontext() if _symbolic() else torch.inference_mode(False)


class WindowGeometry:
    """Index maps between a ``(H, W)`` token map and its (padded, shifted) windows.

    Built from the map size alone with static shapes (no host synchronisation), so a traced
    forward (``torch.compile``, ONNX export) builds it inside the graph.

    Attributes:
        token_index: ``(nW, N)`` long, row of each window token in the flat ``H * W`` map, or -1
            where the token is padding. Padding is at the bottom/right and the shift is the
            cyclic roll by ``-shift`` that Swin applies, so this equals Swin's
            pad -> roll -> window_partition.
        pattern_id: ``(nW,)`` long, which shift-mask pattern each window uses.
        pattern_masks: ``(P, N, N)`` float, Swin's shift mask per pattern (0 or -100).
        pattern_counts: windows of each pattern in one image (python ints).
        grouped_windows: ``(nW,)`` window ids grouped by pattern, ascending within a pattern.
        has_padding: whether any window holds padded tokens.
    """

    def __init__(self, height: int, width: int, window_size: int, shift: int,
                 device: torch.device) -> None:
        ws = window_size
        self.height, self.width, self.window_size, self.shift = height, width, ws, shift
        hp, wp = math.ceil(height / ws) * ws, math.ceil(width / ws) * ws
        rows, cols = hp // ws, wp // ws
        self.num_windows = rows * cols
        self.tokens_per_window = ws * ws
        # coordinates in the rolled padded map, window-major: (nWh, nWw, ws, ws)
        ry = torch.arange(hp, device=device).view(rows, 1, ws, 1)
        rx = torch.arange(wp, device=device).view(1, cols, 1, ws)
        py, px = (ry + shift) % hp, (rx + shift) % wp  # position before the roll by -shift
        valid = (py < height) & (px < width)
        index = torch.where(valid, py * width + px, torch.full_like(py * px, -1))
        self.token_index = index.reshape(self.num_windows, ws * ws)
        self.has_padding = hp != height or wp != width

        if shift > 0:
            # Swin labels 3 x 3 regions of the rolled padded map; tokens of different regions must
            # not attend to each other. Only the last window row / column straddles a region border,
            # so a window's mask depends on (last row?, last column?): four patterns.
            inner = torch.arange(ws, device=device)
            split = 1 + (inner >= ws - shift).long()  # region of a token in the last row / column
            label_y = torch.stack([torch.zeros_like(split), split])[:, None, :, None]  # (2, 1, ws, 1)
            label_x = torch.stack([torch.zeros_like(split), split])[None, :, None, :]  # (1, 2, 1, ws)
            label = (label_y * 3 + label_x).reshape(4, ws * ws).float()  # pattern 2 * last_row + last_col
            masks = label[:, None, :] - label[:, :, None]
            self.pattern_masks = masks.masked_fill(masks != 0, SHIFT_MASK_VALUE)
            last_row = (torch.arange(rows, device=device) == rows - 1).long()
            last_col = (torch.arange(cols, device=device) == cols - 1).long()
            self.pattern_id = (2 * last_row[:, None] + last_col[None, :]).flatten()
            self.pattern_counts = [(rows - 1) * (cols - 1), rows - 1, cols - 1, 1]
            ids = torch.arange(self.num_windows, device=device).view(rows, cols)
            self.grouped_windows = torch.cat([ids[:-1, :-1].flatten(), ids[:-1, -1], ids[-1, :-1], ids[-1, -1:]])
        else:
            self.pattern_masks = torch.zeros(1, ws * ws, ws * ws, device=device)
            self.pattern_id = torch.zeros(self.num_windows, dtype=torch.long, device=device)
            self.pattern_counts = [self.num_windows]
            self.grouped_windows = torch.arange(self.num_windows, device=device)
        self.num_patterns = self.pattern_masks.shape[0]
        self._dense_plans: dict[int, WindowPlan] = {}

    def window_importance(self, importance: Tensor) -> Tensor:
        """Score windows by the L2 norm of their tokens' importance.

        Args:
            importance: ``(B, H * W)`` per-token importance.

        Returns:
            ``(B, nW)`` window scores; padded tokens count as zero.
        """
        tokens = importance[:, self.token_index.clamp(min=0)]  # (B, nW, N)
        if self.has_padding:
            tokens = tokens.masked_fill(self.token_index < 0, 0.0)
        return tokens.norm(dim=-1)

    def plan(self, batch_size: int, kept_windows: Optional[Tensor]) -> WindowPlan:
        """Index plan for computing the given windows (all windows if ``kept_windows`` is None).

        The dense plan has static shapes; a sparse one synchronises with the host (its
        per-pattern window counts and padded slots depend on which windows are kept).

        Args:
            batch_size: images in the batch.
            kept_windows: ``(B * k,)`` global window ids ``b * nW + w``.
        """
        if kept_windows is not None:
            return self._sparse_plan(kept_windows)
        if batch_size not in self._dense_plans:
            if len(self._dense_plans) >= 4:  # batch sizes seen; the last batch of an epoch differs
                self._dense_plans.clear()
            with _cache_context():
                self._dense_plans[batch_size] = self._dense_plan(batch_size)
        return self._dense_plans[batch_size]

    def _dense_plan(self, batch_size: int) -> WindowPlan:
        # Index arithmetic only (no sort, no host synchronisation): a traced forward builds this in
        # the graph, and ONNX has no stable sort.
        nw, hw = self.num_windows, self.height * self.width
        device = self.token_index.device
        # windows grouped by shift-mask pattern (all images' windows of pattern 0 first, ...), so
        # attention runs once per pattern with a broadcast bias instead of a per-window bias tensor
        offsets = torch.arange(batch_size, device=device)[:, None] * nw
        groups = torch.split(self.grouped_windows, self.pattern_counts)
        windows = torch.cat([(offsets + group).flatten() for group in groups])
        index = self.token_index[windows % nw]  # (B * nW, N)
        src = (index + (windows // nw * hw)[:, None]).flatten()
        slots = torch.arange(src.numel(), device=device)
        num_rows, pad_slots = batch_size * hw, None
        if self.has_padding:
            # scatters whose padded (or real) entries go to one spare position that is then dropped
            pad = (index < 0).flatten()
            num_pad = src.numel() - num_rows
            pad_slots = slots.new_empty(num_pad + 1).index_put_(
                (torch.where(pad, torch.cumsum(pad, 0) - 1, num_pad),), slots)[:num_pad]
            src_real = torch.where(pad, num_rows, src)
        else:
            src_real = src
        # computed rows are the whole map, in map order
        row_slots = slots.new_empty(num_rows + 1).index_put_((src_real,), slots)[:num_rows]
        counts = [batch_size * c for c in self.pattern_counts]
        return WindowPlan(None, src.clamp(min=0), row_slots, pad_slots, counts)

    def _sparse_plan(self, windows: Tensor) -> WindowPlan:
        nw, hw = self.num_windows, self.height * self.width
        local = windows % nw
        pattern = self.pattern_id[local]
        if self.num_patterns > 1:  # grouped by shift-mask pattern, as in the dense plan
            order = torch.argsort(pattern, stable=True)
            windows, local, pattern = windows[order], local[order], pattern[order]
        counts = torch.bincount(pattern, minlength=self.num_patterns).tolist()
        index = self.token_index[local]  # (K, N)
        pad = (index < 0).flatten()
        src = (index + (windows // nw * hw)[:, None]).flatten()
        slots = torch.arange(src.numel(), device=src.device)
        if not self.has_padding:
            return WindowPlan(src, slots, slots, None, counts)
        row_slots = slots[~pad]
        slot_rows = (torch.cumsum(~pad, 0) - 1).clamp(min=0)  # slot -> position among real tokens
        return WindowPlan(src[row_slots], slot_rows, row_slots, pad.nonzero().squeeze(1), counts)


@dataclass
class WindowPlan:
    """Which tokens a block computes and where they sit in the window tensor.

    A block computes ``M`` real tokens ("rows") of the ``(B * H * W, C)`` map and ``K`` windows of
    ``N`` slots each (padded slots included).

    Attributes:
        rows: ``(M,)`` map rows to compute; None means every row, in map order (dense).
        slot_rows: ``(K * N,)`` for each window slot, its index among the computed rows
            (padded slots point at 0 and are overwritten, see ``pad_slots``).
        row_slots: ``(M,)`` for each computed row, its window slot.
        pad_slots: ``(P,)`` the padded slots; None when the map needs no padding.
        group_counts: windows per shift-mask pattern, in window order.
    """

    rows: Optional[Tensor]
    slot_rows: Tensor
    row_slots: Tensor
    pad_slots: Optional[Tensor]
    group_counts: list[int]


def token_importance(x: Tensor, batch_size: int) -> Tensor:
    """Per-token importance: mean of ``|x|`` over channels, in float32. ``(B*H*W, C) -> (B, H*W)``."""
    return x.detach().float().abs().mean(dim=-1).view(batch_size, -1)


def rank_windows(scores: Tensor) -> Tensor:
    """``(B, nW)`` scores -> ``(B, nW)`` window ids of each image, highest score first."""
    return torch.argsort(scores, dim=1, descending=True, stable=True)


def num_kept_windows(num_windows: int, ratio: float) -> int:
    """Windows per image a block computes: ``max(1, int(nW * (1 - ratio)))``.

    At least one, so every block's parameters take part in every forward (DDP without
    ``find_unused_parameters`` needs that) even where a small map has few windows.
    """
    return max(1, int(num_windows * (1 - ratio)))


def keep_indices(ranking: Tensor, ratio: float) -> Optional[Tensor]:
    """Global ids ``b * nW + w`` of the top :func:`num_kept_windows` windows of each image.

    Args:
        ranking: ``(B, nW)`` window ids of each image, best first.
        ratio: pruning ratio; at least one window per image is kept whatever the ratio.

    Returns:
        ``(B * k,)`` ids, or None when every window is kept (the dense path).
    """
    batch_size, num_windows = ranking.shape
    k = num_kept_windows(num_windows, ratio)
    if k >= num_windows:
        return None
    kept = ranking[:, :k].sort(dim=1).values  # ascending ids: gathers read memory in order
    return (kept + torch.arange(batch_size, device=ranking.device)[:, None] * num_windows).flatten()


def window_positions(scores: Tensor) -> Tensor:
    """``(B, nW)`` scores -> ``(B, nW)`` position of each window in :func:`rank_windows`' order (0: best).

    Counted by pairwise comparison (``O(nW^2)`` per image) instead of a stable sort, which ONNX does
    not have: window ``j`` comes before ``i`` if its score is higher, or equal with ``j < i``.
    """
    ids = torch.arange(scores.shape[1], device=scores.device)
    mine, other = scores[:, :, None], scores[:, None, :]
    before = (other > mine) | ((other == mine) & (ids[None, :] < ids[:, None]))
    return before.sum(dim=2)


def top_windows(positions: Tensor, k: int) -> Tensor:
    """``(B, nW)`` ranking positions (:func:`window_positions`) -> ``(B, k)`` ids of each image's ``k``
    best windows, ascending (gathers then read memory in order). Static shapes, no sort."""
    kept = positions < k
    slot = torch.cumsum(kept, dim=1) - 1  # place of each kept window among the kept, in id order
    one_hot = kept[:, None, :] & (slot[:, None, :] == torch.arange(k, device=positions.device)[:, None])
    ids = torch.arange(positions.shape[1], device=positions.device)
    return (one_hot.long() * ids).sum(dim=2)


def drop_path_per_image(x: Tensor, image_of_token: Tensor, batch_size: int, drop_prob: float,
                        training: bool) -> Tensor:
    """Stochastic depth with one draw per image, for tokens of several images mixed in one tensor."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    scale = x.new_empty(batch_size).bernoulli_(keep).div_(keep)
    return x * scale[image_of_token][:, None]


# ----------------------------------------------------------------------------------------------
# Attention and FFN on window tokens
# ----------------------------------------------------------------------------------------------
class WindowMSA(nn.Module):
    """Window multi-head self-attention with relative position bias (mmdet's parameter names).

    Args:
        embed_dims: channels C.
        num_heads: attention heads.
        window_size: window side ``ws``; windows hold ``N = ws * ws`` tokens.
        qkv_bias: learnable bias for q, k, v.
        qk_scale: overrides ``head_dims ** -0.5``.
        attn_drop_rate: dropout on attention weights.
        proj_drop_rate: dropout after the output projection.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} is not divisible by num_heads={num_heads}')
        self.embed_dims, self.num_heads, self.window_size = embed_dims, num_heads, window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.attn_drop_rate = attn_drop_rate
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # same values and layout as mmdet's WindowMSA buffer, so state dicts match exactly
        row = torch.arange(0, (2 * window_size - 1) * window_size, 2 * window_size - 1)
        seq = (row[:, None] + torch.arange(window_size)[None, :]).reshape(1, -1)
        self.register_buffer('relative_position_index', (seq + seq.T).flip(1).contiguous())
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def init_weights(self) -> None:
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """``(heads, N, N)`` bias gathered from the table."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def padding_qkv(self) -> Tensor:
        """q, k, v of a padded token: Swin zeroes padding after norm1, so only the bias is left."""
        if self.qkv.bias is not None:
            return self.qkv.bias
        return self.qkv.weight.new_zeros(3 * self.embed_dims)

    def forward(self, qkv: Tensor, group_counts: Sequence[int], pattern_masks: Tensor) -> Tensor:
        """Attention within each window, before the output projection, one call per shift-mask pattern.

        The q/k/v projection is applied by the block to real tokens only; padded slots carry
        :meth:`padding_qkv`.

        Args:
            qkv: ``(K, N, 3C)`` projected window tokens, windows grouped by shift-mask pattern.
            group_counts: windows of each pattern, in order (sums to K).
            pattern_masks: ``(P, N, N)`` additive shift mask of each pattern.

        Returns:
            ``(K * N, C)`` attention output (apply :attr:`proj` next).
        """
        bias = self.attention_bias(pattern_masks)
        groups = [(p, cnt) for p, cnt in enumerate(group_counts) if cnt]
        if len(groups) == 1:
            p = groups[0][0]
            return self.attend(qkv, bias[p:p + 1])
        num_windows, n, c3 = qkv.shape
        out = qkv.new_empty(num_windows * n, c3 // 3)
        start = 0
        for p, count in groups:
            end = start + count
            out[start * n:end * n] = self.attend(qkv[start:end], bias[p:p + 1])
            start = end
        return out

    def attention_bias(self, masks: Tensor) -> Tensor:
        """``(P, N, N)`` additive shift masks -> ``(P, heads, N, N)`` masks plus relative position bias."""
        return self.relative_position_bias()[None] + masks[:, None]

    def attend(self, qkv: Tensor, bias: Tensor) -> Tensor:
        """Attention within each window: ``(K, N, 3C)`` projected windows and a ``(1 or K, heads, N, N)``
        additive bias (see :meth:`attention_bias`) -> ``(K * N, C)``."""
        num_windows, n, c3 = qkv.shape
        heads, c = self.num_heads, c3 // 3
        q, k, v = qkv.view(num_windows, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                           dropout_p=self.attn_drop_rate if self.training else 0.0,
                                           scale=self.scale).transpose(1, 2)
        if _symbolic():
            # export records the reshape below as a view of the eager kernel's (K, N, h, d) memory,
            # which the decomposed attention of an exported graph does not produce: copy explicitly
            o = o.clone(memory_format=torch.contiguous_format)
        return o.reshape(num_windows * n, c)  # eager: free, SDPA returns (K, N, h, d) memory


class ShiftWindowMSA(nn.Module):
    """Holds the window attention of a block (named as mmdet's, so ``attn.w_msa.*`` keys match).

    Args:
        shift_size: cyclic shift of SW-MSA blocks (0 for W-MSA).
        other args: see :class:`WindowMSA`.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int = 0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size={shift_size} must be in [0, window_size={window_size})')
        self.window_size, self.shift_size = window_size, shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, qk_scale,
                               attn_drop_rate, proj_drop_rate)

    def forward(self, qkv: Tensor, group_counts: Sequence[int], pattern_masks: Tensor) -> Tensor:
        """``(K, N, 3C)`` projected windows -> ``(K * N, C)``, see :meth:`WindowMSA.forward`."""
        return self.w_msa(qkv, group_counts, pattern_masks)


class FFN(nn.Module):
    """Two-layer MLP on tokens (mmcv FFN's parameter names: ``layers.0.0``, ``layers.1``)."""

    def __init__(self, embed_dims: int, feedforward_channels: int, act_cfg: dict,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels),
                          build_activation_layer(act_cfg), nn.Dropout(drop_rate)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(drop_rate))

    def forward(self, x: Tensor) -> Tensor:
        """``(M, C) -> (M, C)``."""
        return self.layers(x)


# ----------------------------------------------------------------------------------------------
# Block and stage
# ----------------------------------------------------------------------------------------------
class SparseSwinBlock(nn.Module):
    """Swin block that computes a subset of windows and passes the others through unchanged.

    Args:
        embed_dims: channels C.
        num_heads: attention heads.
        feedforward_channels: hidden channels of the FFN.
        window_size: window side.
        shift: True for SW-MSA blocks (shift by ``window_size // 2``).
        drop_path_rate: stochastic depth of both residual branches (one draw per image).
        with_cp: gradient checkpointing of the block in training.
    """

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int,
                 window_size: int = 7, shift: bool = False, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 act_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 with_cp: bool = False) -> None:
        super().__init__()
        norm_cfg = norm_cfg or dict(type='LN')
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size,
                                   window_size // 2 if shift else 0, qkv_bias, qk_scale,
                                   attn_drop_rate, drop_rate)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(embed_dims, feedforward_channels, act_cfg or dict(type='GELU'), drop_rate)

    @property
    def shift_size(self) -> int:
        return self.attn.shift_size

    def forward(self, x: Tensor, geometry: WindowGeometry, batch_size: int,
                kept_windows: Optional[Tensor] = None, static: bool = False) -> Tensor:
        """Run the block on the kept windows (all windows when ``kept_windows`` is None).

        Args:
            x: ``(B * H * W, C)`` flat token map; on the static path ``(B * H * W + 1, C)`` whose last
                row is zero (padded window slots read it and write zeros back to it).
            geometry: window geometry of this block's map size and shift.
            batch_size: B.
            kept_windows: ``(B * k,)`` global ids ``b * nW + w`` of the windows to compute; on the
                static path ``(B, k)`` window ids of each image.
            static: take the static-shape path (no host synchronisation; see :class:`SparseViT`).

        Returns:
            ``x``'s shape; rows of pruned windows are the input rows.
        """
        if static and kept_windows is not None:
            forward, args = self._forward_static, (x, geometry, kept_windows)
        else:
            plan = geometry.plan(batch_size, kept_windows)
            if plan.slot_rows.numel() == 0:
                return x
            forward, args = self._forward, (x, plan, geometry, batch_size)
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(forward, *args, use_reentrant=False)
        return forward(*args)

    def _forward(self, x: Tensor, plan: WindowPlan, geometry: WindowGeometry,
                 batch_size: int) -> Tensor:
        n, c = geometry.tokens_per_window, x.shape[1]
        w_msa = self.attn.w_msa
        dense = plan.rows is None
        rows = x if dense else x.index_select(0, plan.rows)  # (M, C) real tokens to compute
        # norm1 and the q/k/v projection on real tokens only, then one gather into windows
        qkv = w_msa.qkv(self.norm1(rows)).index_select(0, plan.slot_rows)
        if plan.pad_slots is not None:
            qkv.index_put_((plan.pad_slots,), w_msa.padding_qkv().to(qkv.dtype))
        attn = self.attn(qkv.view(-1, n, 3 * c), plan.group_counts, geometry.pattern_masks)
        attn = w_msa.proj_drop(w_msa.proj(attn.index_select(0, plan.row_slots)))  # back to rows
        image_of_token = None
        if self._drops():
            hw = geometry.height * geometry.width
            image_of_token = (torch.arange(rows.shape[0], device=x.device) if dense else plan.rows) // hw
        y = rows + self._drop_path(attn, image_of_token, batch_size)
        y = y + self._drop_path(self.ffn(self.norm2(y)), image_of_token, batch_size)
        if dense:
            return y
        return self._write_rows(x, plan.rows, y)

    def _forward_static(self, x: Tensor, geometry: WindowGeometry, kept: Tensor) -> Tensor:
        """The kept windows with static shapes: every slot of the ``(B, k)`` kept windows is computed,
        padded ones included, so no shape depends on which windows are kept.

        ``x`` is ``(B * H * W + 1, C)`` with a zero last row: padded slots read it (their q/k/v is then
        set to :meth:`WindowMSA.padding_qkv`, as on the dynamic path) and write zeros back to it.
        """
        batch_size, k = kept.shape
        n, c = geometry.tokens_per_window, x.shape[1]
        hw = geometry.height * geometry.width
        w_msa = self.attn.w_msa
        index = geometry.token_index[kept]  # (B, k, N), -1 for padding
        rows = index + torch.arange(batch_size, device=x.device).view(-1, 1, 1) * hw
        pad = None
        if geometry.has_padding:
            pad = (index < 0).view(-1, 1)
            rows = torch.where(index < 0, batch_size * hw, rows)
        rows = rows.flatten()  # (B * k * N,) map row of every slot
        tokens = x.index_select(0, rows)
        qkv = w_msa.qkv(self.norm1(tokens))
        if pad is not None:
            qkv = torch.where(pad, w_msa.padding_qkv().to(qkv.dtype), qkv)
        if geometry.num_patterns > 1:  # each kept window's own shift mask
            bias = w_msa.attention_bias(geometry.pattern_masks.index_select(0, geometry.pattern_id[kept.flatten()]))
        else:
            bias = w_msa.attention_bias(geometry.pattern_masks)
        attn = w_msa.proj_drop(w_msa.proj(w_msa.attend(qkv.view(-1, n, 3 * c), bias)))
        image_of_token = None
        if self._drops():
            image_of_token = torch.arange(rows.shape[0], device=x.device) // (k * n)
        y = tokens + self._drop_path(attn, image_of_token, batch_size)
        y = y + self._drop_path(self.ffn(self.norm2(y)), image_of_token, batch_size)
        if pad is not None:
            y = y.masked_fill(pad, 0.0)  # every padded slot writes the same zero: duplicates agree
        return self._write_rows(x, rows, y)

    @staticmethod
    def _write_rows(x: Tensor, rows: Tensor, y: Tensor) -> Tensor:
        """``x`` with ``y`` written to ``rows`` (``(M,)`` row ids, ``y`` ``(M, C)``); the other rows unchanged."""
        if y.dtype != x.dtype:  # under autocast the residual stream may have been promoted
            x = x.to(torch.promote_types(x.dtype, y.dtype))
            y = y.to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            return x.index_copy(0, rows, y)
        return x.index_copy_(0, rows, y)  # inference: write the computed rows in place

    def _drops(self) -> bool:
        return self.training and self.drop_path_rate > 0

    def _drop_path(self, x: Tensor, image_of_token: Optional[Tensor], batch_size: int) -> Tensor:
        if image_of_token is None:
            return x
        return drop_path_per_image(x, image_of_token, batch_size, self.drop_path_rate, True)


class PatchMerging(nn.Module):
    """2x2 patch merging with mmdet's channel order (that of ``nn.Unfold``) and corner padding.

    ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: Optional[dict]) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm = build_norm_layer(norm_cfg, 4 * in_channels)[1] if norm_cfg else None
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # unfold order: channel-major, then (row, col) inside the 2x2 patch
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x)


class SparseSwinStage(BaseModule):
    """A stage of SparseViT blocks (alternating W-MSA / SW-MSA) and an optional patch merging.

    The window ranking is made once per stage, from the input of the first block whose ratio is
    > 0, once for unshifted and once for shifted windows; each block keeps a prefix of it.
    """

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, depth: int,
                 window_size: int, qkv_bias: bool, qk_scale: Optional[float], drop_rate: float,
                 attn_drop_rate: float, drop_path_rates: Sequence[float],
                 downsample: Optional[PatchMerging], act_cfg: dict, norm_cfg: dict,
                 with_cp: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = ModuleList([
            SparseSwinBlock(embed_dims, num_heads, feedforward_channels, window_size, i % 2 == 1,
                            qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rates[i],
                            act_cfg, norm_cfg, with_cp) for i in range(depth)
        ])
        self.downsample = downsample
        self.pruning_ratios: list[float] = [0.0] * depth
        # index maps per (map size, shift, device); bounded, as multi-scale training sees many sizes
        self._geometries: OrderedDict[tuple, WindowGeometry] = OrderedDict()

    def geometry(self, height: int, width: int, shift: int, device: torch.device) -> WindowGeometry:
        """The window geometry of a ``(height, width)`` map, cached in eager mode."""
        if _symbolic():
            # built in the graph: a cache entry made while tracing would hold graph-time tensors
            # (fake tensors under export)
            return WindowGeometry(height, width, self.window_size, shift, device)
        key = (height, width, shift, device)
        if key in self._geometries:
            self._geometries.move_to_end(key)
        else:
            with _cache_context():
                self._geometries[key] = WindowGeometry(height, width, self.window_size, shift, device)
            if len(self._geometries) > GEOMETRY_CACHE_SIZE:
                self._geometries.popitem(last=False)
        return self._geometries[key]

    def window_rankings(self, flat: Tensor, batch_size: int, height: int, width: int) -> dict[int, Tensor]:
        """For each shift of the stage's blocks, ``(B, nW)`` windows ranked by the importance of ``flat``
        (scored in float32 whatever the dtype of ``flat`` and any autocast).

        Args:
            flat: ``(B * H * W, C)`` tokens the importance is taken from.
        """
        geometries = {shift: self.geometry(height, width, shift, flat.device) for shift in self._shifts()}
        return {shift: rank_windows(scores) for shift, scores in self._scores(flat, batch_size, geometries).items()}

    def _shifts(self) -> set[int]:
        return {block.shift_size for block in self.blocks}

    @staticmethod
    def _scores(flat: Tensor, batch_size: int, geometries: dict[int, WindowGeometry]) -> dict[int, Tensor]:
        """``(B, nW)`` float32 window scores per shift, with autocast off."""
        # float32: bf16 scores tie or swap near-equal windows and change the kept set
        with torch.autocast(flat.device.type, enabled=False):
            importance = token_importance(flat, batch_size)
            return {shift: geometry.window_importance(importance) for shift, geometry in geometries.items()}

    def forward(self, x: Tensor, static: bool = False) -> tuple[Tensor, Tensor]:
        """``(B, H, W, C)`` -> (stage output ``(B, H, W, C)``, downsampled map or the output).

        Args:
            static: the static-shape path (see :class:`SparseViT`): each pruned block gets the
                ``(B, k)`` top windows of each image and the flat map carries one zero row for the
                padded window slots from the first pruned block to the end of the stage (ratios are
                non-decreasing, so every later block is pruned too).
        """
        b, h, w, c = x.shape
        flat = x.reshape(b * h * w, c)
        geometries = {shift: self.geometry(h, w, shift, x.device) for shift in self._shifts()}
        # per shift: window ids best first (dynamic) or each window's place in that order (static)
        rankings: dict[int, Tensor] = {}
        zero_row = False
        for block, ratio in zip(self.blocks, self.pruning_ratios):
            geometry = geometries[block.shift_size]
            kept = None
            if ratio > 0:
                if not rankings:  # ranked once per stage, from the first pruned block's input
                    rank = window_positions if static else rank_windows
                    rankings = {shift: rank(scores) for shift, scores in self._scores(flat, b, geometries).items()}
                if not static:
                    kept = keep_indices(rankings[block.shift_size], ratio)
                elif (k := num_kept_windows(geometry.num_windows, ratio)) < geometry.num_windows:
                    kept = top_windows(rankings[block.shift_size], k)
                    if not zero_row:
                        flat, zero_row = torch.cat([flat, flat.new_zeros(1, c)]), True
            flat = block(flat, geometry, b, kept, static)
        if zero_row:
            flat = flat[:-1]
        out = flat.view(b, h, w, c)
        return out, (self.downsample(out) if self.downsample is not None else out)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding with corner padding: ``(B, 3, H, W) -> (B, H/p, W/p, C)``."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 norm_cfg: Optional[dict]) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1] if norm_cfg else None

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.projection(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x.contiguous()


# Constructor argument checks: at least as strict as mmdet's SwinTransformer and its submodules.
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')


def _int_tuple(name: str, value: object, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as a tuple of ints ``>= minimum`` (a list or tuple, as configs give them)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f'{name} must be a sequence of ints, got {value!r}')
    for i, item in enumerate(value):
        _check_int(f'{name}[{i}]', item, minimum)
    return tuple(value)


def _check_number(name: str, value: object, low: float, high: float, include_low: bool) -> None:
    """A real number in ``[low, high)`` (``(low, high)`` unless ``include_low``); NaN fails."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number, got {value!r}')
    if not ((low <= value if include_low else low < value) and value < high):
        raise ValueError(f'{name} must be in {"[" if include_low else "("}{low}, {high}), got {value!r}')


def _check_layer_cfg(name: str, cfg: object) -> None:
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{name} must be a dict with a 'type' key, got {cfg!r}")


def _check_init_cfg(init_cfg: object) -> None:
    """SparseViT starts from scratch (None) or from a checkpoint (``type='Pretrained'``)."""
    if init_cfg is not None and not isinstance(init_cfg, dict):
        raise TypeError(f'init_cfg must be a dict or None, got {init_cfg!r}')
    if init_cfg is not None and (init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg):
        raise ValueError("SparseViT supports only init_cfg=None or dict(type='Pretrained', checkpoint=...), "
                         f'got {init_cfg!r}')


def _image_size(pretrain_img_size: object) -> tuple[int, int]:
    """An int or 1 or 2 positive ints (as mmdet) -> ``(height, width)``."""
    size = _int_tuple('pretrain_img_size', (pretrain_img_size,) if _is_int(pretrain_img_size)
                      else pretrain_img_size)
    if len(size) not in (1, 2):
        raise ValueError(f'pretrain_img_size must be an int or 1 or 2 ints, got {pretrain_img_size!r}')
    return size[0], size[-1]


class SparseViT(BaseModule):
    """Swin Transformer with window-level activation pruning.

    Accepts mmdet ``SwinTransformer``'s arguments (same names and effective defaults; every
    argument is checked at least as strictly, with ``TypeError``/``ValueError`` naming it) and
    loads its state dict. Extra arguments:

    Args:
        embed_dims, depths, num_heads: None takes the value from ``arch``, or Swin-T's (mmdet's
            defaults 96, (2, 2, 6, 2), (3, 6, 12, 24)) without an ``arch``.
        arch: 'tiny' | 'small' | 'base' | 'large' preset of embed_dims / depths / num_heads.
            Precedence: an explicit argument > the arch preset > Swin-T's values, so
            ``arch='tiny', embed_dims=32, num_heads=(1, 2, 4, 8)`` is a width-reduced Swin-T.
        pruning_ratios: a float for every block, or one list per stage with one ratio per block,
            e.g. ``[[.3, .3], [0, 0], [.1, .1, .2, .2, .2, .2], [0, 0]]``. Ratios must be in
            [0, 1) and non-decreasing within a stage. A block with ratio ``r`` on a map of ``nW``
            windows computes ``max(1, int(nW * (1 - r)))`` windows of each image: at least one,
            so every parameter is used in every forward (DDP without ``find_unused_parameters``).
        static_shapes: which path pruned blocks take (also the attribute ``static_shapes``).
            ``None`` (default): the static-shape path while the forward is traced (``torch.compile``,
            ``torch.export``, ONNX export, ``torch.jit.trace``; see :func:`is_tracing`) and on CUDA,
            the dynamic path in CPU eager mode (each is the faster one there, docs/benchmarks.md).
            ``True``: always static. ``False``: always dynamic (a traced forward then breaks the
            graph at every pruned block, and export fails).

    Pruned blocks have two paths with the same outputs (to float rounding) and the same kept windows:

    * dynamic (eager default): computes only the real tokens of the kept windows; it reads the
      per-pattern window counts and padded slots of the kept set on the host (``.tolist()``,
      ``nonzero``), so shapes depend on the data;
    * static: for fixed ratios and input size the kept count per image is known, so each block
      takes the top ``k`` windows of each image from the ranking (a sort on the device), computes
      every slot of those ``B * k`` windows (padding included), gives each window its own shift
      mask and scatters the rows back: no host synchronisation, shapes fixed by the input shape,
      and the ranking stays data-dependent in a captured graph.

    Public API used by the search and the adaptation hook: :meth:`set_pruning_ratios`,
    :attr:`pruning_ratios`, :meth:`search_space`.

    Forward: ``(B, in_channels, H, W)`` -> list of ``(B, C_i, H_i, W_i)`` for ``out_indices``.
    """

    def __init__(self,
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 embed_dims: Optional[int] = None,
                 patch_size: int = 4,
                 window_size: int = 7,
                 mlp_ratio: float = 4,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 patch_norm: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False,
                 act_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 convert_weights: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[dict] = None,
                 arch: Optional[str] = None,
                 pruning_ratios: RatioSpec = 0.0,
                 static_shapes: Optional[bool] = None) -> None:
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a checkpoint path (str) or None, got {pretrained!r}')
            if init_cfg is not None:
                raise ValueError(f'init_cfg and pretrained cannot be specified at the same time '
                                 f'(init_cfg={init_cfg!r}, pretrained={pretrained!r})')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        _check_init_cfg(init_cfg)
        super().__init__(init_cfg=init_cfg)
        preset = ARCH_SETTINGS['tiny']
        if arch is not None:
            if arch not in ARCH_SETTINGS:
                raise ValueError(f'unknown arch {arch!r}; expected one of {sorted(ARCH_SETTINGS)}')
            preset = ARCH_SETTINGS[arch]
        embed_dims = preset['embed_dims'] if embed_dims is None else embed_dims
        depths = _int_tuple('depths', preset['depths'] if depths is None else depths)
        num_heads = _int_tuple('num_heads', preset['num_heads'] if num_heads is None else num_heads)
        strides = _int_tuple('strides', strides)
        pretrain_size = _image_size(pretrain_img_size)
        for name, value in (('in_channels', in_channels), ('embed_dims', embed_dims),
                            ('patch_size', patch_size), ('window_size', window_size)):
            _check_int(name, value, minimum=1)
        _check_number('mlp_ratio', mlp_ratio, 0, math.inf, include_low=False)
        if qk_scale is not None:
            _check_number('qk_scale', qk_scale, 0, math.inf, include_low=False)
        for name, value in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                            ('drop_path_rate', drop_path_rate)):
            _check_number(name, value, 0, 1, include_low=True)
        norm_cfg = dict(type='LN') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='GELU') if act_cfg is None else act_cfg
        _check_layer_cfg('norm_cfg', norm_cfg)
        _check_layer_cfg('act_cfg', act_cfg)

        num_layers = len(depths)
        if num_layers == 0 or len(num_heads) != num_layers or len(strides) != num_layers:
            raise ValueError(f'depths {depths}, num_heads {num_heads} and strides {strides} must have '
                             'one entry per stage (at least one stage)')
        for i, heads in enumerate(num_heads):
            if (embed_dims * 2 ** i) % heads:
                raise ValueError(f'stage {i} has {embed_dims * 2 ** i} channels (embed_dims={embed_dims} * '
                                 f'2**{i}), not divisible by num_heads[{i}]={heads}')
        if strides[0] != patch_size:
            raise ValueError(f'strides[0]={strides[0]} must equal patch_size={patch_size} '
                             '(non-overlapping patch embedding)')
        if any(s != 2 for s in strides[1:]):
            raise NotImplementedError(f'patch merging with strides {strides[1:]}: only 2 is supported')
        out_indices = _int_tuple('out_indices', out_indices, minimum=0)
        if any(i >= num_layers for i in out_indices) or len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices {out_indices} must be distinct stage indices in '
                             f'0..{num_layers - 1}')
        _check_int('frozen_stages', frozen_stages, minimum=-1)
        if frozen_stages > num_layers:
            raise ValueError(f'frozen_stages must be in [-1, {num_layers}] (-1: none frozen), '
                             f'got {frozen_stages}')
        if static_shapes is not None and not isinstance(static_shapes, bool):
            raise TypeError(f'static_shapes must be True, False or None, got {static_shapes!r}')
        self.static_shapes = static_shapes
        self.depths = depths
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.convert_weights = convert_weights
        self.use_abs_pos_embed = use_abs_pos_embed
        self.patch_size = patch_size
        self.window_size = window_size

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size,
                                      norm_cfg if patch_norm else None)
        if use_abs_pos_embed:
            self.pretrain_grid = (pretrain_size[0] // patch_size, pretrain_size[1] // patch_size)
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.pretrain_grid[0] * self.pretrain_grid[1], embed_dims))
        self.drop_after_pos = nn.Dropout(p=drop_rate)

        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.stages = ModuleList()
        self.num_features = [int(embed_dims * 2 ** i) for i in range(len(depths))]
        for i, depth in enumerate(depths):
            channels = self.num_features[i]
            downsample = None
            if i < len(depths) - 1:
                downsample = PatchMerging(channels, 2 * channels, norm_cfg if patch_norm else None)
            self.stages.append(SparseSwinStage(
                channels, num_heads[i], int(mlp_ratio * channels), depth, window_size, qkv_bias,
                qk_scale, drop_rate, attn_drop_rate, dpr[sum(depths[:i]):sum(depths[:i + 1])],
                downsample, act_cfg, norm_cfg, with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, self.num_features[i])[1])
        self.set_pruning_ratios(pruning_ratios)

    # -- public API ---------------------------------------------------------------------------
    @property
    def pruning_ratios(self) -> list[list[float]]:
        """Current per-block pruning ratios, one list per stage (a copy)."""
        return [list(stage.pruning_ratios) for stage in self.stages]

    def set_pruning_ratios(self, ratios: RatioSpec) -> None:
        """Change the pruning ratios without rebuilding (a float, or one list per stage)."""
        for stage, stage_ratios in zip(self.stages, normalize_pruning_ratios(ratios, self.depths)):
            stage.pruning_ratios = stage_ratios

    def search_space(self) -> list[StageSearchSpace]:
        """Per stage: depth, ``depth // 2`` ratio groups (W-MSA/SW-MSA pairs), channels, stride."""
        return [
            StageSearchSpace(i, d, d // 2, self.num_features[i], self.patch_size * 2 ** i)
            for i, d in enumerate(self.depths)
        ]

    # -- mmengine hooks -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> SparseViT:
        super().train(mode)
        self._freeze_stages()
        return self

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for p in self.patch_embed.parameters():
                p.requires_grad = False
            if self.use_abs_pos_embed:
                self.absolute_pos_embed.requires_grad = False
            self.drop_after_pos.eval()
        for i in range(1, self.frozen_stages + 1):
            modules = [self.stages[i - 1]]
            if i - 1 in self.out_indices:
                modules.append(getattr(self, f'norm{i - 1}'))
            for m in modules:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def init_weights(self) -> None:
        logger = MMLogger.get_current_instance()
        if self.init_cfg is None:
            logger.warning(f'No pre-trained weights for {type(self).__name__}, training from scratch')
            if self.use_abs_pos_embed:
                trunc_normal_(self.absolute_pos_embed, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=0.02, bias=0.0)
                elif isinstance(m, nn.LayerNorm):
                    constant_init(m, 1.0)
                elif isinstance(m, WindowMSA):
                    m.init_weights()
            return
        _check_init_cfg(self.init_cfg)  # it may have been replaced after construction
        load_pretrained_swin(self, self.init_cfg['checkpoint'], convert_official=self.convert_weights,
                             logger=logger)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C_in, H, W)`` -> feature maps ``(B, C_i, H_i, W_i)`` for ``out_indices``."""
        x = self.patch_embed(x)
        if self.use_abs_pos_embed:
            b, h, w, c = x.shape
            if (h, w) != self.pretrain_grid:
                raise ValueError(f'absolute position embedding was built for a {self.pretrain_grid} '
                                 f'patch grid, the input gives {(h, w)}')
            x = (x.view(b, h * w, c) + self.absolute_pos_embed).view(b, h, w, c)
        x = self.drop_after_pos(x)
        if self.static_shapes is None:
            # on CUDA the dynamic path's host synchronisations cost more than its exact group sizes save
            static = x.is_cuda or is_tracing()
        else:
            static = self.static_shapes
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x, static)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
