"""Shared pytest fixtures.

Add fixtures of other areas in their own section below; keep each section self-contained.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from projects.sparsevit_bevdet.testing.scope import restored_default_scope


@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Runners make their scope mmengine's process-wide default; no test sees another test's."""
    with restored_default_scope():
        yield

# ----------------------------------------------------------------------------------------------------
# nuScenes data path (tests/test_synthetic_nuscenes.py, test_nuscenes_converter.py, test_nuscenes_eval.py)

SYNTH_IMAGE_SIZE = (90, 160)
SYNTH_SAMPLES_PER_SCENE = 3
SYNTH_SEED = 0


@pytest.fixture(scope='session')
def synthetic_nuscenes(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small synthetic nuScenes (10 scenes x 3 samples, 90x160 images) with its info pkls.

    Session-scoped and shared: tests must not modify it; use ``nuscenes_copy`` for destructive tests.
    """
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos
    from projects.sparsevit_bevdet.synthetic.nuscenes import (
        SyntheticNuScenesConfig,
        generate_synthetic_nuscenes,
    )

    root = tmp_path_factory.mktemp('nuscenes_synth')
    cfg = SyntheticNuScenesConfig(out_dir=root, seed=SYNTH_SEED, samples_per_scene=SYNTH_SAMPLES_PER_SCENE,
                                  image_size=SYNTH_IMAGE_SIZE, workers=1)
    summary = generate_synthetic_nuscenes(cfg)
    infos = create_nuscenes_infos(root, 'v1.0-mini', root)
    return SimpleNamespace(root=root, cfg=cfg, summary=summary, infos=infos, version='v1.0-mini',
                           image_size=SYNTH_IMAGE_SIZE)


@pytest.fixture
def nuscenes_copy(synthetic_nuscenes: SimpleNamespace, tmp_path: Path) -> Path:
    """A private copy of the synthetic database (tables, samples, maps) that a test may break."""
    dst = tmp_path / 'nusc'
    shutil.copytree(synthetic_nuscenes.root, dst)
    return dst


# ----------------------------------------------------------------------------------------------------
# tools/search.py on the small synthetic nuScenes (tests/test_search_tool.py, test_shared_search.py)


@pytest.fixture(scope='session')
def search_checkpoint(synthetic_nuscenes: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained detector of ``small_search_cfg`` saved as an mmengine checkpoint."""
    import torch
    from mmdet3d.registry import MODELS
    from mmengine.registry import DefaultScope

    from projects.sparsevit_bevdet.testing.configs import small_search_cfg

    tmp = tmp_path_factory.mktemp('search_ckpt')
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(small_search_cfg(synthetic_nuscenes, tmp).model)
    path = tmp / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return path
