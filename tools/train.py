"""Train a model from an mmengine config: mmdet3d, mmdet or mmseg (the config's default_scope decides).

Takes the same arguments as mmdet3d's tools/train.py, e.g.

    python tools/train.py configs/toy/toy_regression.py --work-dir work_dirs/toy
    python tools/train.py CONFIG --resume                  # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/x/iter_4.pth --cfg-options train_cfg.max_iters=12
    python tools/train.py SEARCHED_CONFIG --pruning-ratios work_dirs/search/best.json

Several processes (GPUs, or CPU processes with gloo when there is no GPU):

    python -m torch.distributed.run --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch
    bash tools/dist_train.sh CONFIG 2

The repository root goes on sys.path, so configs with ``custom_imports`` work without PYTHONPATH.
"""
import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Importing the plugin installs safe (weights_only) checkpoint loading before any checkpoint is
# read, also for configs that do not list it in custom_imports.
import projects.sparsevit_bevdet  # noqa: E402,F401
from projects.sparsevit_bevdet.engine.finite_loss import add_finite_loss_hook  # noqa: E402
from projects.sparsevit_bevdet.utils.distributed import setup_distributed  # noqa: E402
from projects.sparsevit_bevdet.utils.entrypoint import (  # noqa: E402
    add_common_args,
    build_runner,
    check_file,
    enable_amp,
    enable_auto_scale_lr,
    init_scope,
    load_config,
    set_local_rank,
    set_resume,
)
from projects.sparsevit_bevdet.utils.run_checkpoints import use_atomic_checkpoints  # noqa: E402
from projects.sparsevit_bevdet.utils.searched_ratios import apply_pruning_ratios  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (mmdet3d / mmdet / mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic mixed precision training (needs a GPU)')
    parser.add_argument('--sync_bn', choices=['none', 'torch', 'mmcv'], default='none',
                        help='convert all BatchNorm layers to SyncBatchNorm in distributed training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size over auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a value from the latest one in the '
                        'work dir')
    parser.add_argument('--pruning-ratios', metavar='JSON_OR_VALUE',
                        help="SparseViT pruning ratios: tools/search.py's best.json (or any JSON file with them) or a "
                        'literal such as 0.6; needed by the *-searched configs')
    add_common_args(parser)
    args = parser.parse_args(argv)
    check_file(parser, args.config, 'config file')
    if args.resume not in (None, 'auto'):
        check_file(parser, args.resume, 'checkpoint to resume from')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.ceph)
    if args.amp:
        enable_amp(cfg)
    if args.sync_bn != 'none':
        cfg.sync_bn = args.sync_bn
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    set_resume(cfg, args.resume)
    apply_pruning_ratios(cfg, args.pruning_ratios)
    # checkpoints appear whole or not at all: a run killed while writing one leaves no truncated iter_N.pth
    use_atomic_checkpoints(cfg)
    init_scope(cfg)
    # CPU-only multi-process runs: gloo and our own process group (mmengine's init_dist needs CUDA)
    setup_distributed(cfg)
    # a NaN / infinite loss stops the run with an error instead of training on to NaN weights
    add_finite_loss_hook(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
