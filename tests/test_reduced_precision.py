"""Reduced precision (issue 10): windows are ranked in float32 under autocast, so bf16 (CPU) and fp16 (CUDA)
keep the windows float32 keeps, and the pruned encoder's error against float32 is at most twice the dense one's."""
from __future__ import annotations

import copy

import pytest
import torch

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.backbones import sparsevit as sv
from projects.sparsevit_bevdet.testing.sparsevit import recorded_kept_windows, tiny_sparsevit

RATIO = 0.6
DEVICES = [
    pytest.param('cpu', torch.bfloat16, id='cpu-bf16'),
    pytest.param('cuda', torch.float16, id='cuda-fp16',
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')),
]


@pytest.fixture(scope='module')
def cpu_model() -> SparseViT:
    return tiny_sparsevit()


@pytest.fixture
def model(cpu_model: SparseViT, device: str) -> SparseViT:
    return copy.deepcopy(cpu_model).to(device)


@pytest.fixture
def images(device: str) -> torch.Tensor:
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)).to(device)


def forward(model: SparseViT, images: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[list, list]:
    """Float32 outputs and recorded kept windows of one forward, under autocast to ``dtype`` if given."""
    with torch.no_grad(), recorded_kept_windows(model) as kept, \
            torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        outputs = model(images)
    return [o.float() for o in outputs], kept


def relative_error(outputs: list, references: list) -> float:
    return max(((o - r).norm() / r.norm()).item() for o, r in zip(outputs, references))


@pytest.mark.parametrize('device, dtype', DEVICES)
def test_autocast_keeps_the_float32_windows(model, images, dtype):
    model.set_pruning_ratios(RATIO)
    _, kept_fp32 = forward(model, images)
    _, kept_low = forward(model, images, dtype)
    assert len(kept_low) == len(kept_fp32) and any(k is not None for _, k in kept_fp32)
    for (shift, a), (_, b) in zip(kept_fp32, kept_low):
        assert (a is None and b is None) or torch.equal(a, b), shift
    if dtype == torch.bfloat16:
        # control: on this input, bf16-rounded scores do not separate stage 0's kept windows from the others
        # (a tie or a swap at the boundary), so ranking in bf16 could keep other windows
        stage = model.stages[0]
        with torch.no_grad():
            x = model.patch_embed(images)
        b, h, w, c = x.shape
        scores = stage.geometry(h, w, 0, x.device).window_importance(sv.token_importance(x.reshape(-1, c), b))
        k = sv.num_kept_windows(scores.shape[1], RATIO)
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, sv.top_windows(scores, k), True)
        rounded = scores.to(dtype).float()
        lowest_kept = rounded.masked_fill(~kept, float('inf')).min(dim=1).values
        highest_pruned = rounded.masked_fill(kept, float('-inf')).max(dim=1).values
        assert (lowest_kept <= highest_pruned).any()


@pytest.mark.parametrize('device, dtype', DEVICES)
def test_pruned_error_is_within_twice_the_dense_error(model, images, dtype):
    errors, references = {}, {}
    for ratio in (0.0, RATIO):
        model.set_pruning_ratios(ratio)
        references[ratio], _ = forward(model, images)
        errors[ratio] = relative_error(forward(model, images, dtype)[0], references[ratio])
    assert errors[0.0] > 1e-4  # autocast really ran in low precision
    # pruning changes the outputs far more than the precision does: other kept windows would show
    assert relative_error(references[RATIO], references[0.0]) > 10 * errors[0.0]
    assert errors[RATIO] <= 2 * errors[0.0]
