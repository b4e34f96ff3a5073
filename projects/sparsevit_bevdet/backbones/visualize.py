"""Which windows SparseViT computes: per-pixel masks and an overlay figure."""
from __future__ import annotations

import torch
from torch import Tensor

from ..utils.atomic_io import atomic_save_figure
from .sparsevit import SparseViT, num_kept_windows, top_windows


@torch.no_grad()
def first_stage_keep_mask(model: SparseViT, images: Tensor, ratio: float) -> Tensor:
    """Tokens of stage 0 computed by an unshifted block with ``ratio``, as an image-size mask.

    Args:
        model: the backbone (its weights decide the activations, hence the ranking).
        images: ``(B, 3, H, W)`` normalised images.
        ratio: pruning ratio of the block.

    Returns:
        ``(B, H, W)`` bool, True where the pixel's window is computed.
    """
    x = model.patch_embed(images)
    b, h, w, c = x.shape
    stage = model.stages[0]
    geometry = stage.geometry(h, w, 0, x.device)
    computed = torch.ones(b * h * w, dtype=torch.bool, device=x.device)
    k = num_kept_windows(geometry.num_windows, ratio)
    if ratio > 0 and k < geometry.num_windows:
        kept = top_windows(stage.window_scores(x.reshape(-1, c), b, h, w)[0], k)  # (B, k)
        index = geometry.token_index[kept]  # (B, k, N)
        rows = index + torch.arange(b, device=x.device).view(-1, 1, 1) * h * w
        computed.zero_()
        computed[rows[index >= 0]] = True
    mask = computed.view(b, 1, h, w).float()
    size = (h * model.patch_size, w * model.patch_size)
    full = torch.nn.functional.interpolate(mask, size=size, mode='nearest')[:, 0] > 0.5
    return full[:, :images.shape[2], :images.shape[3]]


def plot_keep_masks(images_rgb: list, masks: Tensor, titles: list[str], path: str, suptitle: str = '') -> None:
    """Save a grid of camera images with pruned windows darkened (atomic write)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(images_rgb)
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 1.9 * rows + 0.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis('off')
    for ax, img, mask, title in zip(np.atleast_1d(axes).ravel(), images_rgb, masks, titles):
        shown = img.astype(np.float32) / 255.0
        m = mask.cpu().numpy()[..., None]
        ax.imshow(np.where(m, shown, shown * 0.25))
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
