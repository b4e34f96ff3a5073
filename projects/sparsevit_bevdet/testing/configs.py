"""Shrink the shipped BEVDet CPU demo config to a small synthetic nuScenes, and run tools/search.py at its
smallest (tests, smoke runs)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mmengine.config import Config

DEMO_CONFIG = Path(__file__).resolve().parents[3] / 'configs' / 'bevdet' / \
    'bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py'


def small_demo_config(data_root: str | Path, image_size: tuple[int, int], results_dir: str | Path,
                      input_size: tuple[int, int] = (64, 112), version: str = 'v1.0-mini') -> Config:
    """The CPU demo config reading ``data_root`` (a database of ``version``, images of ``image_size``) at
    network input ``input_size``."""
    cfg = Config.fromfile(DEMO_CONFIG)
    root = str(data_root).rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        cfg[loader].dataset.metainfo = dict(cfg[loader].dataset.metainfo, version=version)
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


# tools/search.py at its smallest: 2 candidates per search, one generation, one timing round each
TINY_SEARCH_ARGS = ['--population', '2', '--parents', '2', '--generations', '1', '--ratio-choices', '0.0', '0.4', '0.8',
                    '--table-repeats', '1', '--check-samples', '1', '--check-repeats', '1', '--final-repeats', '1',
                    '--rescore-top', '1', '--uniform-ratios', '0.4',
                    # at test sizes a sparse pass need not be faster than dense: a budget that never binds
                    '--latency-ratio', '3.0']


def run_tiny_search(config: str | Path, checkpoint: str | Path, work_dir: str | Path, metric: str,
                    cfg_options: list[str]) -> dict:
    """``tools/search.py`` in-process with :data:`TINY_SEARCH_ARGS` on ``metric``; returns its ``best.json``."""
    from ..utils.tool_loader import load_tool

    load_tool('search').main([str(config), str(checkpoint), '--metric', metric, '--work-dir', str(work_dir),
                              *TINY_SEARCH_ARGS, '--cfg-options', *cfg_options])
    return json.loads((Path(work_dir) / 'best.json').read_text())
