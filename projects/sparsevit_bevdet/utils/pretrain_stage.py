"""The demo's encoder pretraining: SparseViT at the CPU recipe's width trained inside Mask R-CNN on the embedded
synthetic COCO, so that BEVDet starts from a pretrained encoder as real BEVDet starts from ImageNet Swin weights.

The detector's checkpoint is then given to BEVDet exactly as a user gives Swin weights:
``img_backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=...))``; SparseViT's loader keeps the
checkpoint's ``backbone.*`` tensors (``backbones/weight_converters.extract_state_dict``). The COCO recipe and
the BEVDet CPU recipe share the encoder's layout (Swin-T depths 2-2-6-2, width 32, heads 1-2-4-8, window 7);
:func:`check_same_encoder` refuses configs where they differ, before any training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from mmengine.config import Config

PRETRAIN_CONFIG = Path(__file__).resolve().parents[3] / 'configs' / 'coco' / 'mask-rcnn_sparsevit-t_fpn_synth-coco.py'
# The encoder settings both configs must agree on for the weights to load one-to-one.
_ENCODER_KEYS = ('embed_dims', 'depths', 'num_heads', 'window_size', 'patch_size', 'mlp_ratio')
# The SparseViT defaults of the 'tiny' layout, for keys a config leaves to the architecture.
_TINY = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, patch_size=4, mlp_ratio=4)


def _encoder(backbone: Dict[str, Any]) -> Dict[str, Any]:
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in ((k, backbone.get(k, _TINY[k])) for k in _ENCODER_KEYS)}


def check_same_encoder(pretrain_cfg: Config, bevdet_cfg: Config) -> None:
    """Raise ``ValueError`` naming the settings where the two configs' SparseViT encoders differ."""
    a, b = _encoder(pretrain_cfg.model.backbone), _encoder(bevdet_cfg.model.img_backbone)
    diff = {k: (a[k], b[k]) for k in _ENCODER_KEYS if a[k] != b[k]}
    if diff:
        raise ValueError(f'the pretraining encoder ({PRETRAIN_CONFIG.name}) and BEVDet\'s differ in '
                         + ', '.join(f'{k}: {x} vs {y}' for k, (x, y) in diff.items())
                         + '; the checkpoint would not load one-to-one')


def ensure_synthetic_coco(root: Path, quick: bool) -> str:
    """Generate the synthetic COCO set under ``root`` unless its summary records the wanted sizes; returns that
    summary as text (the fingerprint the pretraining depends on)."""
    from ..synthetic.coco import SyntheticCocoConfig, generate_synthetic_coco
    from .atomic_io import atomic_write_json

    sizes = dict(num_train=8, num_val=4, image_size=(64, 64)) if quick else {}
    cfg = SyntheticCocoConfig(out_dir=root, overwrite=True, **sizes)
    wanted = dict(seed=cfg.seed, num_train=cfg.num_train, num_val=cfg.num_val, image_size=list(cfg.image_size))
    record = root / 'demo_pretrain_data.json'
    if record.is_file() and json.loads(record.read_text()) == wanted and \
            (root / 'annotations' / 'instances_val2017.json').is_file():
        print(f'{root}: synthetic COCO exists, reusing it')
    else:
        summary = generate_synthetic_coco(cfg, show_progress=True)
        print(f"\nsynthetic COCO: {summary['train']['images']} train / {summary['val']['images']} val images")
        atomic_write_json(record, wanted, indent=1)
    return record.read_text()


def pretrain_config(data_root: Path, work_dir: Path, quick: bool, max_iters: int) -> Config:
    """The synthetic-COCO Mask R-CNN recipe reading ``data_root``; ``max_iters`` iterations, no validation (the
    encoder is what the demo keeps); with ``quick`` 2 iterations on 64 x 64 images."""
    cfg = Config.fromfile(str(PRETRAIN_CONFIG))
    root = str(data_root).rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val2017.json'
    if quick:
        max_iters = 2
        for step in cfg.train_dataloader.dataset.pipeline:
            if step['type'] in ('Resize', 'Pad'):
                step['scale' if step['type'] == 'Resize' else 'size'] = (64, 64)
        cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
        cfg.default_hooks.logger.interval = 1
    else:
        warmup = min(50, max_iters // 10)
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=max_iters, eta_min=1e-5)]
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters + 1)
    cfg.default_hooks.checkpoint.update(interval=max_iters, max_keep_ckpts=1)
    cfg.work_dir = str(work_dir)
    return cfg
