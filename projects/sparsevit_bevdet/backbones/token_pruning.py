"""DynamicTokenSwin: Swin with DynamicViT-style *token* pruning (Rao et al., arXiv 2207.01580), the method
SparseViT's window pruning is compared against.

Where it prunes. A stage's blocks form the search groups of :meth:`SparseViT.search_space` (W-MSA / SW-MSA
pairs). Before the first block of a group whose pruning ratio ``r`` is higher than the previous group's, a
small learned predictor (:class:`TokenKeepPredictor`: an MLP on each token's local feature concatenated with a
global feature pooled over the image's kept tokens) scores the tokens that are still kept, and the group's
blocks compute ``max(1, int(H * W * (1 - r)))`` tokens of each image. Pruning is progressive within a stage:
a later group chooses among the tokens the previous group kept (ratios are non-decreasing within a stage);
patch merging starts the next stage with every token again. Ratios must be equal within a group (one
predictor per group), which the search and the adaptation hook always give.

Training (``model.train()``): every token is computed, as DynamicViT trains. The predictor's keep/drop
log-probabilities give a hard Gumbel-softmax sample with a straight-through gradient, multiplied by the
previous group's mask: ``D`` (``(B * H * W, 1)``, 0 or 1 forward, soft backward). Each block's attention and
FFN updates are multiplied by ``D`` (pruned tokens keep their value), and attention excludes pruned keys with
DynamicViT's multiplicative gate (``softmax`` weights times ``D_key``, each query also seeing itself,
renormalised), so the predictor gets gradient from the task loss through both. A keep-ratio loss, the squared
difference between each image's kept fraction and ``1 - r`` averaged over images and pruning locations,
times ``keep_ratio_loss_weight``, is stored after the forward and returned once by
:meth:`DynamicTokenSwin.auxiliary_losses` (``loss_keep_ratio``), which BEVDet and
:class:`~projects.sparsevit_bevdet.models.AuxLossMaskRCNN` add to their loss dicts.

Inference (``model.eval()``): the top-``k`` tokens of each image by the predictor's keep log-probability go
through the block (the slow path): LayerNorms, q/k/v, output projection and FFN run on the ``B * k`` kept
rows only (gathered, then scattered back). The pruned tokens pass through unchanged (no fast path): that is
SparseViT's treatment of pruned windows, so the window-vs-token ablation compares pruning granularity alone,
it costs nothing, and ratio 0 stays exactly Swin; DynamicViT's dense-prediction variant updates them with a
cheap MLP instead, which is not implemented here. Attention: the kept tokens' q/k/v are scattered into
their (shifted) windows and every window of the batch runs one fused attention call in which pruned slots
are masked out as keys (``-PRUNED_KEY_LOGIT`` added to their logits with the relative position bias), so
kept tokens attend to the kept tokens of their window only, as in training.
The attention matrix products therefore cost what dense ones do (shapes stay static, no host
synchronisation); the linear layers, which are most of a Swin block's work, scale with
the kept fraction. Padded slots of border windows stay keys, as Swin attends to them.

Shared with :class:`SparseViT` (subclassed, not copied): patch embedding, patch merging, the blocks'
parameters (mmdet ``SwinTransformer`` names, so mmdet / official Swin / SparseViT checkpoints load; the
predictors are extra keys, reported missing and initialised), ``init_cfg`` / ``convert_weights``, the dense
block (every ratio 0 is mmdet's Swin), ``pruning_ratios`` / :meth:`set_pruning_ratios` /
:meth:`search_space` with :func:`normalize_pruning_ratios`' validation, ``frozen_stages`` and
``cuda_graphs`` (inherited; not yet run on a GPU with this backbone).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import ModuleList
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch import Tensor, nn

from .sparsevit import (
    DenseLayout,
    RatioSpec,
    SparseSwinBlock,
    SparseSwinStage,
    SparseViT,
    WindowGeometry,
    WindowMSA,
    WindowSelection,
    _check_number,
    compute_dtype,
    normalize_pruning_ratios,
    top_windows,
)

# subtracted from the attention logits of a pruned key at inference: exp(-1000) is 0 in every float format
PRUNED_KEY_LOGIT = 1e3


def num_kept_tokens(num_tokens: int, ratio: float) -> int:
    """Tokens per image a block with pruning ratio ``ratio`` computes: ``max(1, int(H * W * (1 - ratio)))``."""
    return max(1, int(num_tokens * (1 - ratio)))


# ----------------------------------------------------------------------------------------------
# Predictor and selections
# ----------------------------------------------------------------------------------------------
class TokenKeepPredictor(nn.Module):
    """DynamicViT-style token scorer: ``LayerNorm -> Linear(C, H) -> GELU``, split into a local half and a half
    averaged over the image's kept tokens (the global feature), concatenated, then
    ``Linear(H, H/2) -> GELU -> Linear(H/2, 2)`` and log-softmax over (keep, drop).

    Args:
        embed_dims: channels C of the tokens.
        hidden_dims: H (even, >= 2).
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        if hidden_dims < 2 or hidden_dims % 2:
            raise ValueError(f'hidden_dims must be even and >= 2, got {hidden_dims}')
        self.norm = nn.LayerNorm(embed_dims)
        self.in_proj = nn.Sequential(nn.Linear(embed_dims, hidden_dims), nn.GELU())
        self.head = nn.Sequential(nn.Linear(hidden_dims, hidden_dims // 2), nn.GELU(),
                                  nn.Linear(hidden_dims // 2, 2))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=0.02, bias=0.0)
            elif isinstance(m, nn.LayerNorm):
                constant_init(m, 1.0)

    def forward(self, tokens: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        """``(B, n, C)`` tokens, optional ``(B, n, 1)`` keep weights of the global pooling (None: all kept) ->
        ``(B, n, 2)`` float32 log-probabilities of (keep, drop)."""
        local, pooled = self.in_proj(self.norm(tokens)).chunk(2, dim=-1)
        if weights is None:
            pooled = pooled.mean(1, keepdim=True)
        else:
            weights = weights.to(pooled.dtype)
            pooled = (pooled * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
        logits = self.head(torch.cat([local, pooled.expand_as(local)], dim=-1))
        return F.log_softmax(logits.float(), dim=-1)


@dataclass
class TokenSelection:
    """The tokens a pruned block computes (shared by the blocks of a group with the same shift).

    Exactly one of ``rows`` (inference) and ``keep`` (training) is set.

    Attributes:
        geometry: the window geometry of the block's map size and shift.
        batch_size: B.
        rows: ``(B * k,)`` long, rows of the kept tokens in the flat ``(B * H * W, C)`` map.
        keep: ``(B * H * W, 1)`` straight-through keep mask (0 / 1 forward).
    """

    geometry: WindowGeometry
    batch_size: int
    rows: Optional[Tensor] = None
    keep: Optional[Tensor] = None


def masked_window_attention(w_msa: WindowMSA, qkv: Tensor, regions: Optional[tuple[Tensor, Tensor]],
                            key_keep: Tensor) -> Tensor:
    """Window attention with DynamicViT's multiplicative key gate (training path, differentiable in the gate).

    ``P_ij = exp(A_ij) G_ij / sum_k exp(A_ik) G_ik`` with ``G_ij = key_keep_j`` for ``j != i`` and 1 on the
    diagonal; ``A`` holds the scaled ``q . k``, the relative position bias and Swin's shift mask.

    Args:
        w_msa: the block's attention (its scale, bias table and dropout).
        qkv: ``(K, N, 3C)`` projected window tokens.
        regions: ``(K, 1, N, R)`` shift-region channels of q and of k (see ``WindowGeometry``), or None.
        key_keep: ``(K, N)`` keep gate of each slot as a key (padded slots: 1).

    Returns:
        ``(K * N, C)`` attention output before the output projection.
    """
    num_windows, n, c3 = qkv.shape
    heads, c = w_msa.num_heads, c3 // 3
    q, k, v = qkv.view(num_windows, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q @ k.transpose(-2, -1)) * w_msa.scale + w_msa.attention_bias(q.dtype)
    if regions is not None:
        logits = logits + (regions[0] @ regions[1].transpose(-2, -1)) * w_msa.scale
    eye = torch.eye(n, dtype=key_keep.dtype, device=key_keep.device)
    gate = key_keep[:, None, None, :] * (1 - eye) + eye  # (K, 1, N, N)
    logits = logits.float()
    # the max over the keys a query sees: its largest weight is exactly 1, so the sum is >= 1
    shift = logits.masked_fill(gate.detach() == 0, -math.inf).amax(-1, keepdim=True)
    # A gated-out key may score far above every key the query sees (trained weights: by more than 88, where
    # float32's exp overflows, and inf * 0 is NaN). Capping the exponent at the visible maximum changes no
    # forward value (those weights are multiplied by 0) and bounds the gate's gradient there by 1 / sum.
    weights = torch.exp((logits - shift).clamp(max=0.0)) * gate
    probs = weights / weights.sum(-1, keepdim=True)
    probs = F.dropout(probs, w_msa.attn_drop_rate, training=w_msa.training)
    return (probs.to(v.dtype) @ v).transpose(1, 2).reshape(num_windows * n, c)


# ----------------------------------------------------------------------------------------------
# Block and stage
# ----------------------------------------------------------------------------------------------
class TokenPruningBlock(SparseSwinBlock):
    """A SparseViT block (same parameters) that also runs on a :class:`TokenSelection`: the kept tokens at
    inference, every token with a straight-through keep mask in training. With a ``WindowSelection`` it is
    SparseViT's block."""

    def forward(self, x: Tensor, selection: Union[WindowSelection, TokenSelection]) -> Tensor:
        """``(B * H * W, C)`` map -> the same shape; pruned tokens keep their value.

        Args:
            x: flat token map.
            selection: a ``WindowSelection`` (SparseViT's path; dense blocks) or a :class:`TokenSelection`.
        """
        if not isinstance(selection, TokenSelection):
            return super().forward(x, selection)
        forward = self._forward_kept if selection.rows is not None else self._forward_masked
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(forward, x, selection, use_reentrant=False)
        return forward(x, selection)

    @staticmethod
    def _frame(selection: TokenSelection) -> tuple[WindowGeometry, int, DenseLayout, int]:
        """(geometry, B, its dense window layout, tokens per window N) of a selection."""
        geometry = selection.geometry
        return geometry, selection.batch_size, geometry.dense_layout(selection.batch_size), geometry.tokens_per_window

    def _forward_masked(self, x: Tensor, selection: TokenSelection) -> Tensor:
        """Training: every token computed; updates and attention keys gated by the keep mask."""
        geometry, batch_size, layout, n = self._frame(selection)
        c, w_msa = x.shape[1], self.attn.w_msa
        keep = selection.keep.to(x.dtype)
        qkv = w_msa.qkv(self.norm1(x)).index_select(0, layout.slot_rows)  # (B * nW * N, 3C)
        key_keep = keep[:, 0].index_select(0, layout.slot_rows)
        if layout.pad_slots is not None:
            qkv.index_put_((layout.pad_slots,), w_msa.padding_qkv().to(qkv.dtype))
            key_keep = key_keep.index_fill(0, layout.pad_slots, 1.0)
        regions = geometry.dense_selection(batch_size, compute_dtype(x)).regions
        attn = masked_window_attention(w_msa, qkv.view(-1, n, 3 * c), regions, key_keep.view(-1, n))
        attn = w_msa.proj_drop(w_msa.proj(attn.index_select(0, layout.row_slots)))
        image_of_token = None
        if self._drops():
            image_of_token = torch.arange(x.shape[0], device=x.device) // (geometry.height * geometry.width)
        y = x + keep * self._drop_path(attn, image_of_token, batch_size)
        return y + keep * self._drop_path(self.ffn(self.norm2(y)), image_of_token, batch_size)

    def _forward_kept(self, x: Tensor, selection: TokenSelection) -> Tensor:
        """Inference: norms, q/k/v, projection and FFN on the ``B * k`` kept rows; attention in their windows
        with the pruned slots masked out as keys."""
        geometry, batch_size, layout, n = self._frame(selection)
        rows, c, w_msa = selection.rows, x.shape[1], self.attn.w_msa
        tokens = x.index_select(0, rows)  # (M, C)
        qkv = w_msa.qkv(self.norm1(tokens))  # (M, 3C)
        slots = layout.row_slots.index_select(0, rows)  # window slot of each kept token
        num_slots = batch_size * geometry.num_windows * n
        windows = qkv.new_zeros(num_slots, 3 * c)
        key_bias = qkv.new_full((num_slots,), -PRUNED_KEY_LOGIT)  # 0 for the keys attention may see
        if layout.pad_slots is not None:
            windows.index_put_((layout.pad_slots,), w_msa.padding_qkv().to(qkv.dtype))
            key_bias.index_fill_(0, layout.pad_slots, 0.0)
        windows.index_copy_(0, slots, qkv)
        key_bias.index_fill_(0, slots, 0.0)
        regions = geometry.dense_selection(batch_size, qkv.dtype).regions
        attn = w_msa(windows.view(-1, n, 3 * c), regions, key_bias.view(-1, 1, 1, n))  # (B * nW * N, C)
        y = tokens + w_msa.proj_drop(w_msa.proj(attn.index_select(0, slots)))
        y = y + self.ffn(self.norm2(y))
        if y.dtype != x.dtype:  # under autocast the residual stream may have been promoted
            x = x.to(torch.promote_types(x.dtype, y.dtype))
            y = y.to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            return x.index_copy(0, rows, y)
        return x.index_copy_(0, rows, y)


class TokenPruningStage(SparseSwinStage):
    """A SparseViT stage of :class:`TokenPruningBlock` with one :class:`TokenKeepPredictor` per search group
    (set by :meth:`build_predictors`).

    After a training forward, :attr:`keep_records` holds ``(keep (B, H * W), target keep fraction)`` of each
    pruning location that ran.
    """

    block_class = TokenPruningBlock

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: list[tuple[int, ...]] = []
        self.predictors = ModuleList()
        self.gumbel_tau = 1.0
        self.keep_records: list[tuple[Tensor, float]] = []

    def build_predictors(self, groups: list[tuple[int, ...]], hidden_dims: int, gumbel_tau: float) -> None:
        """One predictor per group of block indices (``StageSearchSpace.group_blocks``)."""
        embed_dims = self.blocks[0].norm1.normalized_shape[0]
        self.groups = [tuple(g) for g in groups]
        self.predictors = ModuleList([TokenKeepPredictor(embed_dims, hidden_dims) for _ in self.groups])
        self.gumbel_tau = gumbel_tau

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, H, W, C)`` -> (stage output ``(B, H, W, C)``, downsampled map or the output)."""
        if not self.groups:
            raise RuntimeError('TokenPruningStage needs build_predictors() before its first forward')
        b, h, w, c = x.shape
        flat = x.reshape(b * h * w, c)
        geometries = {shift: self.geometry(h, w, shift, x.device) for shift in self._shifts()}
        dtype = compute_dtype(flat)
        self.keep_records = []
        # inference: (B, k) kept token ids of each image; training: (B * H * W, 1) keep mask; None: every token
        kept: Optional[Tensor] = None
        current = 0.0
        for group, members in enumerate(self.groups):
            ratio = self.pruning_ratios[members[0]]
            if ratio > current:
                kept = self._select(group, flat, b, ratio, kept)
                current = ratio
            for i in members:
                block = self.blocks[i]
                geometry = geometries[block.shift_size]
                if kept is None:
                    selection = geometry.dense_selection(b, dtype)
                elif self.training:
                    selection = TokenSelection(geometry, b, keep=kept)
                else:
                    offsets = torch.arange(b, device=kept.device)[:, None] * (h * w)
                    selection = TokenSelection(geometry, b, rows=(kept + offsets).flatten())
                flat = block(flat, selection)
        out = flat.view(b, h, w, c)
        return out, (self.downsample(out) if self.downsample is not None else out)

    def _select(self, group: int, flat: Tensor, batch_size: int, ratio: float,
                kept: Optional[Tensor]) -> Optional[Tensor]:
        """The group's tokens, chosen among ``kept`` (the previous group's; None: all).

        Inference: ``(B, k)`` token ids, the top ``k = num_kept_tokens(H * W, ratio)`` by keep log-probability
        (None while ``k`` covers every token). Training: the ``(B * H * W, 1)`` straight-through mask, recorded
        with its target keep fraction ``1 - ratio``.
        """
        predictor = self.predictors[group]
        num_tokens = flat.shape[0] // batch_size
        tokens = flat.view(batch_size, num_tokens, -1)
        if self.training:
            prev = None if kept is None else kept.view(batch_size, num_tokens, 1)
            logp = predictor(tokens, prev)
            keep = F.gumbel_softmax(logp, tau=self.gumbel_tau, hard=True)[..., 0]  # (B, H * W)
            if prev is not None:
                keep = keep * prev[..., 0]
            self.keep_records.append((keep, 1.0 - ratio))
            return keep.reshape(-1, 1)
        k = num_kept_tokens(num_tokens, ratio)
        candidates = num_tokens if kept is None else kept.shape[1]
        if k >= candidates:
            return kept
        if kept is not None:  # score only the tokens still kept
            tokens = tokens.gather(1, kept[:, :, None].expand(-1, -1, tokens.shape[-1]))
        best = top_windows(predictor(tokens)[..., 0], k)  # (B, k) positions among the candidates
        return best if kept is None else kept.gather(1, best)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class DynamicTokenSwin(SparseViT):
    """Swin Transformer with DynamicViT-style token pruning (see the module docstring for the method).

    Takes every argument of :class:`SparseViT` (mmdet ``SwinTransformer``'s, ``arch``, ``pruning_ratios``,
    ``cuda_graphs``); ``pruning_ratios`` here is the fraction of each block's tokens that is *not* computed
    (equal within a W-MSA / SW-MSA group). Extra arguments:

    Args:
        predictor_hidden_ratio: hidden width of each :class:`TokenKeepPredictor` as a fraction of the stage's
            channels (rounded to an even number >= 2).
        gumbel_tau: temperature of the training-time Gumbel-softmax.
        keep_ratio_loss_weight: weight of ``loss_keep_ratio`` (DynamicViT's ratio loss).

    Training stores ``loss_keep_ratio`` after each forward with a pruned group; :meth:`auxiliary_losses` returns
    it once, and the detector adds it to its loss dict (BEVDet and ``AuxLossMaskRCNN`` do). Predictors of
    unpruned groups take no part in a forward: under DDP set ``find_unused_parameters=True`` unless every
    group is pruned.

    Forward: ``(B, in_channels, H, W)`` -> list of ``(B, C_i, H_i, W_i)`` for ``out_indices``.
    """

    stage_class = TokenPruningStage

    def __init__(self, *args: Any, predictor_hidden_ratio: float = 0.5, gumbel_tau: float = 1.0,
                 keep_ratio_loss_weight: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_number('predictor_hidden_ratio', predictor_hidden_ratio, 0, math.inf, include_low=False)
        _check_number('gumbel_tau', gumbel_tau, 0, math.inf, include_low=False)
        _check_number('keep_ratio_loss_weight', keep_ratio_loss_weight, 0, math.inf, include_low=True)
        self.keep_ratio_loss_weight = float(keep_ratio_loss_weight)
        for stage, space in zip(self.stages, self.search_space()):
            hidden = max(2, 2 * round(space.embed_dims * predictor_hidden_ratio / 2))
            stage.build_predictors(space.group_blocks, hidden, float(gumbel_tau))
        self._auxiliary_losses: dict[str, Tensor] = {}
        self._warned_uncollected = False

    def set_pruning_ratios(self, ratios: RatioSpec) -> None:
        """As :meth:`SparseViT.set_pruning_ratios`; also refuses different ratios within a search group."""
        per_block = normalize_pruning_ratios(ratios, self.depths)
        for space, stage_ratios in zip(self.search_space(), per_block):
            for members in space.group_blocks:
                values = {stage_ratios[b] for b in members}
                if len(values) > 1:
                    raise ValueError(
                        f'DynamicTokenSwin has one token predictor per block group: blocks {members} of stage '
                        f'{space.stage} need one ratio, got {[stage_ratios[b] for b in members]}')
        super().set_pruning_ratios(per_block)

    def init_weights(self) -> None:
        """Initialise the predictors, then SparseViT's init (a checkpoint overwrites any predictor it holds)."""
        for stage in self.stages:
            for predictor in stage.predictors:
                predictor.init_weights()
        super().init_weights()

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C_in, H, W)`` -> feature maps ``(B, C_i, H_i, W_i)``; in training also stores the keep-ratio
        loss for :meth:`auxiliary_losses`."""
        if self.training and self._auxiliary_losses and not self._warned_uncollected:
            print_log('DynamicTokenSwin: the keep-ratio loss of the previous training forward was never collected; '
                      'use a detector that adds backbone.auxiliary_losses() to its losses (BEVDet, AuxLossMaskRCNN)',
                      logger='current', level=logging.WARNING)
            self._warned_uncollected = True
        outs = super().forward(x)
        self._auxiliary_losses = {}
        if self.training:
            records = [record for stage in self.stages for record in stage.keep_records]
            if records:
                terms = [((keep.mean(1) - target) ** 2).mean() for keep, target in records]
                self._auxiliary_losses['loss_keep_ratio'] = self.keep_ratio_loss_weight * torch.stack(terms).mean()
        return outs

    def auxiliary_losses(self) -> dict[str, Tensor]:
        """The losses of the last training forward (``loss_keep_ratio`` when a group was pruned), once: a second
        call returns an empty dict."""
        losses, self._auxiliary_losses = self._auxiliary_losses, {}
        return losses
