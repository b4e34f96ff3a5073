"""SparseViT: Swin Transformer with window-level activation pruning (Chen et al., CVPR 2023).

Every block runs at window level: LayerNorm, (shifted) window attention, both residuals and the
FFN are computed on the tokens of a set of windows. A block with pruning ratio ``r`` computes only
the ``max(1, int(nW * (1 - r)))`` windows of each image with the largest activation norm (ranked
in float32); the tokens of the other windows pass through unchanged. With every ratio at 0 the
model is exactly mmdet's ``SwinTransformer`` and loads its state dict. One path serves eager mode,
``torch.compile``, export and CUDA-graph capture: shapes are fixed by the input shape and the ratios,
and nothing is read back to the host (see :class:`SparseViT`).

Layout. Between blocks the feature map is kept as a flat ``(B * H * W, C)`` tensor in map order.
Padding to window multiples, the cyclic shift and the window partition are a single
``index_select`` with a precomputed token index (:class:`WindowGeometry`), so no padded or rolled
copy of the map is ever built. Padded tokens are zero after the first LayerNorm, as in Swin; the
residuals and the FFN of a dense block run only on real tokens, so the dense path does not pay for
padding, and a pruned block never computes more slots than the map has tokens (see
:meth:`WindowGeometry.selection`). Swin's shift mask rides on extra q/k channels, so each block makes
one attention call with one broadcast bias.

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

from ..utils.cuda_graphs import GraphedModule
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
# a slot of a shifted window is in one of up to 4 regions; its one-hot code plus a constant channel are
# appended to q and k, padded to 8 channels (aligned head dims for fused attention kernels)
REGION_CODES = 4
REGION_CHANNELS = 8


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
def _symbolic() -> bool:
    """Whether dynamo or ``torch.export`` is tracing (``torch.compile``, ONNX export): tensors made now are
    graph values (fake under export), so index maps are built in the graph and never cached."""
    return torch.compiler.is_compiling()


def _cache_context() -> contextlib.AbstractContextManager:
    """Index tensors cached across forwards are built outside inference mode: built under
    ``torch.inference_mode`` they would be inference tensors, which a later training forward cannot
    save for backward. A traced forward builds them fresh, so it needs (and dynamo takes) no context."""
    return contextlib.nullcontext() if _symbolic() else torch.inference_mode(False)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype linear layers produce from ``x``: the autocast dtype where autocast is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _bounded_put(cache: dict, key: object, value: object, size: int = 4) -> object:
    """Store ``value`` under ``key``, emptying ``cache`` first when it is full (batch sizes and dtypes
    seen; the last batch of an epoch differs)."""
    if len(cache) >= size:
        cache.clear()
    cache[key] = value
    return value


class WindowGeometry:
    """Index maps between a ``(H, W)`` token map and its (padded, shifted) windows.

    Built from the map size alone with static shapes (no host synchronisation), so a traced
    forward (``torch.compile``, ONNX export) builds it inside the graph.

    Swin's shift mask (``-100`` between tokens that came from different regions after the cyclic
    shift) is not stored as a per-window bias. Each window slot gets a *region code* (which of the up to
    4 regions of its window it belongs to) and attention appends ``R`` channels to q and k whose dot
    product is ``-100 / scale`` for different codes and 0 for equal ones (:attr:`region_channels`), so
    every window of a block shares one broadcast bias (the relative position bias) and one attention
    call, whichever windows are kept.

    Attributes:
        token_index: ``(nW, N)`` long, row of each window token in the flat ``H * W`` map, or -1
            where the token is padding. Padding is at the bottom/right and the shift is the
            cyclic roll by ``-shift`` that Swin applies, so this equals Swin's
            pad -> roll -> window_partition.
        region_channels: ``(nW, N, 2R)`` float, per slot the R channels appended to q, then the R
            appended to k; None without a shift.
        has_padding: whether any window holds padded tokens.
    """

    def __init__(self, height: int, width: int, window_size: int, shift: int, device: torch.device,
                 attention_scale: float = 1.0) -> None:
        ws = window_size
        self.height, self.width, self.window_size, self.shift = height, width, ws, shift
        hp, wp = math.ceil(height / ws) * ws, math.ceil(width / ws) * ws
        rows, cols = hp // ws, wp // ws
        self.num_windows = rows * cols
        self.tokens_per_window = ws * ws
        self.device = device
        # coordinates in the rolled padded map, window-major: (nWh, nWw, ws, ws)
        ry = torch.arange(hp, device=device).view(rows, 1, ws, 1)
        rx = torch.arange(wp, device=device).view(1, cols, 1, ws)
        py, px = (ry + shift) % hp, (rx + shift) % wp  # position before the roll by -shift
        valid = (py < height) & (px < width)
        index = torch.where(valid, py * width + px, torch.full_like(py * px, -1))
        self.token_index = index.reshape(self.num_windows, ws * ws)
        self.has_padding = hp != height or wp != width
        self.region_channels = None
        if shift > 0:
            # Only the last window row / column straddles a region border of the rolled map: a token's
            # region within its window is (in the last `shift` rows of a last-row window?, same for columns)
            last_rows = (torch.arange(rows, device=device) == rows - 1)[:, None, None, None]
            last_cols = (torch.arange(cols, device=device) == cols - 1)[None, :, None, None]
            inner = torch.arange(ws, device=device) >= ws - shift
            code = 2 * (last_rows & inner[None, None, :, None]).long() + (last_cols & inner[None, None, None, :]).long()
            one_hot = F.one_hot(code.reshape(self.num_windows, ws * ws), REGION_CODES).float()
            ones = torch.ones_like(one_hot[..., :1])
            pad = one_hot.new_zeros(*one_hot.shape[:2], REGION_CHANNELS - REGION_CODES - 1)
            # q . k over these channels = c * (same_code - 1): 0 inside a region, -c across regions;
            # attention multiplies by `scale`, so c = |mask| / scale gives Swin's -100
            c = -SHIFT_MASK_VALUE / attention_scale
            self.region_channels = torch.cat([-c * ones, c * one_hot, pad, ones, one_hot, pad], dim=-1)
        self._dense_layouts: dict[int, DenseLayout] = {}
        self._slot_rows: dict[int, Tensor] = {}
        self._dense_selections: dict[tuple, WindowSelection] = {}
        self._row_window: dict[None, Tensor] = {}
        self._stacked_slot_rows: dict[tuple, Tensor] = {}

    def window_importance(self, importance: Tensor) -> Tensor:
        """Score windows by the L2 norm of their tokens' importance.

        Args:
            importance: ``(B, H * W)`` per-token importance.

        Returns:
            ``(B, nW)`` window scores; padded tokens count as zero.
        """
        batch_size = importance.shape[0]
        return window_scores(importance.reshape(-1), self.slot_rows(batch_size), self.has_padding)

    # -- cached index maps (built once per batch size) ----------------------------------------
    def _cached(self, cache: dict, key: object, build) -> object:
        if _symbolic():
            return build()
        if key not in cache:
            with _cache_context():
                _bounded_put(cache, key, build())
        return cache[key]

    def dense_layout(self, batch_size: int) -> DenseLayout:
        """Index maps of a block that computes every window (see :class:`DenseLayout`)."""
        return self._cached(self._dense_layouts, batch_size, lambda: self._build_dense_layout(batch_size))

    def slot_rows(self, batch_size: int) -> Tensor:
        """``(B, nW, N)`` row of each window slot in the extended ``(B * H * W + 1, C)`` map; padded slots
        read the extra last row."""
        def build() -> Tensor:
            hw = self.height * self.width
            offsets = torch.arange(batch_size, device=self.device).view(-1, 1, 1) * hw
            return torch.where(self.token_index < 0, batch_size * hw, self.token_index + offsets)
        return self._cached(self._slot_rows, batch_size, build)

    def row_window(self) -> Tensor:
        """``(H * W,)`` window of each map row."""
        def build() -> Tensor:
            hw, n = self.height * self.width, self.tokens_per_window
            windows = torch.arange(self.num_windows, device=self.device).repeat_interleave(n)
            rows = torch.where(self.token_index < 0, hw, self.token_index).flatten()
            return windows.new_zeros(hw + 1).index_put_((rows,), windows)[:hw]
        return self._cached(self._row_window, None, build)

    def _build_dense_layout(self, batch_size: int) -> DenseLayout:
        # Index arithmetic only (no sort, no host synchronisation): a traced forward builds this in the graph.
        hw, n = self.height * self.width, self.tokens_per_window
        index = self.token_index[None] + torch.arange(batch_size, device=self.device).view(-1, 1, 1) * hw
        pad = (self.token_index < 0).expand(batch_size, -1, -1).flatten()
        num_rows = batch_size * hw
        slots = torch.arange(batch_size * self.num_windows * n, device=self.device)
        src = torch.where(pad, num_rows, index.flatten())
        # computed rows are the whole map, in map order; padded slots scatter to one dropped position
        row_slots = slots.new_empty(num_rows + 1).index_put_((src,), slots)[:num_rows]
        pad_slots = None
        if self.has_padding:
            num_pad = slots.numel() - num_rows
            pad_slots = slots.new_empty(num_pad + 1).index_put_(
                (torch.where(pad, torch.cumsum(pad, 0) - 1, num_pad),), slots)[:num_pad]
        return DenseLayout(src.clamp(max=num_rows - 1), row_slots, pad_slots)

    # -- selections -----------------------------------------------------------------------------
    def regions(self, windows: Optional[Tensor], batch_size: int,
                dtype: torch.dtype) -> Optional[tuple[Tensor, Tensor]]:
        """``(K, 1, N, R)`` region channels of q and of k for the given ``(B, k)`` windows (all windows when
        None), or None without a shift."""
        if self.region_channels is None:
            return None
        if windows is None:
            table = self.region_channels.to(dtype).repeat(batch_size, 1, 1)
        else:
            table = self.region_channels.to(dtype).index_select(0, windows.flatten())
        r = table.shape[-1] // 2
        return table[:, None, :, :r], table[:, None, :, r:]

    def dense_selection(self, batch_size: int, dtype: torch.dtype) -> WindowSelection:
        """Every window computed."""
        def build() -> WindowSelection:
            return WindowSelection(self, batch_size, None, regions=self.regions(None, batch_size, dtype))
        return self._cached(self._dense_selections, (batch_size, dtype), build)

    def selection(self, windows: Tensor, dtype: torch.dtype) -> WindowSelection:
        """The ``(B, k)`` kept windows of each image as a :class:`WindowSelection`.

        Gathered (only the kept windows' slots are computed) when they hold fewer slots than the map has
        tokens; otherwise masked (the block computes the whole map as a dense block does, which is then
        cheaper, and keeps the kept windows' rows).
        """
        key = (self.shift, windows.shape[1])
        return select_windows([self], windows[None], {key}, dtype)[key]

    def masked_selection(self, windows: Tensor, dtype: torch.dtype) -> WindowSelection:
        """The ``(B, k)`` kept windows computed as part of the whole map, only their rows written."""
        batch_size = windows.shape[0]
        computed = windows.new_zeros(batch_size, self.num_windows, dtype=torch.bool).scatter_(1, windows, True)
        row_mask = computed[:, self.row_window()].reshape(-1, 1)
        return WindowSelection(self, batch_size, windows, row_mask=row_mask,
                               regions=self.dense_selection(batch_size, dtype).regions)


@dataclass
class DenseLayout:
    """How a block that computes every window maps the ``(B * H * W, C)`` map rows to window slots.

    Attributes:
        slot_rows: ``(B * nW * N,)`` map row of each window slot (padded slots: any row, overwritten).
        row_slots: ``(B * H * W,)`` window slot of each map row.
        pad_slots: ``(P,)`` the padded slots; None when the map needs no padding.
    """

    slot_rows: Tensor
    row_slots: Tensor
    pad_slots: Optional[Tensor]


@dataclass
class WindowSelection:
    """Which windows a block computes, with the index maps to compute them (shared by the blocks of a
    stage with the same shift and kept count, built once per forward).

    Three modes, by which fields are set:

    * dense (``windows`` is None): every window, on :meth:`WindowGeometry.dense_layout`;
    * gathered (``rows`` set): only the ``K = B * k`` kept windows' ``K * N`` slots are computed;
    * masked (``row_mask`` set): the whole map is computed and only the kept windows' rows are written.

    Attributes:
        geometry: the window geometry of the block's map size and shift.
        batch_size: B.
        windows: ``(B, k)`` ids of the kept windows of each image, None for every window.
        rows: ``(K * N,)`` row of each kept slot in the ``(B * H * W, C)`` map, extended by one row (what
            padded slots read and write) when the map needs padding.
        pad: ``(K * N, 1)`` bool, the padded kept slots (None without padding).
        row_mask: ``(B * H * W, 1)`` bool, rows that belong to a kept window.
        regions: ``(K, 1, N, R)`` region channels of q and k (shifted blocks), see :class:`WindowGeometry`.
    """

    geometry: WindowGeometry
    batch_size: int
    windows: Optional[Tensor]
    rows: Optional[Tensor] = None
    pad: Optional[Tensor] = None
    row_mask: Optional[Tensor] = None
    regions: Optional[tuple[Tensor, Tensor]] = None


def token_importance(x: Tensor, batch_size: int) -> Tensor:
    """Per-token importance: the L1 norm of the token (``C`` times its mean ``|x|``), in float32.
    ``(B*H*W, C) -> (B, H*W)``."""
    return torch.linalg.vector_norm(x.detach(), ord=1, dim=-1, dtype=torch.float32).view(batch_size, -1)


def window_scores(importance: Tensor, slot_rows: Tensor, padded: bool) -> Tensor:
    """``(M,)`` importance of the flat map's rows and ``(..., N)`` rows of window slots (``M`` for padded slots
    when ``padded``) -> ``(...)`` L2 norm of each window's token importances, padding counted as zero."""
    if padded:
        importance = F.pad(importance, (0, 1))
    return importance[slot_rows].norm(dim=-1)


def stacked_slot_rows(geometries: Sequence[WindowGeometry], batch_size: int) -> Tensor:
    """``(S, B, nW, N)`` :meth:`WindowGeometry.slot_rows` of the geometries of one map (one per shift), stacked
    so that one gather serves every shift (cached by the first geometry)."""
    first = geometries[0]
    key = (tuple(geometry.shift for geometry in geometries), batch_size)
    return first._cached(first._stacked_slot_rows, key,
                         lambda: torch.stack([geometry.slot_rows(batch_size) for geometry in geometries]))


def select_windows(geometries: Sequence[WindowGeometry], order: Tensor, keys: set[tuple[int, int]],
                   dtype: torch.dtype) -> dict[tuple[int, int], WindowSelection]:
    """The selections of the ``(shift, k)`` keys from a ranking of the windows of one map.

    Args:
        geometries: the map's geometry of each ranked shift.
        order: ``(S, B, >= k)`` window ids of each geometry and image, best first (:func:`top_windows`).
        keys: the (shift, kept count) pairs wanted.
        dtype: compute dtype (of the region channels).

    The gathered selections of one ``k`` share one gather of slot rows (and one padding test) for all shifts.
    """
    first = geometries[0]
    n, hw, batch_size = first.tokens_per_window, first.height * first.width, order.shape[1]
    out: dict[tuple[int, int], WindowSelection] = {}
    for k in sorted({k for _, k in keys}):
        windows = order[..., :k]
        members = [i for i, geometry in enumerate(geometries) if (geometry.shift, k) in keys]
        if k * n >= hw:
            for i in members:
                out[(geometries[i].shift, k)] = geometries[i].masked_selection(windows[i], dtype)
            continue
        if len(members) == len(geometries):
            groups = [(members, stacked_slot_rows(geometries, batch_size), windows)]
        else:
            groups = [([i], geometries[i].slot_rows(batch_size)[None], windows[i:i + 1]) for i in members]
        for group, table, group_windows in groups:
            rows = table.gather(2, group_windows[..., None].expand(-1, -1, -1, n))  # (S', B, k, N)
            pad = rows == batch_size * hw if first.has_padding else None
            for j, i in enumerate(group):
                geometry = geometries[i]
                out[(geometry.shift, k)] = WindowSelection(
                    geometry, batch_size, windows[i], rows=rows[j].flatten(),
                    pad=None if pad is None else pad[j].view(-1, 1),
                    regions=geometry.regions(windows[i], batch_size, dtype))
    return out


def num_kept_windows(num_windows: int, ratio: float) -> int:
    """Windows per image a block computes: ``max(1, int(nW * (1 - ratio)))``.

    At least one, so every block's parameters take part in every forward (DDP without
    ``find_unused_parameters`` needs that) even where a small map has few windows.
    """
    return max(1, int(num_windows * (1 - ratio)))


def top_windows(scores: Tensor, k: int) -> Tensor:
    """``(..., nW)`` window scores -> ``(..., k)`` ids of the ``k`` highest-scoring windows, best first; equal
    scores (e.g. windows of a black image border) in id order.

    One stable sort on the device, no host synchronisation; stacked scores (one row per image and shift)
    are ranked in the same call. ``torch.topk``'s order among equal scores is unspecified; ONNX ``TopK``,
    which an exported model runs (the exporter has no stable sort), takes the lower index first, as the stable
    sort does, so PyTorch and exported models keep the same windows."""
    if torch.onnx.is_in_onnx_export():
        return torch.topk(scores, k, dim=-1).indices
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


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
        self._bias_cache: Optional[tuple[tuple, Tensor]] = None

    def init_weights(self) -> None:
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """``(heads, N, N)`` bias gathered from the table."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def attention_bias(self, dtype: torch.dtype) -> Tensor:
        """``(1, heads, N, N)`` relative position bias in ``dtype``; on CUDA its rows are padded in memory to a
        multiple of 8 elements (the fused kernel wants aligned strides and would copy it at every call; the
        fused CPU kernel wants it contiguous).

        Cached while nothing needs its gradient; the key includes the table's storage and version, so
        loading or training new values invalidates it."""
        table = self.relative_position_bias_table
        cacheable = not _symbolic() and not (torch.is_grad_enabled() and table.requires_grad)
        if cacheable:
            key = (dtype, table.device, table.data_ptr(), table._version)
            if self._bias_cache is not None and self._bias_cache[0] == key:
                return self._bias_cache[1]
        # a cached bias is made without autograd: a bias that requires grad keeps CPU attention off its fused kernel
        context = contextlib.ExitStack()
        if cacheable:
            context.enter_context(_cache_context())
            context.enter_context(torch.no_grad())
        with context:
            n = self.window_size ** 2
            bias = self.relative_position_bias().to(dtype)
            if table.is_cuda:
                bias = F.pad(bias, (0, -n % 8))[..., :n]
            bias = bias[None] if table.is_cuda else bias.unsqueeze(0).contiguous()
        if cacheable:
            self._bias_cache = (key, bias)
        return bias

    def padding_qkv(self) -> Tensor:
        """q, k, v of a padded token: Swin zeroes padding after norm1, so only the bias is left."""
        if self.qkv.bias is not None:
            return self.qkv.bias
        return self.qkv.weight.new_zeros(3 * self.embed_dims)

    def forward(self, qkv: Tensor, regions: Optional[tuple[Tensor, Tensor]] = None,
                key_bias: Optional[Tensor] = None) -> Tensor:
        """Attention within each window, before the output projection: one fused attention call.

        Args:
            qkv: ``(K, N, 3C)`` projected window tokens.
            regions: ``(K, 1, N, R)`` region channels appended to q and to k (shifted blocks, see
                :class:`WindowGeometry`), or None.
            key_bias: ``(K, 1, 1, N)`` added to every query's logit of each key (token pruning masks its
                pruned keys with it), or None.

        Returns:
            ``(K * N, C)`` attention output (apply :attr:`proj` next).
        """
        num_windows, n, c3 = qkv.shape
        heads, c = self.num_heads, c3 // 3
        q, k, v = qkv.view(num_windows, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if regions is not None:
            region_q, region_k = (r.expand(-1, heads, -1, -1) for r in regions)
            # first, so that a kernel summing channels in order cancels -c and +c exactly before adding q . k
            q, k = torch.cat([region_q, q], dim=-1), torch.cat([region_k, k], dim=-1)
            # fused CPU attention wants v as wide as q and k; the extra channels are dropped below
            v = F.pad(v, (region_q.shape[-1], 0))
        bias = self.attention_bias(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias if key_bias is None else bias + key_bias,
                                           dropout_p=self.attn_drop_rate if self.training else 0.0,
                                           scale=self.scale).transpose(1, 2)
        if regions is not None:
            o = o[..., -(c // heads):]
        elif _symbolic():
            # export records the reshape below as a view of the eager kernel's (K, N, h, d) memory,
            # which the decomposed attention of an exported graph does not produce: copy explicitly
            o = o.clone(memory_format=torch.contiguous_format)
        return o.reshape(num_windows * n, c)  # eager without regions: free, SDPA returns (K, N, h, d) memory


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

    def forward(self, qkv: Tensor, regions: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        """``(K, N, 3C)`` projected windows -> ``(K * N, C)``, see :meth:`WindowMSA.forward`."""
        return self.w_msa(qkv, regions)


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

    def forward(self, x: Tensor, selection: WindowSelection) -> Tensor:
        """Run the block on the selected windows.

        Args:
            x: ``(B * H * W, C)`` flat token map; for a gathered selection with padded slots (``pad`` set)
                ``(B * H * W + 1, C)``, whose last row is what padded slots read (its content is never used,
                see :meth:`_forward_gather`).
            selection: the windows to compute (:class:`WindowSelection`).

        Returns:
            ``x``'s shape; rows of pruned windows are the input rows.
        """
        forward = self._forward_gather if selection.rows is not None else self._forward_map
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(forward, x, selection, use_reentrant=False)
        return forward(x, selection)

    def _forward_map(self, x: Tensor, selection: WindowSelection) -> Tensor:
        """Every real token of the map; windows only for attention. Dense, or masked to the kept windows."""
        geometry, batch_size = selection.geometry, selection.batch_size
        layout = geometry.dense_layout(batch_size)
        n, c = geometry.tokens_per_window, x.shape[1]
        w_msa = self.attn.w_msa
        # norm1 and the q/k/v projection on real tokens only, then one gather into windows
        qkv = w_msa.qkv(self.norm1(x)).index_select(0, layout.slot_rows)
        if layout.pad_slots is not None:
            qkv.index_put_((layout.pad_slots,), w_msa.padding_qkv().to(qkv.dtype))
        attn = self.attn(qkv.view(-1, n, 3 * c), selection.regions)
        attn = w_msa.proj_drop(w_msa.proj(attn.index_select(0, layout.row_slots)))  # back to rows
        image_of_token = None
        if self._drops():
            image_of_token = torch.arange(x.shape[0], device=x.device) // (geometry.height * geometry.width)
        y = x + self._drop_path(attn, image_of_token, batch_size)
        y = y + self._drop_path(self.ffn(self.norm2(y)), image_of_token, batch_size)
        if selection.row_mask is not None:
            y = torch.where(selection.row_mask, y, x)
        return y

    def _forward_gather(self, x: Tensor, selection: WindowSelection) -> Tensor:
        """The kept windows' slots only, padded ones included, with static shapes.

        Padded slots read the extra last row of ``x`` and their normalised tokens are zeroed, as Swin
        zeroes padding after norm1, so what that row holds never matters; they also write their
        (unused) results back to it.
        """
        geometry, batch_size = selection.geometry, selection.batch_size
        n, c = geometry.tokens_per_window, x.shape[1]
        w_msa = self.attn.w_msa
        tokens = x.index_select(0, selection.rows)
        normed = self.norm1(tokens)
        if selection.pad is not None:
            normed = normed.masked_fill(selection.pad, 0.0)
        attn = self.attn(w_msa.qkv(normed).view(-1, n, 3 * c), selection.regions)
        attn = w_msa.proj_drop(w_msa.proj(attn))
        image_of_token = None
        if self._drops():
            image_of_token = torch.arange(tokens.shape[0], device=x.device) // (tokens.shape[0] // batch_size)
        y = tokens + self._drop_path(attn, image_of_token, batch_size)
        y = y + self._drop_path(self.ffn(self.norm2(y)), image_of_token, batch_size)
        if y.dtype != x.dtype:  # under autocast the residual stream may have been promoted
            x = x.to(torch.promote_types(x.dtype, y.dtype))
            y = y.to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            return x.index_copy(0, selection.rows, y)
        return x.index_copy_(0, selection.rows, y)  # inference: write the computed rows in place

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
    > 0, once for unshifted and once for shifted windows; each block keeps the top ``k`` of it, and the
    blocks with the same shift and ``k`` share one :class:`WindowSelection`.
    """

    # the block type built for each layer (a subclass, e.g. token pruning's, substitutes its own)
    block_class: type[SparseSwinBlock] = SparseSwinBlock

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, depth: int,
                 window_size: int, qkv_bias: bool, qk_scale: Optional[float], drop_rate: float,
                 attn_drop_rate: float, drop_path_rates: Sequence[float],
                 downsample: Optional[PatchMerging], act_cfg: dict, norm_cfg: dict,
                 with_cp: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = ModuleList([
            self.block_class(embed_dims, num_heads, feedforward_channels, window_size, i % 2 == 1,
                            qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rates[i],
                            act_cfg, norm_cfg, with_cp) for i in range(depth)
        ])
        self.downsample = downsample
        self.pruning_ratios: list[float] = [0.0] * depth
        # index maps per (map size, shift, device); bounded, as multi-scale training sees many sizes
        self._geometries: OrderedDict[tuple, WindowGeometry] = OrderedDict()

    def geometry(self, height: int, width: int, shift: int, device: torch.device) -> WindowGeometry:
        """The window geometry of a ``(height, width)`` map, cached in eager mode."""
        scale = self.blocks[0].attn.w_msa.scale
        if _symbolic():
            # built in the graph: a cache entry made while tracing would hold graph-time tensors
            # (fake tensors under export)
            return WindowGeometry(height, width, self.window_size, shift, device, scale)
        key = (height, width, shift, device)
        if key in self._geometries:
            self._geometries.move_to_end(key)
        else:
            with _cache_context():
                self._geometries[key] = WindowGeometry(height, width, self.window_size, shift, device, scale)
            if len(self._geometries) > GEOMETRY_CACHE_SIZE:
                self._geometries.popitem(last=False)
        return self._geometries[key]

    def window_scores(self, flat: Tensor, batch_size: int, height: int, width: int) -> dict[int, Tensor]:
        """For each shift of the stage's blocks, the ``(B, nW)`` float32 window scores of ``flat``
        (``(B * H * W, C)``), whatever its dtype and any autocast. Higher is kept first."""
        shifts = self._shifts()
        scores = self._scores(flat, batch_size, [self.geometry(height, width, s, flat.device) for s in shifts])
        return {shift: scores[i] for i, shift in enumerate(shifts)}

    def _shifts(self) -> list[int]:
        return sorted({block.shift_size for block in self.blocks})

    @staticmethod
    def _scores(flat: Tensor, batch_size: int, geometries: Sequence[WindowGeometry]) -> Tensor:
        """``(S, B, nW)`` float32 window scores of each geometry, with autocast off; all in one gather."""
        # float32: bf16 scores tie or swap near-equal windows and change the kept set
        with torch.autocast(flat.device.type, enabled=False):
            importance = token_importance(flat, batch_size).view(-1)
            return window_scores(importance, stacked_slot_rows(geometries, batch_size), geometries[0].has_padding)

    def _kept_counts(self, geometries: dict[int, WindowGeometry]) -> list[tuple[int, int]]:
        """(shift, kept windows per image) of each block."""
        keys = []
        for block, ratio in zip(self.blocks, self.pruning_ratios):
            num_windows = geometries[block.shift_size].num_windows
            keys.append((block.shift_size, num_kept_windows(num_windows, ratio) if ratio > 0 else num_windows))
        return keys

    def _pruned_selections(self, flat: Tensor, batch_size: int, geometries: dict[int, WindowGeometry],
                           pruned: set[tuple[int, int]]) -> dict[tuple[int, int], WindowSelection]:
        """Selections of the pruned (shift, k) keys, ranked from ``flat`` (``(B * H * W, C)``): every shift's
        windows scored in one gather and ranked in one sort."""
        ranked = [geometries[shift] for shift in sorted({shift for shift, _ in pruned})]
        order = top_windows(self._scores(flat, batch_size, ranked), max(k for _, k in pruned))
        return select_windows(ranked, order, pruned, compute_dtype(flat))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, H, W, C)`` -> (stage output ``(B, H, W, C)``, downsampled map or the output).

        Pruned blocks have static shapes (fixed by the input shape and the ratios) and never read data
        back to the host: the ranking is a sort on the device, so the kept windows stay data-dependent
        inside a captured CUDA graph, a compiled graph or an exported model.
        """
        b, h, w, c = x.shape
        flat = x.reshape(b * h * w, c)
        geometries = {shift: self.geometry(h, w, shift, x.device) for shift in self._shifts()}
        keys = self._kept_counts(geometries)
        pruned = {(shift, k) for shift, k in keys if k < geometries[shift].num_windows}
        selections = {(shift, k): geometries[shift].dense_selection(b, compute_dtype(flat))
                      for shift, k in set(keys) - pruned}
        extended = False
        for block, key in zip(self.blocks, keys):
            if key not in selections:  # ranked once per stage, from the first pruned block's input
                selections.update(self._pruned_selections(flat, b, geometries, pruned))
            selection = selections[key]
            if selection.pad is not None and not extended:
                # padded slots read and write an extra row; ratios are non-decreasing, so every later
                # block is gathered too
                flat, extended = F.pad(flat, (0, 0, 0, 1)), True
            flat = block(flat, selection)
        if extended:
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
        cuda_graphs: on CUDA, run inference forwards (no gradient) as captured CUDA graphs, one per
            (input shape, dtype, autocast, ratios), recaptured when :meth:`set_pruning_ratios` changes
            the ratios (see :class:`~projects.sparsevit_bevdet.utils.cuda_graphs.GraphedModule`).
            Training forwards and CPU inputs run eagerly.

    For fixed ratios and input size the kept count per image is known, so each pruned block takes the
    top ``k`` windows of each image (``torch.topk`` on the device), computes their slots and scatters
    the rows back: no host synchronisation, shapes fixed by the input shape, and the ranking stays
    data-dependent in a captured graph, a compiled graph and an exported ONNX model.

    Public API used by the search and the adaptation hook: :meth:`set_pruning_ratios`,
    :attr:`pruning_ratios`, :meth:`search_space`.

    Forward: ``(B, in_channels, H, W)`` -> list of ``(B, C_i, H_i, W_i)`` for ``out_indices``.
    """

    # the stage type built for each stage (a subclass, e.g. token pruning's, substitutes its own)
    stage_class: type[SparseSwinStage] = SparseSwinStage

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
                 cuda_graphs: bool = False) -> None:
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
        if not isinstance(cuda_graphs, bool):
            raise TypeError(f'cuda_graphs must be True or False, got {cuda_graphs!r}')
        self.cuda_graphs = cuda_graphs
        self._graphs: Optional[GraphedModule] = None
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
            self.stages.append(self.stage_class(
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
        if self.cuda_graphs and x.is_cuda and not torch.is_grad_enabled() and not _symbolic():
            if self._graphs is None:
                self._graphs = GraphedModule(self._forward, key=lambda: self.pruning_ratios)
            return self._graphs(x)
        return self._forward(x)

    def _forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        if self.use_abs_pos_embed:
            b, h, w, c = x.shape
            if (h, w) != self.pretrain_grid:
                raise ValueError(f'absolute position embedding was built for a {self.pretrain_grid} '
                                 f'patch grid, the input gives {(h, w)}')
            x = (x.view(b, h * w, c) + self.absolute_pos_embed).view(b, h, w, c)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
