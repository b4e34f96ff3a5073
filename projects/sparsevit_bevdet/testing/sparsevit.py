"""Small SparseViT encoders and a recorder of the windows their blocks compute (tests of the sparse paths)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

import torch
from torch import Tensor

from ..backbones import SparseViT
from ..backbones.sparsevit import WindowGeometry

# four stages of W-MSA + SW-MSA blocks; at 64 x 96 the maps 16 x 24 and 8 x 12 need padding
TINY_SPARSEVIT = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                      drop_path_rate=0.0)
# overrides for a two-stage encoder (graph capture and export are slow): at 64 x 96 both maps need padding
TWO_STAGES = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2), strides=(4, 2), out_indices=(0, 1))


def tiny_sparsevit(seed: int = 0, **kwargs) -> SparseViT:
    """A seeded :data:`TINY_SPARSEVIT` (``kwargs`` override it) in eval mode, with perturbed norms and
    bias tables so that a wrong mapping cannot hide behind initial values."""
    torch.manual_seed(seed)
    model = SparseViT(**{**TINY_SPARSEVIT, **kwargs})
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'norm' in name or 'relative_position_bias_table' in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@contextlib.contextmanager
def recorded_kept_windows(model: SparseViT) -> Iterator[list[tuple[int, Optional[Tensor]]]]:
    """While active, every block call appends ``(shift, kept)``: ``kept`` is the ``(B, k)`` window ids of
    each image the block computes, sorted, or None when it computes every window."""
    record: list[tuple[int, Optional[Tensor]]] = []

    def hook(block: torch.nn.Module, args: tuple) -> None:
        windows = args[1].windows
        record.append((block.shift_size, None if windows is None else windows.detach().sort(dim=1).values))

    handles = [block.register_forward_pre_hook(hook) for stage in model.stages for block in stage.blocks]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def run_block(block: torch.nn.Module, x: Tensor, geometry: WindowGeometry, windows: Optional[Tensor],
              batch_size: int) -> Tensor:
    """One block on a ``(B * H * W, C)`` map computing the ``(B, k)`` ``windows`` (all when None), as its stage
    runs it (the extra row of a gathered selection added and dropped here)."""
    if windows is None:
        return block(x, geometry.dense_selection(batch_size, x.dtype))
    selection = geometry.selection(windows, x.dtype)
    if selection.pad is None:
        return block(x, selection)
    return block(torch.cat([x, x.new_zeros(1, x.shape[1])]), selection)[:-1]
