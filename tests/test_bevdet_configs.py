"""The shipped BEVDet configs build and run end to end (train steps, validation through the devkit).

Runs the CPU demo config on the small synthetic set of the session fixture, at an input size that fits its
90 x 160 images; the model, pipelines, metric and schedule are the config's own.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs' / 'bevdet'


@pytest.mark.parametrize('name', ['bevdet_sparsevit-t_nuscenes-synth.py',
                                  'bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py'])
def test_config_builds_the_model(name):
    from mmdet3d.registry import MODELS

    import projects.sparsevit_bevdet  # noqa: F401

    cfg = Config.fromfile(CONFIGS / name)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'BEVDet'
    assert type(model.image_encoder).__name__ == 'SparseViT'
    assert cfg.train_dataloader.dataset.metainfo['classes'] == list(cfg.model.class_names)


def test_cpu_demo_config_trains_and_validates(synthetic_nuscenes, tmp_path):
    from mmengine.runner import Runner

    from projects.sparsevit_bevdet.testing.configs import small_demo_config

    cfg = small_demo_config(synthetic_nuscenes.root, synthetic_nuscenes.image_size, tmp_path / 'results')
    cfg.train_dataloader.batch_size = 1
    cfg.train_cfg.max_iters = 3
    cfg.train_cfg.val_interval = 3
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint.interval = 3
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()
    assert 0.0 <= metrics['NuScenes/mAP'] <= 1.0 and 0.0 <= metrics['NuScenes/NDS'] <= 1.0
    assert (tmp_path / 'results' / 'results_nusc.json').is_file()


def test_adaptation_config_registers_the_hook():
    from mmdet3d.registry import HOOKS

    import projects.sparsevit_bevdet  # noqa: F401
    from projects.sparsevit_bevdet.engine import SparsityAdaptationHook

    cfg = Config.fromfile(CONFIGS / 'bevdet_sparsevit-t_nuscenes-synth_adapt.py')
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
    assert isinstance(hooks[0], SparsityAdaptationHook)
