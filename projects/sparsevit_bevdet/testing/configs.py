"""Shrink the shipped BEVDet CPU demo config to a small synthetic nuScenes (tests, smoke runs)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mmengine.config import Config

DEMO_CONFIG = Path(__file__).resolve().parents[3] / 'configs' / 'bevdet' / \
    'bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py'


def small_demo_config(data_root: str | Path, image_size: tuple[int, int], results_dir: str | Path,
                      input_size: tuple[int, int] = (64, 112)) -> Config:
    """The CPU demo config reading ``data_root`` (images of ``image_size``) at network input ``input_size``."""
    cfg = Config.fromfile(DEMO_CONFIG)
    root = str(data_root).rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        pipeline = copy.deepcopy(cfg[loader].dataset.pipeline)
        for step in pipeline:
            if step['type'] == 'BEVDetImageAug':
                step['data_config'] = dict(step['data_config'], input_size=tuple(input_size),
                                           src_size=tuple(image_size))
        cfg[loader].dataset.pipeline = pipeline
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].update(data_root=root, ann_file=root + 'nuscenes_infos_val.pkl',
                              jsonfile_prefix=str(results_dir))
    cfg.model.img_view_transformer.input_size = tuple(input_size)
    return cfg


def small_search_cfg(nuscenes: Any, tmp_dir: str | Path) -> Config:
    """:func:`small_demo_config` on ``nuscenes`` (``.root``, ``.image_size``: the tests' synthetic set) with a
    validation run cheap enough to repeat (search tests)."""
    cfg = small_demo_config(nuscenes.root, nuscenes.image_size, Path(tmp_dir) / 'results')
    # an untrained head keeps 1000 boxes per task for the CPU rotated NMS: most of a validation run's time
    cfg.model.test_cfg.pts.pre_max_size = 50
    return cfg
