"""Evaluate a checkpoint with an mmengine config: mmdet3d, mmdet or mmseg (the config's default_scope decides).

Takes the same arguments as mmdet3d's tools/test.py, e.g.

    python tools/test.py configs/toy/toy_regression.py work_dirs/toy/iter_8.pth
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --task multi-view_det
    bash tools/dist_test.sh CONFIG CHECKPOINT 2          # 2 processes (GPUs, or gloo on CPU), one merged result

The checkpoint is loaded with weights_only=True (see projects/sparsevit_bevdet/utils/safe_checkpoint.py) and
must fit the model exactly (names and shapes; projects/sparsevit_bevdet/utils/checkpoint_fit.py): a checkpoint
of another model is refused before anything is evaluated unless --allow-partial-load is given. The metrics are
logged by the runner and printed as one JSON line at the end.
"""
import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mmengine.config import Config  # noqa: E402

# Importing the plugin installs safe (weights_only) checkpoint loading before the checkpoint is
# read, also for configs that do not list it in custom_imports.
import projects.sparsevit_bevdet  # noqa: E402,F401
from projects.sparsevit_bevdet.utils.checkpoint_fit import add_checkpoint_fit_hook  # noqa: E402
from projects.sparsevit_bevdet.utils.distributed import setup_distributed  # noqa: E402
from projects.sparsevit_bevdet.utils.entrypoint import (  # noqa: E402
    VIS_TASKS,
    add_common_args,
    build_runner,
    check_file,
    init_scope,
    load_config,
    set_local_rank,
)
from projects.sparsevit_bevdet.utils.searched_ratios import apply_pruning_ratios  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (mmdet3d / mmdet / mmseg config)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (local path, URL or mmengine scheme)')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='directory where painted predictions are saved')
    parser.add_argument('--score-thr', type=float, default=0.1, help='score threshold for drawing boxes')
    parser.add_argument('--task', choices=VIS_TASKS,
                        help='visualization method; needed with --show/--show-dir for mmdet3d configs')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each shown result stays up')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (config needs tta_model, '
                        'tta_pipeline)')
    parser.add_argument('--pruning-ratios', metavar='JSON_OR_VALUE',
                        help="SparseViT pruning ratios: tools/search.py's best.json (or any JSON file with them) or a "
                        'literal such as 0.6; needed by the *-searched configs')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='evaluate even if the checkpoint does not fit the model (missing, unexpected or '
                        'other-shaped weights keep their initialisation); refused without it')
    add_common_args(parser)
    args = parser.parse_args(argv)
    check_file(parser, args.config, 'config file')
    check_file(parser, args.checkpoint, 'checkpoint')
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> None:
    """Turn on the config's visualization hook for ``--show`` / ``--show-dir``, per package."""
    hook = cfg.default_hooks.get('visualization', None)
    if hook is None:
        raise RuntimeError("--show/--show-dir need a VisualizationHook in default_hooks, e.g. "
                           "default_hooks.visualization=dict(type='Det3DVisualizationHook')")
    scope = cfg.get('default_scope', None)
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if scope == 'mmseg':
        # mmseg's SegVisualizationHook has no output-dir argument; its visualizer saves the images.
        if args.show_dir:
            cfg.visualizer['save_dir'] = args.show_dir
        return
    if args.show_dir:
        hook['test_out_dir'] = args.show_dir
    hook['score_thr'] = args.score_thr
    if scope == 'mmdet3d':
        if args.task is None:
            raise ValueError(f'--show/--show-dir on an mmdet3d config need --task, one of {VIS_TASKS}')
        hook['vis_task'] = args.task


def enable_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in ``tta_model`` and test with ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs tta_model and tta_pipeline in the config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.ceph)
    cfg.load_from = args.checkpoint
    add_checkpoint_fit_hook(cfg, args.checkpoint, args.allow_partial_load)
    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    if args.tta:
        enable_tta(cfg)
    apply_pruning_ratios(cfg, args.pruning_ratios)
    init_scope(cfg)
    # CPU-only multi-process runs: gloo and our own process group (mmengine's init_dist needs CUDA)
    setup_distributed(cfg)
    runner = build_runner(cfg)
    metrics = runner.test()
    if runner.rank == 0:  # every rank gets the metrics; one line in the log is enough
        print(f'test metrics: {json.dumps(metrics, default=float, sort_keys=True)}', flush=True)
    return metrics


if __name__ == '__main__':
    main()
