"""SparseViT's static-shape sparse path (issue 10): the same kept windows and outputs as the dynamic path,
no host synchronisation, the path-selection rule, and training."""
from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.backbones import sparsevit as sv
from projects.sparsevit_bevdet.testing.sparsevit import TINY_SPARSEVIT, recorded_kept_windows, tiny_sparsevit

MIXED = [[0.2, 0.5], [0.0, 0.6], [0.3, 0.3], [0.0, 0.0]]


@pytest.fixture(scope='module')
def model() -> SparseViT:
    return tiny_sparsevit()


def run(model: SparseViT, x: torch.Tensor, static: bool) -> tuple[list[torch.Tensor], list]:
    """Outputs and recorded ``(shift, kept)`` of every block on one path."""
    model.static_shapes = static
    try:
        with torch.no_grad(), recorded_kept_windows(model) as kept:
            return model(x), kept
    finally:
        model.static_shapes = None


# 64 x 96: stage maps 16 x 24 and 8 x 12 need padding; 56 x 112: stages 0 and 1 are whole windows
@pytest.mark.parametrize('shape', [(2, 3, 64, 96), (1, 3, 56, 112)])
@pytest.mark.parametrize('ratios', [0.0, 0.3, 0.6, 0.9, MIXED], ids=['r0', 'r0.3', 'r0.6', 'r0.9', 'mixed'])
def test_static_path_equals_dynamic_path(model, shape, ratios):
    model.set_pruning_ratios(ratios)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    dynamic, dynamic_kept = run(model, x, static=False)
    static, static_kept = run(model, x, static=True)
    assert [s for s, _ in static_kept] == [s for s, _ in dynamic_kept]
    for (shift, a), (_, b) in zip(dynamic_kept, static_kept):
        assert (a is None and b is None) or torch.equal(a, b), shift
    for d, s in zip(dynamic, static):
        assert s.shape == d.shape
        assert (s - d).abs().max() <= 1e-5
    if ratios != 0.0:  # the comparison covered pruned W-MSA and SW-MSA blocks
        assert {shift for shift, kept in static_kept if kept is not None} == {0, 3}


def test_keeps_at_least_one_window_per_image_and_trains():
    # at 64 x 64 stage 0 has 9 windows, stage 1 has 4: int(nW * 0.1) == 0, the static path keeps one
    trainable = tiny_sparsevit(static_shapes=True, pruning_ratios=0.9).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with recorded_kept_windows(trainable) as kept:
        sum(o.square().mean() for o in trainable(x)).backward()
    assert [tuple(k.shape) for _, k in kept if k is not None] == [(2, 1)] * 4
    assert [n for n, p in trainable.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize('with_cp', [False, True])
def test_static_path_gradients_equal_dynamic_path(with_cp):
    grads, input_grads = [], []
    for static in (False, True):
        trainable = tiny_sparsevit(static_shapes=static, pruning_ratios=0.6, drop_path_rate=0.1,
                                   with_cp=with_cp).train()
        x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3), requires_grad=True)
        torch.manual_seed(4)  # the same stochastic-depth draws: both paths make them in the same order
        sum((o * o.detach().sign()).mean() for o in trainable(x)).backward()
        grads.append({n: p.grad for n, p in trainable.named_parameters()})
        input_grads.append(x.grad)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[1].values())
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(input_grads[1], input_grads[0], rtol=1e-4, atol=1e-7)


def test_static_path_needs_no_data_dependent_value():
    # Fake tensors have shapes but no values: anything that reads data on the host (.tolist(), .item(),
    # nonzero, boolean indexing) raises. The dynamic path is the control.
    x = torch.randn(2, 3, 64, 96)
    for static in (True, False):
        fresh = tiny_sparsevit(static_shapes=static, pruning_ratios=0.6)  # its index caches will hold fakes
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
            if static:
                outs = fresh(mode.from_tensor(x))
                assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 128, 4, 6),
                                                          (2, 256, 2, 3)]
            else:
                with pytest.raises((RuntimeError, GuardOnDataDependentSymNode)):
                    fresh(mode.from_tensor(x))


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device'))])
def test_path_selection_rule(model, monkeypatch, device):
    calls = []
    original = sv.SparseSwinBlock._forward_static

    def spy(self, *args):
        calls.append(self)
        return original(self, *args)

    monkeypatch.setattr(sv.SparseSwinBlock, '_forward_static', spy)
    model.set_pruning_ratios(0.6)
    model = copy.deepcopy(model).to(device)  # the fixture is shared by the module
    x = torch.randn(1, 3, 64, 96, device=device)
    # (eager, traced); unset, CUDA takes the static path in eager mode too
    expected = {None: (device == 'cuda', True), True: (True, True), False: (False, False)}
    for setting, (eager, traced) in expected.items():
        model.static_shapes = setting
        for tracing, static in ((False, eager), (True, traced)):
            monkeypatch.setattr(sv, 'is_tracing', lambda tracing=tracing: tracing)
            calls.clear()
            with torch.no_grad():
                model(x)
            assert bool(calls) == static, (setting, tracing)
    model.static_shapes = None
    with pytest.raises(TypeError, match='static_shapes'):
        SparseViT(**TINY_SPARSEVIT, static_shapes='yes')


def test_window_positions_and_top_windows_equal_the_stable_ranking():
    generator = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 6, (3, 40), generator=generator).float()  # many exact ties
    ranking = sv.rank_windows(scores)
    positions = sv.window_positions(scores)
    assert torch.equal(positions.argsort(dim=1), ranking)
    for k in (1, 7, 39):
        expected = sv.keep_indices(ranking, 1 - (k + 0.5) / 40).view(3, k) % 40
        assert torch.equal(sv.top_windows(positions, k), expected), k
