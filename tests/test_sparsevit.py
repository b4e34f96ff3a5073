"""SparseViT against mmdet's SwinTransformer and against a slow reference of the pruning rule."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import SwinTransformer

from projects.sparsevit_bevdet.backbones import (
    SparseViT,
    convert_official_swin,
    convert_timm_swin,
    expand_group_ratios,
)
from projects.sparsevit_bevdet.backbones.sparsevit import WindowGeometry, num_kept_windows, top_windows
from projects.sparsevit_bevdet.testing.sparsevit import run_block

SMALL = dict(embed_dims=24, depths=(2, 2, 4, 2), num_heads=(1, 2, 3, 4), window_size=7,
             drop_path_rate=0.0)


@pytest.fixture(scope='module')
def mmdet_swin() -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(**SMALL)
    model.init_weights()
    # non-trivial LayerNorm affine and bias tables, so a wrong mapping cannot hide
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'norm' in name or 'relative_position_bias_table' in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    return model


def make_sparsevit(mmdet_swin: SwinTransformer, **kwargs) -> SparseViT:
    model = SparseViT(**SMALL, **kwargs)
    model.load_state_dict(mmdet_swin.state_dict(), strict=True)
    model.eval()
    return model


def random_ratios(depths, rng: random.Random) -> list[list[float]]:
    return [sorted(rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9]) for _ in range(d)) for d in depths]


# -- slow reference: compute every window with mmdet's blocks, then restore the pruned ones ----
def reference_keep_mask(x: torch.Tensor, ratio: float, window_size: int, shift: int) -> torch.Tensor:
    """(B, H, W, C) block input -> (B, H, W) bool, True where the token's window is computed."""
    b, h, w, _ = x.shape
    ws = window_size
    imp = x.abs().mean(-1, keepdim=True)  # (B, H, W, 1)
    pad_b, pad_r = -h % ws, -w % ws
    imp = F.pad(imp, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    if shift:
        imp = torch.roll(imp, (-shift, -shift), dims=(1, 2))
    windows = imp.view(b, hp // ws, ws, wp // ws, ws).permute(0, 1, 3, 2, 4).reshape(b, -1, ws * ws)
    scores = windows.norm(dim=-1)
    n_windows = scores.shape[1]
    k = max(1, int(n_windows * (1 - ratio)))
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(1, scores.topk(k, dim=1).indices, True)
    tokens = keep[:, :, None].expand(-1, -1, ws * ws).reshape(b, hp // ws, wp // ws, ws, ws)
    tokens = tokens.permute(0, 1, 3, 2, 4).reshape(b, hp, wp)
    if shift:
        tokens = torch.roll(tokens, (shift, shift), dims=(1, 2))
    return tokens[:, :h, :w]


def reference_forward(model: SwinTransformer, x: torch.Tensor, ratios: list[list[float]]):
    """mmdet's Swin with SparseViT's selection rule applied by restoring pruned tokens."""
    x, hw = model.patch_embed(x)
    outs = []
    for i, stage in enumerate(model.stages):
        importance_source = None
        for block, ratio in zip(stage.blocks, ratios[i]):
            b = x.shape[0]
            if ratio > 0 and importance_source is None:
                importance_source = x.view(b, *hw, -1).clone()
            y = block(x, hw)
            if ratio > 0:
                keep = reference_keep_mask(importance_source, ratio, block.attn.window_size,
                                           block.attn.shift_size).reshape(b, -1, 1)
                y = torch.where(keep, y, x)
            x = y
        out, out_hw = x, hw
        if stage.downsample:
            x, hw = stage.downsample(x, hw)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(out)
            outs.append(out.view(-1, *out_hw, out.shape[-1]).permute(0, 3, 1, 2))
    return outs


# -- equivalence at ratio 0 -------------------------------------------------------------------
@pytest.mark.parametrize('shape', [(1, 3, 224, 224), (2, 3, 224, 224), (2, 3, 100, 150), (1, 3, 61, 97)])
def test_dense_equals_mmdet_swin(mmdet_swin, shape):
    torch.manual_seed(1)
    x = torch.randn(shape)
    model = make_sparsevit(mmdet_swin)
    with torch.no_grad():
        expected = mmdet_swin(x)
        got = model(x)
    assert len(got) == len(expected) == 4
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_state_dict_round_trip(mmdet_swin):
    model = make_sparsevit(mmdet_swin)
    ours, theirs = model.state_dict(), mmdet_swin.state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k].shape == theirs[k].shape, k
    fresh = SwinTransformer(**SMALL)
    fresh.load_state_dict(ours, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, theirs[k]), k


def test_fresh_model_buffers_match_mmdet(mmdet_swin):
    model = SparseViT(**SMALL)
    for k, v in model.state_dict().items():
        if k.endswith('relative_position_index'):
            assert torch.equal(v, mmdet_swin.state_dict()[k]), k


# -- pruning against the reference -------------------------------------------------------------
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('shape', [(2, 3, 224, 224), (2, 3, 100, 150)])
def test_sparse_matches_slow_reference(mmdet_swin, seed, shape):
    rng = random.Random(seed)
    ratios = random_ratios(SMALL['depths'], rng)
    torch.manual_seed(seed)
    x = torch.randn(shape)
    model = make_sparsevit(mmdet_swin, pruning_ratios=ratios)
    with torch.no_grad():
        expected = reference_forward(mmdet_swin, x, ratios)
        got = model(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_uniform_ratio_changes_output_but_not_shapes(mmdet_swin):
    x = torch.randn(1, 3, 224, 224)
    model = make_sparsevit(mmdet_swin)
    with torch.no_grad():
        dense = model(x)
        model.set_pruning_ratios(0.6)
        sparse = model(x)
    assert [d.shape for d in dense] == [s.shape for s in sparse]
    assert not torch.allclose(dense[-1], sparse[-1])


@pytest.mark.parametrize('shift', [0, 3])
def test_pruned_windows_pass_through_bit_identical(mmdet_swin, shift):
    model = make_sparsevit(mmdet_swin)
    block = model.stages[0].blocks[1 if shift else 0]
    b, h, w, c = 2, 20, 30, SMALL['embed_dims']
    x = torch.randn(b * h * w, c)
    geometry = model.stages[0].geometry(h, w, shift, x.device)
    kept = torch.tensor([[0, 2, 5], [1, 3, 14]])
    with torch.no_grad():
        y = run_block(block, x.clone(), geometry, kept, b)
    computed = torch.zeros(b * h * w, dtype=torch.bool)
    for image, windows in enumerate(kept.tolist()):
        for window in windows:
            rows = geometry.token_index[window]
            computed[rows[rows >= 0] + image * h * w] = True
    assert torch.equal(y[~computed], x[~computed])
    assert not torch.allclose(y[computed], x[computed])


def test_geometry_equals_pad_roll_partition():
    h, w, ws, shift = 11, 16, 7, 3
    grid = torch.arange(h * w, dtype=torch.float32).view(1, h, w, 1) + 1
    padded = torch.roll(F.pad(grid, (0, 0, 0, -w % ws, 0, -h % ws)), (-shift, -shift), dims=(1, 2))
    hp, wp = padded.shape[1:3]
    windows = padded.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    geometry = WindowGeometry(h, w, ws, shift, torch.device('cpu'))
    expected = windows.long() - 1  # padding (0) -> -1, tokens -> their flat index
    assert torch.equal(geometry.token_index, expected)


# -- training ------------------------------------------------------------------------------------
@pytest.mark.parametrize('with_cp', [False, True])
def test_gradients_flow_with_pruning(mmdet_swin, with_cp):
    model = SparseViT(**{**SMALL, 'drop_path_rate': 0.1}, with_cp=with_cp, pruning_ratios=0.5)
    model.load_state_dict(mmdet_swin.state_dict())
    model.train()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 100, 150, requires_grad=True)
    loss = sum(o.square().mean() for o in model(x))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_every_block_computes_a_window_at_high_ratio(mmdet_swin):
    # at 64 x 64 the stages have 9, 4, 1 and 1 windows: int(nW * (1 - 0.9)) == 0 in all of them
    assert num_kept_windows(9, 0.9) == 1
    model = make_sparsevit(mmdet_swin, pruning_ratios=0.9).train()
    sum(o.square().mean() for o in model(torch.randn(1, 3, 64, 64))).backward()
    # DDP without find_unused_parameters needs a gradient for every parameter
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_training_after_inference_mode_forward(mmdet_swin, ratio):
    # search, then fine-tune in one process: the index caches are first built in inference mode
    model = make_sparsevit(mmdet_swin, pruning_ratios=ratio)
    x = torch.randn(2, 3, 100, 150)
    with torch.inference_mode():
        model(x)
    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    assert model.stages[0].blocks[0].attn.w_msa.qkv.weight.grad is not None


def test_window_ranking_is_float32_under_bfloat16_autocast():
    model = SparseViT(**SMALL)
    b, h, w = 2, 64, 176  # BEVDet's stage-0 map: 260 windows per image
    generator = torch.Generator().manual_seed(0)
    for i, stage in enumerate(model.stages):
        # a bf16 activation as the forward sees under autocast; the fp32 reference ranks the same values
        flat = torch.randn(b * h * w, model.num_features[i], generator=generator).bfloat16()
        expected = stage.window_scores(flat.float(), b, h, w)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = stage.window_scores(flat, b, h, w)
        for shift, scores in expected.items():
            assert got[shift].dtype == torch.float32
            k = num_kept_windows(scores.shape[1], 0.5)
            assert torch.equal(top_windows(got[shift], k).sort().values, top_windows(scores, k).sort().values)


def test_with_cp_gives_same_gradients(mmdet_swin):
    grads = []
    for with_cp in (False, True):
        model = make_sparsevit(mmdet_swin, with_cp=with_cp, pruning_ratios=0.4).train()
        x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
        sum(o.sum() for o in model(x)).backward()
        grads.append(model.stages[1].blocks[1].attn.w_msa.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_autocast_bfloat16(mmdet_swin, ratio):
    model = make_sparsevit(mmdet_swin, pruning_ratios=ratio)
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        full = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = model(x)
    for f, h in zip(full, half):
        assert h.shape == f.shape and torch.isfinite(h).all()
        assert (h.float() - f).abs().mean() < 0.1 * f.abs().mean()


def test_train_returns_self_and_freezes(mmdet_swin):
    model = SparseViT(**SMALL, frozen_stages=1)
    assert model.train() is model
    assert not any(p.requires_grad for p in model.stages[0].parameters())
    assert not model.stages[0].training and model.stages[1].training


# -- ratios API --------------------------------------------------------------------------------
def test_ratio_formats_and_property():
    model = SparseViT(**SMALL, pruning_ratios=0.3)
    assert model.pruning_ratios == [[0.3] * d for d in SMALL['depths']]
    ratios = [[0.1, 0.2], [0, 0], [0, 0.1, 0.1, 0.5], [0.2, 0.2]]
    model.set_pruning_ratios(ratios)
    assert model.pruning_ratios == [[float(r) for r in s] for s in ratios]


@pytest.mark.parametrize('ratios, message', [
    ([[0, 0], [0, 0], [0, 0, 0, 0]], '3 stages'),
    ([[0, 0], [0, 0], [0, 0, 0], [0, 0]], 'pruning_ratios[2] has 3 ratios'),
    ([[0, 0], [0, 1.0], [0, 0, 0, 0], [0, 0]], 'stage 1, block 1 is 1.0'),
    ([[0, -0.1], [0, 0], [0, 0, 0, 0], [0, 0]], 'stage 0, block 1 is -0.1'),
    ([[0, 0], [0, 0], [0.2, 0.4, 0.3, 0.5], [0, 0]], 'stage 2, block 2 has 0.3 after 0.4'),
    (1.5, 'stage 0, block 0 is 1.5'),
    ('0.2', 'must be a float or one list per stage'),
])
def test_invalid_ratios_raise(ratios, message):
    model = SparseViT(**SMALL)
    with pytest.raises(ValueError) as err:
        model.set_pruning_ratios(ratios)
    assert message in str(err.value)


def test_search_space_and_group_expansion():
    model = SparseViT(arch='tiny')
    space = model.search_space()
    assert [(s.depth, s.num_groups) for s in space] == [(2, 1), (2, 1), (6, 3), (2, 1)]
    assert [s.embed_dims for s in space] == [96, 192, 384, 768]
    assert space[2].group_blocks == [(0, 1), (2, 3), (4, 5)]
    blocks = expand_group_ratios(space, [[0.1], [0.0], [0.2, 0.3, 0.4], [0.5]])
    assert blocks == [[0.1, 0.1], [0.0, 0.0], [0.2, 0.2, 0.3, 0.3, 0.4, 0.4], [0.5, 0.5]]
    model.set_pruning_ratios(blocks)


def test_arch_shortcut():
    model = SparseViT(arch='small')
    assert model.depths == (2, 2, 18, 2) and model.num_features == [96, 192, 384, 768]
    with pytest.raises(ValueError, match='unknown arch'):
        SparseViT(arch='huge')


def test_explicit_arguments_override_arch():
    # a width-reduced Swin-T: the preset's depths, explicit width and heads
    model = SparseViT(arch='tiny', embed_dims=32, num_heads=(1, 2, 4, 8), out_indices=(2, 3))
    assert model.depths == (2, 2, 6, 2) and model.num_features == [32, 64, 128, 256]
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(6, 3, 128, 352))
    assert [tuple(o.shape) for o in outs] == [(6, 128, 8, 22), (6, 256, 4, 11)]
    assert SparseViT(arch='small', depths=(2, 2, 6, 2)).depths == (2, 2, 6, 2)
    assert SparseViT().num_features == SparseViT(arch='tiny').num_features == [96, 192, 384, 768]


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(pretrain_img_size=(224, 224, 3)), ValueError, 'pretrain_img_size must be an int or 1 or 2 ints'),
    (dict(pretrain_img_size='224'), TypeError, 'pretrain_img_size must be a sequence of ints'),
    (dict(pretrain_img_size=0), ValueError, r'pretrain_img_size\[0\] must be >= 1, got 0'),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')), ValueError,
     'init_cfg and pretrained cannot be specified at the same time'),
    (dict(pretrained=1), TypeError, r'pretrained must be a checkpoint path \(str\) or None, got 1'),
    (dict(init_cfg=[dict(type='Pretrained', checkpoint='a.pth')]), TypeError, 'init_cfg must be a dict or None'),
    (dict(init_cfg=dict(type='Kaiming')), ValueError, r"only init_cfg=None or dict\(type='Pretrained'"),
    (dict(in_channels=0), ValueError, 'in_channels must be >= 1, got 0'),
    (dict(embed_dims=0), ValueError, 'embed_dims must be >= 1, got 0'),
    (dict(embed_dims=24.0), TypeError, 'embed_dims must be an int, got 24.0'),
    (dict(embed_dims=25), ValueError, r'stage 2 has 100 channels .* not divisible by num_heads\[2\]=3'),
    (dict(num_heads=(1, 2, 3, 5)), ValueError, r'not divisible by num_heads\[3\]=5'),
    (dict(num_heads=(1, 2, 3)), ValueError, 'must have one entry per stage'),
    (dict(strides=(4, 2, 2)), ValueError, 'must have one entry per stage'),
    (dict(depths=(2, 0, 4, 2)), ValueError, r'depths\[1\] must be >= 1, got 0'),
    (dict(depths=2), TypeError, 'depths must be a sequence of ints, got 2'),
    (dict(patch_size=0), ValueError, 'patch_size must be >= 1, got 0'),
    (dict(patch_size=2), ValueError, r'strides\[0\]=4 must equal patch_size=2'),
    (dict(strides=(4, 3, 2, 2)), NotImplementedError, 'only 2 is supported'),
    (dict(window_size=0), ValueError, 'window_size must be >= 1, got 0'),
    (dict(mlp_ratio=0), ValueError, r'mlp_ratio must be in \(0, inf\), got 0'),
    (dict(mlp_ratio='4'), TypeError, 'mlp_ratio must be a number'),
    (dict(qk_scale=-1.0), ValueError, r'qk_scale must be in \(0, inf\), got -1.0'),
    (dict(drop_rate=1.0), ValueError, r'drop_rate must be in \[0, 1\), got 1.0'),
    (dict(attn_drop_rate=-0.1), ValueError, r'attn_drop_rate must be in \[0, 1\), got -0.1'),
    (dict(drop_path_rate=float('nan')), ValueError, r'drop_path_rate must be in \[0, 1\), got nan'),
    (dict(out_indices=(0, 4)), ValueError, r'out_indices \(0, 4\) must be distinct stage indices in 0..3'),
    (dict(out_indices=(1, 1)), ValueError, r'out_indices \(1, 1\) must be distinct'),
    (dict(out_indices=(-1,)), ValueError, r'out_indices\[0\] must be >= 0, got -1'),
    (dict(out_indices=3), TypeError, 'out_indices must be a sequence of ints, got 3'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages must be in \[-1, 4\] \(-1: none frozen\), got 5'),
    (dict(frozen_stages=-2), ValueError, 'frozen_stages must be >= -1, got -2'),
    (dict(norm_cfg=dict(eps=1e-6)), TypeError, "norm_cfg must be a dict with a 'type' key"),
    (dict(act_cfg='GELU'), TypeError, "act_cfg must be a dict with a 'type' key, got 'GELU'"),
])
def test_invalid_constructor_arguments_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        SparseViT(**{**SMALL, **kwargs})


@pytest.mark.parametrize('kwargs', [
    dict(pretrain_img_size=(224,), use_abs_pos_embed=True),
    dict(pretrain_img_size=(224, 160), use_abs_pos_embed=True),
    dict(pretrained='swin.pth'),
    dict(out_indices=[3, 0], frozen_stages=4),
    dict(qk_scale=0.2, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.3),
    dict(norm_cfg=dict(type='LN', eps=1e-6), act_cfg=dict(type='ReLU')),
])
@pytest.mark.filterwarnings('ignore:DeprecationWarning. pretrained is deprecated')
def test_constructor_accepts_what_mmdet_accepts(kwargs):
    SwinTransformer(**{**SMALL, **kwargs})
    SparseViT(**{**SMALL, **kwargs})


# -- registries and checkpoints -----------------------------------------------------------------
@pytest.mark.parametrize('registry', ['mmdet3d', 'mmdet', 'mmseg'])
def test_registered_in_all_three(registry):
    import importlib

    models = importlib.import_module(f'{registry}.registry').MODELS
    model = models.build(dict(type='SparseViT', **SMALL, pruning_ratios=0.2))
    assert isinstance(model, SparseViT)


def _to_official(state_dict: dict) -> dict:
    """Inverse of convert_official_swin, written independently for the test."""
    inverse = [0, 2, 1, 3]  # the permutation is its own inverse
    out = {}
    for k, v in state_dict.items():
        if k.endswith('relative_position_index'):
            continue
        nk = k.replace('stages.', 'layers.', 1).replace('attn.w_msa.', 'attn.')
        nk = nk.replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
        nk = nk.replace('patch_embed.projection.', 'patch_embed.proj.')
        if 'downsample.reduction' in k:
            o, i = v.shape
            v = v.reshape(o, i // 4, 4)[:, :, inverse].transpose(1, 2).reshape(o, i)
        elif 'downsample.norm' in k:
            v = v.reshape(-1, 4)[:, inverse].transpose(0, 1).reshape(-1)
        out[nk] = v
    out['head.weight'] = torch.zeros(10, 4)
    return out


def test_official_and_timm_converters(mmdet_swin):
    ours = {k: v for k, v in mmdet_swin.state_dict().items() if not k.endswith('relative_position_index')}
    official = _to_official(ours)
    converted = convert_official_swin(official)
    assert set(converted) == set(ours)
    for k in ours:
        assert torch.equal(converted[k], ours[k]), k
    timm = {}
    for k, v in official.items():
        if '.downsample.' in k:
            i = int(k.split('.')[1])
            k = k.replace(f'layers.{i}.', f'layers.{i + 1}.', 1)
        timm[k] = v
    converted = convert_timm_swin(timm)
    for k in ours:
        assert torch.equal(converted[k], ours[k]), k


def test_pretrained_init_cfg_loads_and_reports(mmdet_swin, tmp_path, caplog):
    official = _to_official(mmdet_swin.state_dict())
    official['norm.weight'] = torch.ones(192)
    path = tmp_path / 'swin_official.pth'
    torch.save({'model': official}, path)
    model = SparseViT(**SMALL, convert_weights=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for k, v in mmdet_swin.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    mmdet_ckpt = tmp_path / 'mmdet_format.pth'
    partial = {f'backbone.{k}': v for k, v in mmdet_swin.state_dict().items() if not k.startswith('norm3')}
    torch.save({'state_dict': partial}, mmdet_ckpt)
    from projects.sparsevit_bevdet.backbones import load_pretrained_swin

    missing, unexpected = load_pretrained_swin(SparseViT(**SMALL), str(mmdet_ckpt))
    assert missing == ['norm3.weight', 'norm3.bias'] and unexpected == []


def test_convert_cli_writes_loadable_checkpoint(mmdet_swin, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'model': _to_official(mmdet_swin.state_dict())}, src)
    subprocess.run([sys.executable, str(root / 'tools/convert_swin_weights.py'), str(src), str(dst),
                    '--format', 'official'], check=True, cwd=tmp_path, capture_output=True)
    model = SparseViT(**SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for k, v in mmdet_swin.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    bad = subprocess.run([sys.executable, str(root / 'tools/convert_swin_weights.py'), str(tmp_path / 'nope.pth'),
                          str(dst), '--format', 'timm'], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and 'nope.pth does not exist' in bad.stderr


def test_keep_mask_matches_what_the_first_block_computes(mmdet_swin):
    from projects.sparsevit_bevdet.backbones.visualize import first_stage_keep_mask

    model = make_sparsevit(mmdet_swin)
    images = torch.randn(2, 3, 96, 136)
    assert first_stage_keep_mask(model, images, 0.0).all()
    mask = first_stage_keep_mask(model, images, 0.5)
    assert mask.shape == (2, 96, 136)
    # the first block of stage 0 at ratio 0.5 changes exactly the tokens under the mask
    model.set_pruning_ratios([[0.5, 0.5], [0, 0], [0] * 4, [0, 0]])
    with torch.no_grad():
        x = model.patch_embed(images)
        b, h, w, c = x.shape
        stage = model.stages[0]
        before = x.reshape(-1, c).clone()
        geometry = stage.geometry(h, w, 0, x.device)
        kept = top_windows(stage.window_scores(before, b, h, w)[0], num_kept_windows(geometry.num_windows, 0.5))
        after = run_block(stage.blocks[0], before.clone(), geometry, kept, b)
    changed = (after != before).any(-1).view(b, h, w)
    assert torch.equal(changed, mask[:, ::4, ::4])


def test_mac_count():
    from projects.sparsevit_bevdet.backbones.complexity import sparsevit_macs

    model = SparseViT(**SMALL)
    # an input that is a window multiple at every stage has no padding: both layouts agree
    assert sparsevit_macs(model, (1, 3, 224, 224)) == sparsevit_macs(model, (1, 3, 224, 224), swin_layout=True)
    # with padding SparseViT's dense path computes less than Swin's
    assert sparsevit_macs(model, (1, 3, 256, 704)) < sparsevit_macs(model, (1, 3, 256, 704), swin_layout=True)
    counts = []
    for r in (0.0, 0.3, 0.6, 0.9):
        model.set_pruning_ratios(r)
        counts.append(sparsevit_macs(model, (2, 3, 256, 704)))
    assert counts == sorted(counts, reverse=True) and counts[-1] < 0.3 * counts[0]


def test_geometry_cache_is_bounded(mmdet_swin):
    from projects.sparsevit_bevdet.backbones.sparsevit import GEOMETRY_CACHE_SIZE

    model = make_sparsevit(mmdet_swin)
    with torch.no_grad():
        for i in range(GEOMETRY_CACHE_SIZE):
            model(torch.randn(1, 3, 32 + 4 * i, 48))
    assert all(len(stage._geometries) <= GEOMETRY_CACHE_SIZE for stage in model.stages)
