"""What ``tools/train.py`` and ``tools/test.py`` share: config loading, the command-line overrides
of mmdet3d's tools, default-scope set-up and runner construction.

One entry point serves mmdet3d, mmdet and mmseg configs: the config's ``default_scope`` picks the
registries (mmengine imports each registry's modules lazily from its ``locations``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# Visualization tasks of mmdet3d's Det3DVisualizationHook (`--task` of tools/test.py).
VIS_TASKS = ('mono_det', 'multi-view_det', 'lidar_det', 'lidar_seg', 'multi-modality_det')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments both tools take, spelled as in mmdet3d's tools."""
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs (e.g. train_cfg.max_iters=4); '
        'lists as key="[a,b]" or key=a,b; nested lists/tuples as key="[(a,b),(c,d)]" (quotes needed)')
    parser.add_argument('--ceph', action='store_true',
                        help="mmdet3d's switch to OpenMMLab's ceph data storage (mmdet3d configs only)")
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank from torch 2.0 on, --local_rank before
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def check_file(parser: argparse.ArgumentParser, path: str, what: str) -> None:
    """Exit with a usage error when a local file is missing (URLs and ``scheme://`` names pass)."""
    if '://' not in path and not osp.isfile(path):
        parser.error(f'{what} not found: {path}')


def set_local_rank(local_rank: int) -> None:
    """Export LOCAL_RANK for launchers that pass it only as an argument."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def load_config(config: str,
                cfg_options: Optional[dict],
                launcher: str,
                work_dir: Optional[str],
                ceph: bool = False) -> Config:
    """Read the config, apply ``--ceph``, ``--cfg-options`` and the launcher, and settle the work dir.

    Work dir priority: ``--work-dir`` > ``work_dir`` in the config > ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(config)
    if ceph:
        from mmdet3d.utils import replace_ceph_backend

        cfg = replace_ceph_backend(cfg)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """``--amp``: switch ``OptimWrapper`` to ``AmpOptimWrapper`` with dynamic loss scaling."""
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.', logger='current', level=logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, but the config has {wrapper_type}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: needs ``auto_scale_lr=dict(enable=..., base_batch_size=...)`` in the config."""
    auto_scale_lr = cfg.get('auto_scale_lr', None)
    if not auto_scale_lr or 'enable' not in auto_scale_lr or 'base_batch_size' not in auto_scale_lr:
        raise ValueError('--auto-scale-lr needs auto_scale_lr=dict(enable=False, base_batch_size=N) in the '
                         'config (N: the total batch size the lr was tuned for)')
    cfg.auto_scale_lr.enable = True


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume``: 'auto' resumes from the latest checkpoint in the work dir, a path from that file."""
    if resume is None:
        return
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def init_scope(cfg: Config) -> None:
    """Make the config's ``default_scope`` current so everything built before the runner resolves
    in that package's registries (mmengine imports their modules lazily from there).

    Raises:
        ImportError: the scope names a package that is not installed.
    """
    scope = cfg.get('default_scope', None)
    if scope is None:
        return
    try:
        importlib.import_module(f'{scope}.registry')
    except ImportError as err:
        raise ImportError(f"The config's default_scope '{scope}' needs the package '{scope}' "
                          f'(with {scope}.registry); it cannot be imported: {err}') from err
    init_default_scope(scope)


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg``, or the registered runner named by ``runner_type``; the visualizer is the run's own.

    mmdet's and mmseg's default runtimes name their visualizer ``'visualizer'``, and mmengine hands an existing
    instance of that name to every later runner of the process, so a second run in one process (``make demo``,
    ``tools/ablate.py``, tests) would write its scalars and images into the first run's directory. Without the
    fixed name the runner names the visualizer after its own experiment.
    """
    visualizer = cfg.get('visualizer')
    if isinstance(visualizer, dict) and 'name' in visualizer:
        cfg.visualizer = {k: v for k, v in visualizer.items() if k != 'name'}
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
