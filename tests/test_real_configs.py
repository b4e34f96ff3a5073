"""The real-nuScenes BEVDet configs (configs/bevdet/*_nuscenes-256x704.py, *_nuscenes-mini-256x704.py): each
one loads and builds its detector without any data or weights, follows the data it names (version, devkit split,
info files), carries BEVDet's recipe (CBGS, EMA, 8 x 8 batch, Scale-NMS head); the searched template refuses to
run without ratios; and the dense mmdet Swin-T detector and the SparseViT one at ratio 0 give the same outputs
for the same weights (at a small input size and BEV grid set through cfg-options, to keep it fast)."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet3d.registry import HOOKS, MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin)
from projects.sparsevit_bevdet.utils.searched_ratios import apply_pruning_ratios

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'bevdet'
REAL = sorted(p.name for p in CONFIGS.glob('*_nuscenes-256x704.py')) + \
    sorted(p.name for p in CONFIGS.glob('*_nuscenes-mini-256x704.py'))
DENSE = 'bevdet_swin-t_8xb8-cbgs-24e_nuscenes-256x704.py'
SPARSE = 'bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py'
SEARCHED_RATIOS = [[0.3, 0.3], [0.0, 0.0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0.0, 0.4]]


def load(name: str, searched: bool = True) -> Config:
    cfg = Config.fromfile(CONFIGS / name)
    if searched and cfg.model.img_backbone.get('pruning_ratios') == 'searched':
        cfg.model.img_backbone.pruning_ratios = SEARCHED_RATIOS
    return cfg


def test_every_real_config_is_found():
    assert len(REAL) == 8  # dense Swin-T, SparseViT, adaptation, searched; trainval and mini each
    assert DENSE in REAL and SPARSE in REAL


@pytest.mark.parametrize('name', REAL)
def test_config_builds_and_follows_its_data(name):
    cfg = load(name)
    mini = '_nuscenes-mini-' in name
    train = cfg.train_dataloader
    assert train.dataset.type == 'CBGSDataset' and train.batch_size == 8
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=64)
    datasets = [train.dataset.dataset, cfg.val_dataloader.dataset, cfg.test_dataloader.dataset]
    version, split, prefix = ('v1.0-mini', 'mini_val', 'nuscenes-mini') if mini else ('v1.0-trainval', 'val',
                                                                                        'nuscenes')
    for ds in datasets:
        assert ds.data_root == 'data/nuscenes/' and ds.metainfo['version'] == version
        assert ds.metainfo['classes'] == list(cfg.model.class_names)
    assert datasets[0].ann_file == f'{prefix}_infos_train.pkl' and datasets[1].ann_file == f'{prefix}_infos_val.pkl'
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.eval_set == split and evaluator.ann_file == f'data/nuscenes/{prefix}_infos_val.pkl'
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    assert ('SparsityAdaptationHook' in hooks) == ('-adapt_' in name)
    assert ('EMAHook' in hooks) == ('-adapt_' not in name)  # the search evaluates the adapted weights as trained
    assert cfg.train_cfg.max_epochs == (24 if '-24e_' in name else 12)
    if cfg.load_from is not None:
        assert ('-mini-' in cfg.load_from) == mini  # the adaptation / fine-tuning chain stays on its own data
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'BEVDet'
    assert type(model.pts_bbox_head).__name__ == 'BEVDetCenterHead'
    assert model.pts_bbox_head.test_cfg['nms_rescale_factor'] == [1.0, [0.7, 0.7], [0.4, 0.55], 1.1, [1.0, 1.0],
                                                                  [4.5, 9.0]]
    expected_backbone = 'SwinTransformer' if 'swin-t' in name else 'SparseViT'
    assert type(model.img_backbone).__name__ == expected_backbone
    if expected_backbone == 'SparseViT':
        ratios = {r for stage in model.img_backbone.pruning_ratios for r in stage}
        assert ratios == ({r for s in SEARCHED_RATIOS for r in s} if '-searched_' in name else {0.0})


def test_ema_hook_builds_bevdets_ema_in_the_mmdet3d_scope():
    cfg = load(SPARSE)
    model = nn.Linear(2, 2)
    hook_cfg = copy.deepcopy(cfg.custom_hooks[0])
    assert hook_cfg.pop('priority') == 49  # the Runner takes the priority off before building the hook
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        hook = HOOKS.build(hook_cfg)
        hook.before_run(type('Runner', (), {'model': model})())
    ema = hook.ema_model
    assert type(ema).__name__ == 'ExpMomentumEMA' and ema.momentum == 0.001 and ema.gamma == 2000
    # BEVDet's decay after t updates: 0.999 * (1 - exp(-t / 2000)); mmengine's EMA lerps by 1 - decay
    steps = 500
    momentum = (1 - ema.momentum) * math.exp(-float(1 + steps) / ema.gamma) + ema.momentum
    assert 1 - momentum == pytest.approx(0.999 * (1 - math.exp(-(steps + 1) / 2000)))


def test_searched_template_needs_ratios(tmp_path):
    name = 'bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py'
    cfg = load(name, searched=False)
    with pytest.raises(ValueError, match=re.escape('--pruning-ratios work_dirs/<search>/best.json')):
        apply_pruning_ratios(cfg, None)
    best = tmp_path / 'best.json'
    best.write_text(json.dumps(dict(pruning_ratios=SEARCHED_RATIOS, latency_ms=1.0)))
    apply_pruning_ratios(cfg, str(best))
    assert cfg.model.img_backbone.pruning_ratios == SEARCHED_RATIOS
    apply_pruning_ratios(cfg, '0.5')
    assert cfg.model.img_backbone.pruning_ratios == 0.5
    with pytest.raises(ValueError, match='needs a SparseViT image backbone'):
        apply_pruning_ratios(load(DENSE), '0.5')


# -- dense Swin-T vs SparseViT at ratio 0 -------------------------------------------------------------------
IMG_H, IMG_W, CAMS = 64, 176, 6
CELL = 3.2  # 32 x 32 BEV cells over +-51.2 m instead of 128 x 128
SMALL = {
    'model.img_view_transformer.input_size': (IMG_H, IMG_W),
    'model.img_view_transformer.grid_config.x': [-51.2, 51.2, CELL],
    'model.img_view_transformer.grid_config.y': [-51.2, 51.2, CELL],
    'model.pts_bbox_head.bbox_coder.out_size_factor': 32,  # 0.1 m voxels x 32 = 3.2 m cells
    'model.train_cfg.pts.out_size_factor': 32,
    'model.test_cfg.pts.out_size_factor': 32,
    # an untrained head scores every cell near 0.5: keep the boxes the CPU rotated NMS sees few
    'model.pts_bbox_head.bbox_coder.max_num': 100,
    'model.test_cfg.pts.pre_max_size': 100,
}


def small_detector(name: str) -> nn.Module:
    cfg = load(name)
    cfg.merge_from_dict(SMALL)
    cfg.model.img_backbone.init_cfg = None  # no ImageNet file here; the weights are copied below
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return MODELS.build(cfg.model).eval()


def rig_sample() -> Det3DDataSample:
    """Six level cameras around the ego (x forward, y left), pinhole intrinsics for a 64 x 176 image."""
    cam2ego = []
    for yaw in (0.0, -55.0, 55.0, 180.0, 110.0, -110.0):
        a = math.radians(yaw)
        ahead, right = np.array([math.cos(a), math.sin(a), 0.0]), np.array([math.sin(a), -math.cos(a), 0.0])
        mat = np.eye(4)
        mat[:3, :3] = np.stack([right, [0.0, 0.0, -1.0], ahead], axis=1)
        mat[:3, 3] = (1.0, 0.0, 1.6)
        cam2ego.append(mat)
    focal = 140.0
    cam2img = np.array([[focal, 0, IMG_W / 2, 0], [0, focal, IMG_H / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    meta = dict(cam2img=np.stack([cam2img] * CAMS), cam2ego=np.stack(cam2ego), img_aug_matrix=np.stack([np.eye(4)] *
                CAMS), box_type_3d=LiDARInstance3DBoxes, sample_idx=0)
    return Det3DDataSample(metainfo={k: v.astype(np.float32) if isinstance(v, np.ndarray) else v
                                     for k, v in meta.items()})


def test_dense_swin_and_sparsevit_at_ratio_0_give_the_same_outputs():
    torch.manual_seed(0)
    dense, sparse = small_detector(DENSE), small_detector(SPARSE)
    assert type(dense.img_backbone).__name__ == 'SwinTransformer'
    missing, unexpected = sparse.load_state_dict(dense.state_dict(), strict=True)  # the same parameter names
    assert not missing and not unexpected
    images = torch.rand(1, CAMS, 3, IMG_H, IMG_W, generator=torch.Generator().manual_seed(1)) * 255
    samples = [rig_sample()]
    with torch.no_grad():
        inputs = dense.data_preprocessor(dict(inputs=dict(img=list(images)), data_samples=samples), False)
        feats = [m.extract_img_feat(inputs['inputs']['imgs']) for m in (dense, sparse)]
        outs = [m._forward(inputs['inputs'], inputs['data_samples']) for m in (dense, sparse)]
        preds = [m.predict(inputs['inputs'], copy.deepcopy(inputs['data_samples'])) for m in (dense, sparse)]
    torch.testing.assert_close(feats[1], feats[0], rtol=1e-4, atol=1e-4)
    assert len(outs[0]) == len(outs[1]) == 6
    for task_dense, task_sparse in zip(outs[0], outs[1]):
        for key, value in task_dense[0].items():
            torch.testing.assert_close(task_sparse[0][key], value, rtol=1e-4, atol=1e-4, msg=key)
    # after NMS only a smoke check: near-equal scores of an untrained head may rank differently by 1e-6
    for pred in preds:
        assert len(pred[0].pred_instances_3d.scores_3d) > 0
