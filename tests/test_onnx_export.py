"""ONNX export of the SparseViT image encoder (issue 10): onnxruntime equals PyTorch (dense, pruned, tied window
scores), the window ranking stays data-dependent in the graph, and tools/export_onnx.py end to end.

Exports are slow (about 10 s each for this two-stage encoder), so the module makes two: the dense one here and
the pruned one through the tool, which the other tests reuse.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.backbones import sparsevit as sv
from projects.sparsevit_bevdet.backbones.onnx_export import (
    export_onnx,
    max_abs_errors,
    onnxruntime_session,
    run_onnxruntime,
)
from projects.sparsevit_bevdet.testing.sparsevit import TWO_STAGES, recorded_kept_windows, tiny_sparsevit
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

SHAPE = [2, 3, 64, 96]  # both stage maps need padding; each stage has a W-MSA and an SW-MSA block
RATIOS = [[0.75, 0.75], [0.5, 0.5]]  # stage 0 keeps 3 of 12 windows, stage 1 2 of 4
TOLERANCE = 1e-4
CONFIG = f"""
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)
default_scope = 'mmdet3d'
model = dict(type='BEVDet', img_backbone=dict(type='SparseViT', drop_path_rate=0.0, **{TWO_STAGES!r}))
"""


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    return load_tool('export_onnx')


@pytest.fixture(scope='module')
def model() -> SparseViT:
    return tiny_sparsevit(**TWO_STAGES)


@pytest.fixture(scope='module')
def files(model: SparseViT, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny BEVDet config, a runner-style checkpoint of ``model`` and a best.json with :data:`RATIOS`."""
    root = tmp_path_factory.mktemp('export')
    (root / 'config.py').write_text(CONFIG)
    state = {f'img_backbone.{k}': v for k, v in model.state_dict().items()}
    torch.save({'meta': {'iter': 1}, 'state_dict': state}, root / 'model.pth')
    (root / 'best.json').write_text(json.dumps({'pruning_ratios': RATIOS}))
    return SimpleNamespace(root=root, config=root / 'config.py', checkpoint=root / 'model.pth',
                           best=root / 'best.json')


@pytest.fixture(scope='module')
def cli(tool: ModuleType, files: SimpleNamespace) -> SimpleNamespace:
    """tools/export_onnx.py with the checkpoint at the searched ratios: its summary and the written model."""
    out = files.root / 'onnx' / 'encoder.onnx'
    summary = tool.main([str(files.config), str(files.checkpoint), '--pruning-ratios', str(files.best),
                         '--shape', *map(str, SHAPE), '--out', str(out), '--threads', '1'])
    return SimpleNamespace(summary=summary, out=out, model=out.read_bytes())


@pytest.fixture(scope='module')
def dense_model(model: SparseViT, tool: ModuleType) -> bytes:
    model.set_pruning_ratios(0.0)
    return export_onnx(model, tool.example_inputs(SHAPE, 0)[0])


def onnx_error(model_bytes: bytes, model: SparseViT, images: torch.Tensor) -> float:
    with torch.no_grad():
        return max(max_abs_errors(run_onnxruntime(onnxruntime_session(model_bytes, 1), images), model(images)))


def tied_input() -> torch.Tensor:
    """Images that are zero except one corner: the windows of the zero part have exactly equal scores."""
    images = torch.zeros(SHAPE)
    images[:, :, :20, :20] = torch.randn(SHAPE[0], SHAPE[1], 20, 20, generator=torch.Generator().manual_seed(7))
    return images


@pytest.mark.parametrize('pruned', [False, True], ids=['dense', 'pruned'])
def test_onnxruntime_equals_pytorch(model, tool, cli, dense_model, pruned):
    model.set_pruning_ratios(RATIOS if pruned else 0.0)
    onnx_model = cli.model if pruned else dense_model
    export_input, other = tool.example_inputs(SHAPE, 0)
    tied = tied_input()
    for images in (export_input, other, tied):
        assert onnx_error(onnx_model, model, images) <= TOLERANCE
    if pruned:  # the tied input really has ties where the kept set ends: the tie-break order is checked
        with torch.no_grad():
            x = model.patch_embed(tied)
        b, h, w, c = x.shape
        geometry = model.stages[0].geometry(h, w, 0, x.device)
        scores = geometry.window_importance(sv.token_importance(x.reshape(-1, c), b))
        k = sv.num_kept_windows(geometry.num_windows, RATIOS[0][0])
        ordered = scores.sort(dim=1, descending=True).values
        assert (ordered[:, k - 1] == ordered[:, k]).all()


def test_ranking_stays_data_dependent_in_the_graph(model, tool, cli, monkeypatch):
    model.set_pruning_ratios(RATIOS)
    images_a = tool.example_inputs(SHAPE, 0)[0]  # the input the graph was exported with
    images_b = images_a.roll(shifts=(32, 48), dims=(2, 3))  # its important windows moved elsewhere
    with torch.no_grad():
        with recorded_kept_windows(model) as kept_a:
            model(images_a)
        with recorded_kept_windows(model) as kept_b:
            expected_b = model(images_b)
    kept_a = [k for _, k in kept_a if k is not None]
    assert len(kept_a) == 4 and any(not torch.equal(a, b) for a, (_, b) in zip(kept_a, kept_b))
    assert onnx_error(cli.model, model, images_b) <= TOLERANCE
    # a graph with A's windows baked in would give this on B: far from what onnxruntime gives
    # each stage ranks both shifts in one call: replay A's windows of its two blocks, stacked
    replay = iter(torch.stack(kept_a[i:i + 2]) for i in range(0, len(kept_a), 2))
    monkeypatch.setattr(sv, 'top_windows', lambda scores, k: next(replay))
    with torch.no_grad():
        baked_b = model(images_b)
    assert max((b - e).abs().max() for b, e in zip(baked_b, expected_b)) > 100 * TOLERANCE


def test_cli_writes_the_checked_model(cli, model):
    assert cli.out.is_file() and [p.name for p in cli.out.parent.iterdir()] == ['encoder.onnx']  # no temp left
    errors = cli.summary['max_abs_error']
    assert set(errors) == {'export input', 'another input'}
    assert all(0 <= e <= TOLERANCE for values in errors.values() for e in values)
    # the file holds the checkpoint's weights at the best.json ratios: it equals the model at those ratios
    model.set_pruning_ratios(RATIOS)
    images = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11))
    assert onnx_error(str(cli.out), model, images) <= TOLERANCE
    model.set_pruning_ratios(0.0)
    assert onnx_error(str(cli.out), model, images) > 100 * TOLERANCE  # ... and not the dense encoder


def test_benchmark_reports_both_backends(tool, model, cli, dense_model):
    model.set_pruning_ratios(RATIOS)
    result = tool.benchmark(model, tool.example_inputs(SHAPE, 0)[0], cli.model, dense_model, rounds=2, warmup=0,
                            threads=1, seed=0)
    assert set(result) == {'onnxruntime', 'pytorch'}
    for row in result.values():
        assert row['dense_ms'] > 0 and row['sparse_ms'] > 0
        assert row['sparse_vs_dense'] == pytest.approx(row['sparse_ms'] / row['dense_ms'])
    assert model.pruning_ratios == RATIOS


@pytest.mark.parametrize('case, message', [
    ('no-backbone-weights', 'has no img_backbone.* weights'),
    ('wrong-channels', '--shape has 4 channels, the encoder takes 3'),
    ('bad-ratio', 'expected 0 <= r < 1'),
    ('not-sparsevit', "exports SparseViT encoders; model.img_backbone has type='SwinTransformer'"),
])
def test_cli_refuses_bad_input(tool, files, tmp_path, case, message):
    out = tmp_path / 'encoder.onnx'
    config, checkpoint, shape, extra = files.config, files.checkpoint, list(map(str, SHAPE)), []
    if case == 'no-backbone-weights':
        checkpoint = tmp_path / 'other.pth'
        torch.save({'state_dict': {'pts_backbone.weight': torch.zeros(1)}}, checkpoint)
    elif case == 'wrong-channels':
        shape[1] = '4'
    elif case == 'bad-ratio':
        extra = ['--pruning-ratios', '1.5']
    else:
        config = tmp_path / 'swin.py'
        config.write_text(CONFIG.replace("type='SparseViT'", "type='SwinTransformer'"))
    with pytest.raises(SystemExit, match=r'export_onnx\.py: error: .*' + re.escape(message)):
        tool.main([str(config), str(checkpoint), '--shape', *shape, '--out', str(out), *extra])
    assert not out.exists()


def test_cli_usage_errors(tool, files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(tmp_path / 'missing.py'), '--shape', *map(str, SHAPE), '--out', str(tmp_path / 'x.onnx')])
    assert exit_info.value.code == 2 and 'config file not found' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(files.config), '--shape', '2', '3', '0', '96', '--out', str(tmp_path / 'x.onnx')])
    assert '--shape values must be positive' in capsys.readouterr().err


def test_checkpoint_is_loaded_weights_only(tool, files, tmp_path):
    # a checkpoint with an arbitrary pickled object is refused before anything of it runs
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Path('x')}, evil)
    with pytest.raises(SystemExit, match=r'export_onnx\.py: error: .*pathlib'):
        tool.main([str(files.config), str(evil), '--shape', *map(str, SHAPE), '--out', str(tmp_path / 'x.onnx')])
