"""DynamicTokenSwin (DynamicViT-style token pruning) against mmdet's Swin, its own training path, and in BEVDet."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from mmdet.models.backbones import SwinTransformer

from projects.sparsevit_bevdet.backbones import DynamicTokenSwin, SparseViT
from projects.sparsevit_bevdet.backbones.token_pruning import (
    TokenPruningBlock,
    TokenSelection,
    masked_window_attention,
    num_kept_tokens,
)
from tests.test_bevdet_model import build, model_cfg, synthetic_batch
from tests.test_sparsevit import _to_official

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
SMALL = dict(embed_dims=24, depths=(2, 2, 4, 2), num_heads=(1, 2, 3, 4), window_size=7, drop_path_rate=0.0)
# stage 2 (two groups) pruned progressively, stage 0 pruned once
RATIOS = [[0.5, 0.5], [0.0, 0.0], [0.3, 0.3, 0.6, 0.6], [0.0, 0.0]]


@pytest.fixture(scope='module')
def mmdet_swin() -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(**SMALL)
    model.init_weights()
    with torch.no_grad():  # non-trivial norms and bias tables, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if 'norm' in name or 'relative_position_bias_table' in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()  # mmdet's Swin.train returns None
    return model


def make_model(mmdet_swin: SwinTransformer, **kwargs) -> DynamicTokenSwin:
    torch.manual_seed(1)
    model = DynamicTokenSwin(**SMALL, **kwargs)
    model.init_weights()
    result = model.load_state_dict(mmdet_swin.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all('.predictors.' in k for k in result.missing_keys)
    return model.eval()


def recorded_block_calls(model: DynamicTokenSwin) -> tuple[list, list]:
    """Hooks recording ``(block, input, selection, output)`` of every block call; returns (records, handles).
    The input is copied before the call (inference writes the kept rows in place)."""
    records, handles = [], []
    for stage in model.stages:
        for block in stage.blocks:
            def before(module, args, block=block):
                records.append([block, args[0].clone(), args[1]])

            def after(module, args, output):
                records[-1].append(output.clone())
            handles += [block.register_forward_pre_hook(before), block.register_forward_hook(after)]
    return records, handles


@pytest.mark.parametrize('shape', [(2, 3, 100, 150), (1, 3, 61, 97)])
def test_ratio_zero_equals_mmdet_swin(mmdet_swin, shape):
    model = make_model(mmdet_swin)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = mmdet_swin(x), model(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_swin_checkpoints_load_and_predictors_are_initialised(mmdet_swin, tmp_path):
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = mmdet_swin(x)
    mmdet_ckpt, official_ckpt = tmp_path / 'mmdet.pth', tmp_path / 'official.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in mmdet_swin.state_dict().items()}}, mmdet_ckpt)
    torch.save({'model': _to_official(mmdet_swin.state_dict())}, official_ckpt)
    for path, convert in ((mmdet_ckpt, False), (official_ckpt, True)):
        torch.manual_seed(0)
        model = DynamicTokenSwin(**SMALL, convert_weights=convert,
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        model.eval()
        with torch.no_grad():
            for e, g in zip(expected, model(x)):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
        predictors = [p for stage in model.stages for p in stage.predictors]
        assert len(predictors) == 1 + 1 + 2 + 1  # one per W-MSA / SW-MSA group
        for predictor in predictors:
            assert torch.equal(predictor.norm.weight, torch.ones_like(predictor.norm.weight))
            weight = predictor.in_proj[0].weight
            assert 0 < weight.std() < 0.05 and torch.equal(predictor.in_proj[0].bias, torch.zeros_like(weight[:, 0]))
        model.set_pruning_ratios(RATIOS)
        with torch.no_grad():
            assert all(torch.isfinite(o).all() for o in model(x))


def test_pruned_tokens_pass_through_and_kept_sets_nest(mmdet_swin):
    model = make_model(mmdet_swin, pruning_ratios=RATIOS)
    x = torch.randn(2, 3, 100, 150, generator=torch.Generator().manual_seed(4))
    records, handles = recorded_block_calls(model)
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    stage_of = {id(b): i for i, stage in enumerate(model.stages) for b in stage.blocks}
    kept_by_stage: dict[int, list[set]] = {}
    for block, inp, selection, out in records:
        stage = stage_of[id(block)]
        ratio = model.pruning_ratios[stage][list(model.stages[stage].blocks).index(block)]
        if not isinstance(selection, TokenSelection):
            assert ratio == 0.0
            continue
        rows = selection.rows
        num_tokens = inp.shape[0] // 2
        assert rows.numel() == 2 * num_kept_tokens(num_tokens, ratio) and rows.unique().numel() == rows.numel()
        pruned = torch.ones(inp.shape[0], dtype=torch.bool)
        pruned[rows] = False
        assert torch.equal(out[pruned], inp[pruned])  # bit-identical pass-through
        assert (out[rows] != inp[rows]).any(dim=1).all()  # every kept token was updated
        kept_by_stage.setdefault(stage, []).append(set(rows.tolist()))
    assert sorted(kept_by_stage) == [0, 2]
    later, earlier = kept_by_stage[2][-1], kept_by_stage[2][0]
    assert later < earlier  # the second group chooses among the first group's tokens


@pytest.mark.parametrize('shift', [False, True])
def test_kept_token_path_equals_the_masked_training_path(shift):
    """Inference (gathered rows, masked keys in the fused attention) and training (every token, multiplicative
    gate, updates times the mask) compute the same kept tokens for the same hard mask; with every token kept
    the training path is the dense block."""
    torch.manual_seed(5)
    block = TokenPruningBlock(16, 2, 64, window_size=7, shift=shift).eval()
    with torch.no_grad():
        block.attn.w_msa.relative_position_bias_table.normal_(std=0.5)
    model = SparseViT(embed_dims=16, depths=(2,), num_heads=(2,), strides=(4,), out_indices=(0,))
    geometry = model.stages[0].geometry(12, 17, block.shift_size, torch.device('cpu'))  # padded windows
    b, hw = 2, 12 * 17
    x = torch.randn(b * hw, 16)
    rows = torch.cat([torch.randperm(hw)[:90] + i * hw for i in range(b)])
    keep = torch.zeros(b * hw, 1)
    keep[rows] = 1.0
    with torch.no_grad():
        kept = block(x.clone(), TokenSelection(geometry, b, rows=rows))
        masked = block._forward_masked(x, TokenSelection(geometry, b, keep=keep))
        torch.testing.assert_close(kept, masked, rtol=0, atol=1e-5)
        dense = block(x, geometry.dense_selection(b, x.dtype))
        everything = block._forward_masked(x, TokenSelection(geometry, b, keep=torch.ones(b * hw, 1)))
        torch.testing.assert_close(everything, dense, rtol=0, atol=1e-5)


def test_gated_attention_reduces_to_attention_over_kept_keys():
    torch.manual_seed(6)
    model = SparseViT(embed_dims=16, depths=(1,), num_heads=(2,), strides=(4,), out_indices=(0,))
    w_msa = model.stages[0].blocks[0].attn.w_msa
    qkv = torch.randn(3, 49, 48)
    keep = (torch.rand(3, 49) > 0.5).float()
    got = masked_window_attention(w_msa, qkv, None, keep).view(3, 49, 2, 8)
    q, k, v = qkv.view(3, 49, 3, 2, 8).unbind(2)
    bias = w_msa.relative_position_bias()
    for w in range(3):
        for i in range(49):
            keys = (keep[w] > 0) | (torch.arange(49) == i)
            logits = torch.einsum('hd,khd->hk', q[w, i], k[w, keys]) * w_msa.scale + bias[:, i, keys]
            expected = torch.einsum('hk,khd->hd', logits.softmax(-1), v[w, keys])
            torch.testing.assert_close(got[w, i], expected, rtol=0, atol=1e-5)


def test_gated_attention_is_finite_when_a_gated_out_key_dominates():
    """A pruned key scoring far above every key its query sees (trained weights do) must not overflow exp: the
    COCO ablation's token fine-tune was NaN from its first iteration when it did."""
    torch.manual_seed(9)
    model = SparseViT(embed_dims=16, depths=(1,), num_heads=(2,), strides=(4,), out_indices=(0,))
    w_msa = model.stages[0].blocks[0].attn.w_msa
    qkv = torch.randn(2, 49, 48)
    qkv[:, :, :16] = 1.0  # every query the same
    qkv[:, 5, 16:32] = 400.0  # key 5's logit is about 400 * scale * 8 above the others
    keep = torch.ones(2, 49)
    keep[:, 5] = 0.0
    keep.requires_grad_(True)
    qkv.requires_grad_(True)
    got = masked_window_attention(w_msa, qkv, None, keep)
    got.square().sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(keep.grad).all() and torch.isfinite(qkv.grad).all()
    # the forward is attention over the kept keys: key 5 is invisible to every query but itself
    moderate = qkv.detach().clone()
    moderate[:, 5, 16:32] = 0.0
    reference = masked_window_attention(w_msa, moderate, None, keep.detach())
    rows = torch.arange(49) != 5
    torch.testing.assert_close(got.detach().view(2, 49, 16)[:, rows], reference.view(2, 49, 16)[:, rows],
                               rtol=0, atol=1e-5)


def test_training_gradients_reach_the_predictors(mmdet_swin):
    model = make_model(mmdet_swin, pruning_ratios=RATIOS).train()
    torch.manual_seed(7)
    outs = model(torch.randn(2, 3, 64, 96))
    sum(o.square().mean() for o in outs).backward()  # the task loss alone, no keep-ratio loss
    for i in (0, 2):
        for predictor in model.stages[i].predictors:
            grads = [p.grad for p in predictor.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert sum(g.abs().sum() for g in grads) > 0
    # unpruned stages compute no scores
    assert all(p.grad is None for p in model.stages[1].predictors.parameters())


def test_keep_ratio_loss_is_dynamicvits_and_returned_once(mmdet_swin):
    model = make_model(mmdet_swin, pruning_ratios=RATIOS, keep_ratio_loss_weight=3.0).train()
    torch.manual_seed(8)
    model(torch.randn(2, 3, 64, 96))
    records = [record for stage in model.stages for record in stage.keep_records]
    assert [target for _, target in records] == pytest.approx([0.5, 0.7, 0.4])
    for keep, _ in records:
        assert keep.shape[0] == 2 and set(keep.unique().tolist()) <= {0.0, 1.0}
    # progressive: the second location of stage 2 keeps a subset of the first's tokens
    assert (records[2][0] <= records[1][0]).all()
    expected = 3.0 * torch.stack([((keep.mean(1) - target) ** 2).mean() for keep, target in records]).mean()
    losses = model.auxiliary_losses()
    assert set(losses) == {'loss_keep_ratio'} and losses['loss_keep_ratio'].requires_grad
    torch.testing.assert_close(losses['loss_keep_ratio'], expected)
    assert model.auxiliary_losses() == {}
    model.set_pruning_ratios(0.0)
    model(torch.randn(1, 3, 64, 96))
    assert model.auxiliary_losses() == {}


def test_ratio_api_is_sparsevits_with_one_ratio_per_group(mmdet_swin):
    model = make_model(mmdet_swin)
    assert model.search_space() == SparseViT(**SMALL).search_space()
    model.set_pruning_ratios(0.4)
    assert model.pruning_ratios == [[0.4] * d for d in SMALL['depths']]
    with pytest.raises(ValueError, match=r'blocks \(0, 1\) of stage 2 need one ratio'):
        model.set_pruning_ratios([[0, 0], [0, 0], [0.1, 0.2, 0.2, 0.2], [0, 0]])
    with pytest.raises(ValueError, match='non-decreasing'):
        model.set_pruning_ratios([[0, 0], [0, 0], [0.4, 0.4, 0.2, 0.2], [0, 0]])
    with pytest.raises(ValueError, match='gumbel_tau'):
        DynamicTokenSwin(**SMALL, gumbel_tau=0.0)


@pytest.mark.parametrize('registry', ['mmdet3d', 'mmdet', 'mmseg'])
def test_registered_in_all_three(registry):
    models = importlib.import_module(f'{registry}.registry').MODELS
    model = models.build(dict(type='DynamicTokenSwin', **SMALL, pruning_ratios=0.2, predictor_hidden_ratio=0.25))
    assert isinstance(model, DynamicTokenSwin)
    assert model.stages[0].predictors[0].in_proj[0].out_features == 6


def test_bevdet_loss_dict_carries_the_keep_ratio_loss():
    cfg = model_cfg()
    cfg['img_backbone'] = dict(cfg['img_backbone'], type='DynamicTokenSwin',
                               pruning_ratios=[[0, 0], [0, 0], [0.5, 0.5], [0, 0]])
    torch.manual_seed(0)
    model = build(cfg)
    model.init_weights()
    model.train()
    losses = model(**model.data_preprocessor(synthetic_batch(batch_size=1), training=True), mode='loss')
    assert 'loss_keep_ratio' in losses and losses['loss_keep_ratio'] >= 0
    total, log_vars = model.parse_losses(losses)
    assert 'loss_keep_ratio' in log_vars
    total.backward()
    predictor = model.img_backbone.stages[2].predictors[0]
    assert predictor.head[-1].weight.grad.abs().sum() > 0


def test_bevdet_demo_config_builds_dynamic_token_swin():
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(CONFIGS / 'bevdet' / 'bevdet_dynamic-token-swin-t_nuscenes-synth_cpu-demo_pretrained.py')
    base = Config.fromfile(CONFIGS / 'bevdet' / 'bevdet_sparsevit-t_nuscenes-synth_cpu-demo_pretrained.py')
    ours, theirs = dict(cfg.model.img_backbone), dict(base.model.img_backbone)
    assert {k for k in ours if ours[k] != theirs.get(k)} == {
        'type', 'pruning_ratios', 'predictor_hidden_ratio', 'gumbel_tau', 'keep_ratio_loss_weight'}
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
    assert isinstance(model.image_encoder, DynamicTokenSwin)
    assert model.image_encoder.pruning_ratios == [list(r) for r in ours['pruning_ratios']]


def test_coco_config_mask_rcnn_loss_carries_the_keep_ratio_loss():
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(CONFIGS / 'coco' / 'mask-rcnn_dynamic-token-swin-t_fpn_synth-coco.py')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'AuxLossMaskRCNN' and isinstance(model.backbone, DynamicTokenSwin)
    batch = demo_mm_inputs(batch_size=1, image_shapes=[(3, 96, 128)], num_items=[2],
                           num_classes=cfg.model.roi_head.bbox_head.num_classes, with_mask=True)
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert {'loss_keep_ratio', 'loss_cls', 'loss_mask'} <= set(losses)
