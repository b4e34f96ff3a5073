"""SparseViT's sparse path (issue 20): static shapes without host synchronisation, few dispatched operators,
gathered and masked window selections that agree, training, and CUDA-graph replay."""
from __future__ import annotations

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from torch._subclasses.fake_tensor import FakeTensorMode

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.testing.sparsevit import recorded_kept_windows, run_block, tiny_sparsevit
from projects.sparsevit_bevdet.utils.op_count import count_dispatched_ops

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
# what pruning adds per stage, whatever its depth: the ranking (importance, window norms, one sort for both
# shifts), one gather of slot rows for both shifts and the shifted windows' region channels; measured 6 at
# 672 x 672, 9 at 256 x 704 (whose maps need padding: the importance's zero, the extra row, the padding test)
RANKING_OPS_PER_STAGE = 9


@pytest.fixture(scope='module')
def model() -> SparseViT:
    return tiny_sparsevit()


def test_needs_no_data_dependent_value():
    # Fake tensors have shapes but no values: anything that reads data on the host (.tolist(), .item(),
    # nonzero, boolean indexing) raises, and so would a CUDA-graph capture.
    x = torch.randn(2, 3, 64, 96)
    fresh = tiny_sparsevit(pruning_ratios=0.6)  # its index caches will hold fakes
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
        outs = fresh(mode.from_tensor(x))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 128, 4, 6), (2, 256, 2, 3)]


@pytest.mark.parametrize('shape', [(1, 3, 672, 672), (1, 3, 256, 704)])
def test_pruning_adds_ops_per_stage_not_per_block(shape):
    """Eager latency on a GPU follows the dispatched operators: a pruned block dispatches no more than a
    dense one, and dense SparseViT no more than mmdet's Swin."""
    torch.manual_seed(0)
    swin = SwinTransformer(drop_path_rate=0.0)
    swin.eval()
    model = SparseViT(arch='tiny', drop_path_rate=0.0).eval()
    x = torch.randn(shape)

    def ops(net: torch.nn.Module) -> int:
        with torch.no_grad():
            net(x)  # index caches and the bias cache are built on the first call
        return sum(count_dispatched_ops(lambda: net(x)).values())

    mmdet_ops, dense_ops = ops(swin), ops(model)
    model.set_pruning_ratios(0.6)
    sparse_ops = ops(model)
    assert dense_ops <= mmdet_ops
    assert dense_ops < sparse_ops <= dense_ops + RANKING_OPS_PER_STAGE * len(model.stages)


@pytest.mark.parametrize('shift', [0, 3])
def test_gathered_and_masked_selections_agree(model, shift):
    """The two ways of computing kept windows give the same rows (the masked one computes the whole map)."""
    block = model.stages[0].blocks[1 if shift else 0]
    b, h, w, c = 2, 20, 30, 32
    geometry = model.stages[0].geometry(h, w, shift, torch.device('cpu'))
    x = torch.randn(b * h * w, c, generator=torch.Generator().manual_seed(3))
    windows = torch.tensor([[0, 2, 14], [1, 3, 4]])
    with torch.no_grad():
        gathered = run_block(block, x.clone(), geometry, windows, b)
        # the form geometry.selection takes for large kept sets, here for the same windows
        masked_selection = geometry.masked_selection(windows, torch.float32)
        masked = block(x.clone(), masked_selection)
    torch.testing.assert_close(gathered, masked, rtol=0, atol=1e-5)
    assert not torch.equal(gathered, x)


def test_large_kept_sets_compute_the_map_not_more_slots(model):
    # 16 x 24 tokens in 3 x 4 windows of 49 slots: keeping 8 windows (392 slots) is cheaper as the whole map
    geometry = model.stages[0].geometry(16, 24, 0, torch.device('cpu'))
    many = geometry.selection(torch.arange(8).repeat(2, 1), torch.float32)
    few = geometry.selection(torch.arange(7).repeat(2, 1), torch.float32)
    assert many.rows is None and many.row_mask is not None and int(many.row_mask.sum()) < 2 * 16 * 24
    assert few.rows is not None and few.rows.numel() == 2 * 7 * 49


def test_keeps_at_least_one_window_per_image_and_trains():
    # at 64 x 64 stage 0 has 9 windows, stage 1 has 4: int(nW * 0.1) == 0, one window is kept
    trainable = tiny_sparsevit(pruning_ratios=0.9).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with recorded_kept_windows(trainable) as kept:
        sum(o.square().mean() for o in trainable(x)).backward()
    assert [tuple(k.shape) for _, k in kept if k is not None] == [(2, 1)] * 4
    assert [n for n, p in trainable.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@CUDA
def test_never_synchronises_with_the_host_on_cuda():
    model = tiny_sparsevit(pruning_ratios=0.6).cuda()
    x = torch.randn(2, 3, 64, 96, device='cuda')
    with torch.no_grad():
        model(x)  # caches
        torch.cuda.set_sync_debug_mode('error')
        try:
            model(x)
        finally:
            torch.cuda.set_sync_debug_mode(0)


@CUDA
@pytest.mark.parametrize('dtype', [None, torch.float16])
def test_cuda_graph_replay_equals_eager(dtype):
    model = tiny_sparsevit(pruning_ratios=0.6).cuda()
    graphed = tiny_sparsevit(pruning_ratios=0.6, cuda_graphs=True).cuda()
    for ratios in (0.6, 0.3):  # a ratio change recaptures
        model.set_pruning_ratios(ratios)
        graphed.set_pruning_ratios(ratios)
        for seed in (0, 1):  # replays rank the new input's windows
            x = torch.randn(2, 3, 64, 96, device='cuda', generator=torch.Generator('cuda').manual_seed(seed))
            with torch.no_grad(), torch.autocast('cuda', dtype=dtype or torch.float32, enabled=dtype is not None):
                expected, got = model(x), graphed(x)
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-5 if dtype is None else 1e-2)
    assert graphed._graphs.captures == 2  # one per ratio setting
