"""The paper's ablations (issue 19), one subcommand per claim; each writes ``table.md`` (also printed),
``results.json`` and ``plot.png`` into ``<work-dir>/<ablation>/``:

  window-vs-token  window pruning (SparseViT after sparsity-aware adaptation) vs token pruning (DynamicTokenSwin,
                   DynamicViT-style, fine-tuned from the same dense checkpoint with the same adaptation recipe and
                   iterations) at matched measured backbone latency
  resolution       SparseViT at the full input vs the dense model at lower input sizes at matched latency
  width            the dense model at reduced width (same depths, same recipe) vs SparseViT at matched latency
  uniform          searched non-uniform ratios (run_search) vs uniform ratios at matched latency (Pareto plot)
  search           evolutionary vs random search at equal evaluations: best-so-far vs evaluations over seeds

Tasks (``--task``): ``coco``: Mask R-CNN + FPN on the synthetic COCO at Swin-T's full width (embed_dims 96,
heads 3-6-12-24; configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py), metric coco/bbox_mAP; ``nuscenes``:
BEVDet on the demo's synthetic nuScenes with the demo's recipe (tools/demo.py), metrics NuScenes/NDS and mAP,
reusing the demo's dense / adapt checkpoints when ``--demo-work-dir`` holds finished ones.

Every trained model is a cached stage of ``<work-dir>`` (``dense``, ``adapt``, ``token``, ``width-<s>``,
``lowres-<s>``) under a fingerprint of its config and upstream stages, shared by the ablations of one work
dir; every evaluated row and every timing is cached in ``<work-dir>/rows/`` under a fingerprint of what it
depends on. A rerun reuses finished work; a killed run resumes. Latency: the image encoder (backbone) only, on
one validation input, every variant timed round-robin in one process (medians). Accuracy at matched latency:
each method's accuracy linearly interpolated between its two measured configurations around that latency on
its own accuracy-latency curve (no extrapolation; a dash outside its measured range).

Default CPU budgets on 2 cores (AMD EPYC), ``--task coco``, first run (later runs reuse the stages): dense
training about 22 min and adaptation about 6 min idle (shared by every ablation; more when the machine is
shared); see each subcommand's --help and docs/benchmarks.md "Issue 19: ablations" for the measured runs.
``--quick`` runs each ablation end to end for a few iterations on tiny data (what tests/test_ablate.py runs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ABLATIONS = ('window-vs-token', 'resolution', 'width', 'uniform', 'search')
DEFAULT_RATIOS = (0.2, 0.4, 0.6, 0.8)
COCO_DENSE = ROOT / 'configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py'
COCO_ADAPT = ROOT / 'configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py'
COCO_WIDTH, COCO_HEADS = 96, (3, 6, 12, 24)  # Swin-T
TOKEN_BASE = ROOT / 'configs/_base_/models/dynamic_token_swin.py'
# --quick searches at 2 x dense: at its tiny input sparse configurations are no faster than dense, so a budget of
# 1 x dense admits a handful of configurations or none, depending on one round of timing noise
QUICK_BUDGET = 2.0
MAX_BUDGET = 4.0  # budgets above 1 x dense are allowed (every configuration up to that multiple fits)

# measured on 2 AMD EPYC cores (docs/benchmarks.md, "Issue 19: ablations"), on top of the shared coco stages (dense
# about 38 min and adaptation about 7.5 min on cores shared with another training, less when idle); `make demo` stages
# for nuscenes
BUDGETS = {
    'window-vs-token': 'coco: the token fine-tune (300 iterations, 8.6 min at 2 threads), 5 evaluations and the '
                       'timing, about 16 min in all',
    'resolution': 'coco: 2 low-resolution evaluations and the timing, about 1 min (no fine-tuning by default)',
    'width': 'coco: 2 more dense trainings (1000 iterations each, narrower: 0.4 x took 18 min at 1 thread beside '
             'another job), their evaluations and the timing, about 25 min',
    'uniform': 'coco: one search per budget (12 + 12 evaluations each), about 6 min for three budgets',
    'search': 'coco: 3 seeds x (evolution, population 8 x 4 generations, and as many random draws), about 14 min',
}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--task', choices=('coco', 'nuscenes'), default='coco', help='which detector and data')
    common.add_argument('--work-dir', type=Path, default=None,
                        help='cached stages, rows and outputs (default work_dirs/ablate/<task>[-quick])')
    common.add_argument('--data-root', type=Path, default=None,
                        help='the synthetic data (default data/coco-synth or data/nuscenes-synth-trainval; '
                        '--quick: <work-dir>/data)')
    common.add_argument('--demo-work-dir', type=Path, default=None,
                        help='nuscenes: a tools/demo.py work dir whose finished dense / adapt checkpoints to reuse')
    common.add_argument('--ratios', type=float, nargs='+', default=list(DEFAULT_RATIOS),
                        help='uniform pruning ratios of the accuracy-latency curves (ratio 0 is always added)')
    common.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    common.add_argument('--timing-repeats', type=int, default=None,
                        help='interleaved timing rounds (default 15; --quick: 2)')
    common.add_argument('--quick', action='store_true', help='a few iterations on tiny data (smoke test)')
    sub = parser.add_subparsers(dest='ablation', metavar='ABLATION', required=True)
    helps = {
        'window-vs-token': 'window (SparseViT) vs token (DynamicTokenSwin) pruning at matched measured latency',
        'resolution': 'SparseViT at the full input vs the dense model at lower input sizes',
        'width': 'the dense model at reduced width vs SparseViT',
        'uniform': 'searched non-uniform vs uniform ratios (Pareto plot)',
        'search': 'evolutionary vs random search at equal evaluations over seeds',
    }
    parsers = {}
    for name in ABLATIONS:
        parsers[name] = sub.add_parser(name, parents=[common], help=helps[name],
                                       description=f'{helps[name]}. Default CPU budget: {BUDGETS[name]}.')
    parsers['resolution'].add_argument('--scales', type=float, nargs='+', default=[0.875, 0.75],
                                       help='input side scales of the dense model (default 0.875 0.75)')
    parsers['resolution'].add_argument('--finetune-iters', type=int, default=0,
                                       help='fine-tune the dense model at each lower size for this many iterations '
                                       '(the adaptation recipe without sparsity) before evaluating; default 0: '
                                       'evaluated only, with the weights trained at the full size')
    parsers['width'].add_argument('--widths', type=float, nargs='+', default=[0.6, 0.4],
                                  help='channel scales of the narrow dense models (default 0.6 0.4)')
    parsers['uniform'].add_argument('--budgets', type=float, nargs='+', default=None,
                                    help='search budgets as multiples of the dense encoder latency (default coco 0.65 '
                                    '0.75 0.9, nuscenes 0.6 0.75 0.9; --quick: 2.0, as fixed costs dominate at its '
                                    'tiny input); a budget no configuration fits is skipped with a note')
    for name, (pop, parents, gens) in (('uniform', (6, 3, 2)), ('search', (8, 4, 4))):
        parsers[name].add_argument('--population', type=int, default=pop, help='evolution population')
        parsers[name].add_argument('--parents', type=int, default=parents, help='evolution parents')
        parsers[name].add_argument('--generations', type=int, default=gens, help='evolution generations')
    parsers['search'].add_argument('--seeds', type=int, default=3, help='search seeds (default 3)')
    parsers['search'].add_argument('--latency-ratio', type=float, default=None,
                                   help='search budget, a multiple of the dense encoder latency (default 0.75; '
                                   '--quick: 2.0)')
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that cannot be right, with the option's name; resolve defaults."""
    if any(not 0.0 < r < 1.0 for r in args.ratios):
        parser.error(f'--ratios must be in (0, 1), got {args.ratios}')
    args.ratios = sorted(set(args.ratios))
    if args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.timing_repeats is None:
        args.timing_repeats = 2 if args.quick else 15
    if args.timing_repeats < 1:
        parser.error(f'--timing-repeats must be >= 1, got {args.timing_repeats}')
    if args.demo_work_dir is not None and args.task != 'nuscenes':
        parser.error('--demo-work-dir is for --task nuscenes')
    if args.ablation == 'uniform' and args.budgets is None:
        # coco: uniform 0.8 re-measures at about 0.6 x dense, so a 0.6 budget has (almost) no candidate
        full = [0.65, 0.75, 0.9] if args.task == 'coco' else [0.6, 0.75, 0.9]
        args.budgets = [QUICK_BUDGET] if args.quick else full
    if args.ablation == 'search' and args.latency_ratio is None:
        args.latency_ratio = QUICK_BUDGET if args.quick else 0.75
    for name in ('scales', 'widths'):
        values = getattr(args, name, None)
        if values is not None and any(not 0.0 < v < 1.0 for v in values):
            parser.error(f'--{name} must be in (0, 1), got {values}')
    if getattr(args, 'budgets', None) is not None and any(not 0.0 < v <= MAX_BUDGET for v in args.budgets):
        parser.error(f'--budgets must be in (0, {MAX_BUDGET}], got {args.budgets}')
    for name in ('population', 'parents', 'generations', 'seeds'):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f'--{name} must be >= 1, got {value}')
    if getattr(args, 'parents', None) is not None and args.parents > args.population:
        parser.error(f'--parents ({args.parents}) must not exceed --population ({args.population})')
    if getattr(args, 'finetune_iters', 0) < 0:
        parser.error(f'--finetune-iters must be >= 0, got {args.finetune_iters}')
    if getattr(args, 'latency_ratio', None) is not None and not 0.0 < args.latency_ratio <= MAX_BUDGET:
        parser.error(f'--latency-ratio must be in (0, {MAX_BUDGET}], got {args.latency_ratio}')
    default_work = f'work_dirs/ablate/{args.task}' + ('-quick' if args.quick else '')
    args.work_dir = (args.work_dir or ROOT / default_work).resolve()


# ----------------------------------------------------------------------------------------------------
# models: each a cached training stage of the work dir


class Model(NamedTuple):
    """A trained detector: its stage fingerprint, checkpoint and how to build its config for evaluation."""

    name: str
    checkpoint: Path
    key: str
    make_cfg: Callable[[float, Path], Any]  # (input scale, work dir) -> config


def scaled_width(width: int, heads: Sequence[int], scale: float) -> int:
    """``width * scale`` rounded to a multiple of the first stage's head count (at least one head dim), so every
    stage's channels (width * 2**i) divide by its heads (heads[0] * 2**i): head counts stay, head dims shrink."""
    return max(heads[0], round(width * scale / heads[0]) * heads[0])


def set_width(backbone: Any, neck: Any, width: int) -> None:
    """Give the backbone ``width`` channels in stage 1 and the neck the matching input channels."""
    old = backbone.embed_dims
    backbone.embed_dims = width
    neck.in_channels = [c // old * width for c in neck.in_channels]


def make_token_backbone(backbone: Any) -> None:
    """Turn a SparseViT backbone entry into DynamicTokenSwin with the shared token-pruning settings."""
    from mmengine.config import Config

    settings = dict(Config.fromfile(str(TOKEN_BASE)).dynamic_token_swin)
    settings.pop('pruning_ratios')  # the adaptation hook sets the ratios of every iteration
    backbone.update(settings)


class Task:
    """What an ablation trains and evaluates; subclasses for COCO and nuScenes."""

    name = ''
    metrics: tuple[str, ...] = ()

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work_dir: Path = args.work_dir
        self._models: dict[str, Model] = {}

    @property
    def metric(self) -> str:
        return self.metrics[0]

    def model(self, name: str) -> Model:
        """``dense``, ``adapt``, ``token``, ``width-<s>`` or ``lowres-<s>-<iters>``, trained (cached) on first use."""
        if name not in self._models:
            kind, _, arg = name.partition('-')
            build = {'dense': self.dense, 'adapt': self.adapt, 'token': self.token, 'width': self.width,
                     'lowres': self.lowres}[kind]
            self._models[name] = build(arg) if arg else build()
        return self._models[name]

    def dense(self) -> Model:
        raise NotImplementedError

    def adapt(self) -> Model:
        raise NotImplementedError

    def token(self) -> Model:
        raise NotImplementedError

    def width(self, scale: str) -> Model:
        raise NotImplementedError

    def lowres(self, spec: str) -> Model:
        raise NotImplementedError


def _stages() -> Any:
    from projects.sparsevit_bevdet.engine import stages

    return stages


class CocoTask(Task):
    """Mask R-CNN + FPN on the synthetic COCO at Swin-T's full width (docs/benchmarks.md's W=96 recipe)."""

    name = 'coco'
    metrics = ('coco/bbox_mAP',)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        from projects.sparsevit_bevdet.utils.pretrain_stage import ensure_synthetic_coco

        self.data_root = (args.data_root or (self.work_dir / 'data' if args.quick else ROOT / 'data/coco-synth'))
        self.data_key = ensure_synthetic_coco(self.data_root.resolve(), args.quick)
        self.size = 64 if args.quick else 160

    def config(self, path: Path, work_dir: Path, width_scale: float = 1.0, input_scale: float = 1.0) -> Any:
        """``path`` at Swin-T's width (times ``width_scale``), reading the data root, images resized to
        ``input_scale`` x the recipe's side; ``--quick``: 2 iterations at 64 x 64."""
        from mmengine.config import Config

        cfg = Config.fromfile(str(path))
        root = str(self.data_root.resolve()) + '/'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.data_root = root
        for evaluator in ('val_evaluator', 'test_evaluator'):
            cfg[evaluator].ann_file = root + 'annotations/instances_val2017.json'
        cfg.model.backbone.num_heads = list(COCO_HEADS)
        set_width(cfg.model.backbone, cfg.model.neck, scaled_width(COCO_WIDTH, COCO_HEADS, width_scale))
        side = int(4 * round(self.size * input_scale / 4))  # a multiple of the patch size
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            for step in cfg[loader].dataset.pipeline:
                if step['type'] == 'Resize':
                    step['scale'] = (side, side)
                elif step['type'] == 'Pad':
                    step['size'] = (side, side)
        iters = cfg.train_cfg.max_iters
        if self.args.quick:
            iters = 2
            cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=iters)]
            cfg.default_hooks.logger.interval = 1
            # a 2-iteration model scores every box below the recipe's 0.05: keep them, so the metric exists;
            # a fixed seed, as a 2-iteration model's boxes can fall where mmdet's mask pasting raises
            cfg.model.test_cfg.rcnn.score_thr = 0.0
            cfg.randomness = dict(seed=0)
        cfg.train_cfg.update(max_iters=iters, val_interval=iters + 1)  # the ablation evaluates itself
        cfg.default_hooks.checkpoint.update(interval=min(250, iters), max_keep_ckpts=1)
        cfg.work_dir = str(work_dir)
        return cfg

    def _train(self, name: str, cfg: Any, path: Path, upstream: str, load_from: Optional[Path] = None) -> str:
        stages = _stages()
        if load_from is not None:
            cfg.load_from = str(load_from)
        return stages.train_cached(name, cfg, path, stages.stage_key(cfg.pretty_text, upstream))

    def dense(self) -> Model:
        cfg = self.config(COCO_DENSE, self.work_dir / 'dense')
        ckpt, key = self._train('dense', cfg, COCO_DENSE, self.data_key)
        return Model('dense', ckpt, key, lambda s, w: self.config(COCO_DENSE, w, input_scale=s))

    def adapt(self) -> Model:
        dense = self.model('dense')
        cfg = self.config(COCO_ADAPT, self.work_dir / 'adapt')
        ckpt, key = self._train('adapt', cfg, COCO_ADAPT, dense.key, dense.checkpoint)
        return Model('adapt', ckpt, key, lambda s, w: self.config(COCO_ADAPT, w, input_scale=s))

    def token_config(self, work_dir: Path, input_scale: float = 1.0) -> Any:
        """The adaptation recipe (same hook, iterations, schedule) with DynamicTokenSwin in AuxLossMaskRCNN."""
        cfg = self.config(COCO_ADAPT, work_dir, input_scale=input_scale)
        cfg.model.type = 'AuxLossMaskRCNN'
        make_token_backbone(cfg.model.backbone)
        return cfg

    def token(self) -> Model:
        dense = self.model('dense')
        cfg = self.token_config(self.work_dir / 'token')
        ckpt, key = self._train('token', cfg, COCO_ADAPT, dense.key, dense.checkpoint)
        return Model('token', ckpt, key, lambda s, w: self.token_config(w, s))

    def width(self, scale: str) -> Model:
        s = float(scale)
        cfg = self.config(COCO_DENSE, self.work_dir / f'width-{scale}', width_scale=s)
        ckpt, key = self._train(f'width-{scale}', cfg, COCO_DENSE, self.data_key)
        return Model(f'width-{scale}', ckpt, key, lambda i, w: self.config(COCO_DENSE, w, width_scale=s, input_scale=i))

    def lowres(self, spec: str) -> Model:
        scale, iters = spec.split('-')
        dense = self.model('dense')

        def make(input_scale: float, work_dir: Path) -> Any:
            cfg = self.config(COCO_ADAPT, work_dir, input_scale=input_scale)
            cfg.custom_hooks = []  # the adaptation recipe without sparsity
            return cfg

        cfg = make(float(scale), self.work_dir / f'lowres-{spec}')
        finetune_schedule(cfg, int(iters), self.args.quick)
        ckpt, key = self._train(f'lowres-{spec}', cfg, COCO_ADAPT, dense.key, dense.checkpoint)
        return Model(f'lowres-{spec}', ckpt, key, make)


def finetune_schedule(cfg: Any, iters: int, quick: bool) -> None:
    """``iters`` iterations of the adaptation config's schedule (warm-up, cosine) instead of its own length."""
    if quick:
        iters = min(iters, 2)
    cfg.train_cfg.update(max_iters=iters, val_interval=iters + 1)
    if not quick:
        warmup = max(1, min(20, iters // 10))
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters, eta_min=1e-5)]
    cfg.default_hooks.checkpoint.update(interval=iters)


class NuScenesTask(Task):
    """BEVDet on the demo's synthetic nuScenes with the demo's recipe and stages (tools/demo.py)."""

    name = 'nuscenes'
    metrics = ('NuScenes/NDS', 'NuScenes/mAP')

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        from projects.sparsevit_bevdet.utils.tool_loader import load_tool

        self.demo = load_tool('demo')
        data_root = args.data_root or (self.work_dir / 'data' if args.quick else ROOT / 'data/nuscenes-synth-trainval')
        # the demo's stages read these fields; they write into this work dir
        self.demo_args = argparse.Namespace(quick=args.quick, data_root=data_root.resolve(), work_dir=self.work_dir,
                                            threads=args.threads, latency_ratio=1.0)
        self._data_key: Optional[str] = None

    @property
    def data_key(self) -> str:
        if self._data_key is None:
            self._data_key = self.demo.stage_data(self.demo_args)
        return self._data_key

    def config(self, path: Path, work_dir: Path, input_scale: float = 1.0) -> Any:
        """``path`` as the demo reads it, at ``input_scale`` x its input size (sides multiples of 16, the view
        transformer's feature stride)."""
        cfg = self.demo.demo_config(path, self.demo_args, work_dir)
        if input_scale != 1.0:
            height, width = cfg.model.img_view_transformer.input_size
            size = tuple(max(16, int(16 * round(side * input_scale / 16))) for side in (height, width))
            cfg.model.img_view_transformer.input_size = size
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
                for step in cfg[loader].dataset.pipeline:
                    if step['type'] == 'BEVDetImageAug':
                        step['data_config'] = dict(step['data_config'], input_size=size)
        return cfg

    def _demo_checkpoint(self, name: str, path: Path) -> Optional[Model]:
        """The finished ``name`` stage of ``--demo-work-dir``, if there is one."""
        demo_dir = self.args.demo_work_dir
        if demo_dir is None:
            return None
        stages = _stages()
        cfg = self.config(path, demo_dir / name)
        ckpt = stages.final_checkpoint(demo_dir / name, cfg.train_cfg.max_iters)
        record = demo_dir / name / stages.STAGE_FILE
        if not (ckpt.is_file() and record.is_file()):
            print(f'{demo_dir / name} holds no finished {name} stage: training it here')
            return None
        print(f'reusing the demo\'s {name} checkpoint {ckpt}')
        return Model(name, ckpt, json.loads(record.read_text())['key'], lambda s, w: self.config(path, w, s))

    def dense(self) -> Model:
        demo = self.demo
        found = self._demo_checkpoint('dense', demo.DENSE_CONFIG)
        if found is not None:
            return found
        data_key = self.data_key
        pretrain_ckpt, pretrain_key = demo.stage_pretrain(self.demo_args)
        ckpt, key = demo.stage_train('dense', demo.DENSE_CONFIG, self.demo_args, upstream_key=data_key + pretrain_key,
                                     init_checkpoint=pretrain_ckpt)
        return Model('dense', ckpt, key, lambda s, w: self.config(demo.DENSE_CONFIG, w, s))

    def adapt(self) -> Model:
        demo = self.demo
        found = self._demo_checkpoint('adapt', demo.ADAPT_CONFIG)
        if found is not None:
            return found
        dense = self.model('dense')
        ckpt, key = demo.stage_train('adapt', demo.ADAPT_CONFIG, self.demo_args, load_from=dense.checkpoint,
                                     upstream_key=dense.key)
        return Model('adapt', ckpt, key, lambda s, w: self.config(demo.ADAPT_CONFIG, w, s))

    def token_config(self, work_dir: Path, input_scale: float = 1.0) -> Any:
        cfg = self.config(self.demo.ADAPT_CONFIG, work_dir, input_scale)
        make_token_backbone(cfg.model.img_backbone)
        return cfg

    def token(self) -> Model:
        stages, dense = _stages(), self.model('dense')
        cfg = self.token_config(self.work_dir / 'token')
        cfg.load_from = str(dense.checkpoint)
        ckpt, key = stages.train_cached('token', cfg, self.demo.ADAPT_CONFIG,
                                        stages.stage_key(cfg.pretty_text, dense.key))
        return Model('token', ckpt, key, lambda s, w: self.token_config(w, s))

    def width_config(self, path: Path, work_dir: Path, scale: float, input_scale: float = 1.0) -> Any:
        cfg = self.config(path, work_dir, input_scale)
        backbone = cfg.model.img_backbone
        set_width(backbone, cfg.model.img_neck, scaled_width(backbone.embed_dims, backbone.num_heads, scale))
        return cfg

    def width(self, scale: str) -> Model:
        """The demo's recipe at reduced width: the COCO pretraining and the dense training, both narrower."""
        from projects.sparsevit_bevdet.utils.pretrain_stage import ensure_synthetic_coco, pretrain_config

        stages, demo, s = _stages(), self.demo, float(scale)
        coco_root = self.work_dir / 'coco-data' if self.args.quick else ROOT / 'data/coco-synth'
        coco_key = ensure_synthetic_coco(coco_root, self.args.quick)
        pre = pretrain_config(coco_root, self.work_dir / f'width-{scale}-pretrain', self.args.quick,
                              demo.PRETRAIN_ITERS)
        backbone = pre.model.backbone
        set_width(backbone, pre.model.neck, scaled_width(backbone.embed_dims, backbone.num_heads, s))
        pre_ckpt, pre_key = stages.train_cached(f'width-{scale}-pretrain', pre, COCO_DENSE,
                                                stages.stage_key(pre.pretty_text, coco_key))
        cfg = self.width_config(demo.DENSE_CONFIG, self.work_dir / f'width-{scale}', s)
        cfg.model.img_backbone.init_cfg = dict(type='Pretrained', checkpoint=str(pre_ckpt))
        ckpt, key = stages.train_cached(f'width-{scale}', cfg, demo.DENSE_CONFIG,
                                        stages.stage_key(cfg.pretty_text, self.data_key + pre_key))
        return Model(f'width-{scale}', ckpt, key, lambda i, w: self.width_config(demo.DENSE_CONFIG, w, s, i))

    def lowres(self, spec: str) -> Model:
        stages, dense = _stages(), self.model('dense')
        scale, iters = spec.split('-')

        def make(input_scale: float, work_dir: Path) -> Any:
            cfg = self.config(self.demo.ADAPT_CONFIG, work_dir, input_scale)
            cfg.custom_hooks = []
            return cfg

        cfg = make(float(scale), self.work_dir / f'lowres-{spec}')
        finetune_schedule(cfg, int(iters), self.args.quick)
        cfg.load_from = str(dense.checkpoint)
        ckpt, key = stages.train_cached(f'lowres-{spec}', cfg, self.demo.ADAPT_CONFIG,
                                        stages.stage_key(cfg.pretty_text, dense.key))
        return Model(f'lowres-{spec}', ckpt, key, make)


# ----------------------------------------------------------------------------------------------------
# evaluation: cached rows and interleaved timing


class Evaluator:
    """Scores (cached rows) and encoder timings of the task's models; one loaded detector per model and size."""

    def __init__(self, task: Task) -> None:
        from projects.sparsevit_bevdet.engine.ablation import RowCache

        self.task = task
        self.cache = RowCache(task.work_dir / 'rows')
        self._detectors: dict[tuple[str, float], Any] = {}

    def detector(self, model: Model, input_scale: float = 1.0) -> Any:
        key = (model.name, input_scale)
        if key not in self._detectors:
            from projects.sparsevit_bevdet.engine.stages import TrainedDetector

            work_dir = self.task.work_dir / 'eval' / f'{model.name}-x{input_scale}'
            self._detectors[key] = TrainedDetector(model.make_cfg(input_scale, work_dir), model.checkpoint)
        return self._detectors[key]

    def row_key(self, model: Model, ratios: Any, input_scale: float = 1.0) -> dict:
        return dict(task=self.task.name, model=model.name, stage=model.key, checkpoint=str(model.checkpoint),
                    ratios=ratios, input_scale=input_scale, metrics=list(self.task.metrics))

    def score(self, model: Model, ratios: Any, input_scale: float = 1.0) -> dict:
        """The task's metrics of ``model`` at ``ratios`` (a uniform ratio or per-block lists), cached."""
        def compute() -> dict:
            metrics = self.detector(model, input_scale).test(ratios)
            missing = [m for m in self.task.metrics if m not in metrics]
            if missing:
                raise KeyError(f'the evaluator produced {sorted(metrics)}, not {missing}')
            return {m: metrics[m] for m in self.task.metrics}

        return self.cache.get(f'{model.name}-x{input_scale}', self.row_key(model, ratios, input_scale), compute)

    def images(self, model: Model, input_scale: float = 1.0) -> Any:
        """The encoder's input for the first validation sample at this model's size."""
        import torch

        from projects.sparsevit_bevdet.search.scoring import encoder_input

        detector = self.detector(model, input_scale)
        batch = next(iter(detector.runner.test_loop.dataloader))
        with torch.inference_mode():
            return encoder_input(detector.model.data_preprocessor(batch, False)['inputs'])

    def timings(self, variants: dict[str, tuple[Model, Any, float]], repeats: int) -> dict[str, dict]:
        """Median encoder ms of each variant ``name -> (model, ratios, input scale)``, all timed interleaved in
        this process (cached under the variants' row keys, the repeats, threads and CPU)."""
        import torch

        from projects.sparsevit_bevdet.engine.ablation import time_encoders
        from projects.sparsevit_bevdet.utils.timing import cpu_name

        key = dict(variants={n: self.row_key(m, r, s) for n, (m, r, s) in variants.items()}, repeats=repeats,
                   threads=torch.get_num_threads(), cpu=cpu_name())

        def compute() -> dict:
            images = {(m.name, s): self.images(m, s) for m, _, s in variants.values()}
            return time_encoders({n: (self.detector(m, s).encoder, r, images[(m.name, s)])
                                  for n, (m, r, s) in variants.items()}, repeats)

        return self.cache.get('timing', key, compute)


# ----------------------------------------------------------------------------------------------------
# the ablations


class Outcome(NamedTuple):
    """What an ablation reports: all rows, the matched-latency comparison, notes and the plot."""

    rows: list[dict]
    matched: list[dict]
    headers: tuple[list[str], list[str]]  # of the rows table and the matched table
    notes: list[str]
    plot: Callable[[Path], None]


def fmt_ratio(ratio: Any) -> str:
    return f'{ratio:.1f}' if isinstance(ratio, (int, float)) else 'searched'


def curve(task: Task, rows: list[dict], method: str) -> list[tuple[float, float]]:
    return [(r['encoder_ms'], r[task.metric]) for r in rows if r['method'] == method]


def matched_rows(task: Task, rows: list[dict], reference: str, others: Sequence[str]) -> list[dict]:
    """At each row of ``others``: its accuracy and ``reference``'s accuracy interpolated at its measured latency."""
    from projects.sparsevit_bevdet.engine.ablation import interpolate

    ref_curve = curve(task, rows, reference)
    out = []
    for row in rows:
        if row['method'] not in others:
            continue
        ref = interpolate(ref_curve, row['encoder_ms'])
        out.append(dict(config=row['config'], encoder_ms=row['encoder_ms'], x_dense=row['x_dense'],
                        score=row[task.metric], reference=reference, reference_score=ref,
                        delta=None if ref is None else row[task.metric] - ref))
    return out


def ratio_rows(task: Task, ev: Evaluator, methods: dict[str, tuple[Model, list[float]]],
               extra: dict[str, tuple[str, Model, Any, float]], repeats: int) -> list[dict]:
    """Score and time ``methods`` (name -> (model, ratios) at the full input) and ``extra`` variants
    (config -> (method, model, ratios, input scale)), all timed interleaved; rows with ``x_dense`` relative to
    the first method's ratio 0."""
    from projects.sparsevit_bevdet.engine.ablation import Progress

    variants: dict[str, tuple[Model, Any, float]] = {}
    labels: dict[str, str] = {}
    for method, (model, ratios) in methods.items():
        for r in ratios:
            variants[f'{method} r={r:.1f}'] = (model, r, 1.0)
            labels[f'{method} r={r:.1f}'] = method
    for config, (method, model, ratios, scale) in extra.items():
        variants[config], labels[config] = (model, ratios, scale), method
    progress = Progress(len(variants) + 1, 'evaluate')
    scores = {}
    for name, (model, ratios, scale) in variants.items():
        progress.step(f'{name}: {model.name} at {fmt_ratio(ratios)}, input x{scale}')
        scores[name] = ev.score(model, ratios, scale)
    progress.step(f'timing {len(variants)} encoders, {repeats} interleaved rounds')
    times = ev.timings(variants, repeats)
    first = next(iter(variants))
    rows = []
    for name, (model, ratios, scale) in variants.items():
        rows.append(dict(config=name, method=labels[name], model=model.name, checkpoint=str(model.checkpoint),
                         ratio=ratios if isinstance(ratios, float) else None,
                         pruning_ratios=None if isinstance(ratios, float) else ratios,
                         input_scale=scale, **scores[name], encoder_ms=times[name]['median_ms'],
                         encoder_q1_ms=times[name]['q1_ms'], encoder_q3_ms=times[name]['q3_ms'],
                         x_dense=times[name]['median_ms'] / times[first]['median_ms']))
    return rows


def row_table(task: Task, rows: list[dict]) -> tuple[list[str], list[list[Any]]]:
    headers = ['configuration', 'weights', *task.metrics, 'encoder ms (median)', 'x dense']
    return headers, [[r['config'], r['model'], *(r[m] for m in task.metrics), r['encoder_ms'], r['x_dense']]
                     for r in rows]


def matched_table(task: Task, matched: list[dict], label: str) -> tuple[list[str], list[list[Any]]]:
    headers = ['configuration', 'encoder ms', 'x dense', task.metric, f'{label} at the same ms (interpolated)',
               'difference']
    return headers, [[m['config'], m['encoder_ms'], m['x_dense'], m['score'], m['reference_score'], m['delta']]
                     for m in matched]


def plot_curves(task: Task, rows: list[dict], path: Path, title: str, points: Sequence[str] = ()) -> None:
    """Accuracy vs measured encoder latency: one line per method (ratio labels), ``points`` methods as markers."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from projects.sparsevit_bevdet.utils.atomic_io import atomic_save_figure

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    methods = list(dict.fromkeys(r['method'] for r in rows))
    for i, method in enumerate(methods):
        mine = sorted((r for r in rows if r['method'] == method), key=lambda r: r['encoder_ms'])
        xs, ys = [r['encoder_ms'] for r in mine], [r[task.metric] for r in mine]
        style = 's' if method in points else 'o-'
        ax.plot(xs, ys, style, color=f'C{i}', label=method, markersize=8 if method in points else 5)
        for r in mine:
            label = f"{r['ratio']:.1f}" if r['ratio'] is not None else ''
            if r['input_scale'] != 1.0:
                label = f"x{r['input_scale']}"
            if label:
                ax.annotate(label, (r['encoder_ms'], r[task.metric]), fontsize=7, xytext=(3, 3),
                            textcoords='offset points')
    ax.set_xlabel('image-encoder latency (ms, measured, interleaved medians)')
    ax.set_ylabel(f'{task.metric} (synthetic val)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def ablate_window_vs_token(task: Task, ev: Evaluator, args: argparse.Namespace) -> Outcome:
    ratios = [0.0, *args.ratios]
    window, token = task.model('adapt'), task.model('token')
    rows = ratio_rows(task, ev, {'window (SparseViT)': (window, ratios), 'token (DynamicTokenSwin)': (token, ratios)},
                      {}, args.timing_repeats)
    matched = matched_rows(task, rows, 'window (SparseViT)', ['token (DynamicTokenSwin)'])
    matched += matched_rows(task, rows, 'token (DynamicTokenSwin)', ['window (SparseViT)'])
    notes = ['Both fine-tuned from the same dense checkpoint with the same adaptation recipe (SparsityAdaptationHook '
             'sampling per-group ratios 0-0.8, same iterations and schedule); evaluated at uniform ratios.',
             'Matched latency: the other method\'s accuracy linearly interpolated between its two measured ratios '
             'around that latency on its own curve (a dash outside its measured range).']
    return Outcome(rows, matched, (row_table(task, rows)[0], matched_table(task, matched, 'other method')[0]), notes,
                   lambda p: plot_curves(task, rows, p, 'window vs token pruning (same adaptation budget)'))


def ablate_resolution(task: Task, ev: Evaluator, args: argparse.Namespace) -> Outcome:
    ratios = [0.0, *args.ratios]
    adapt, dense = task.model('adapt'), task.model('dense')
    extra = {}
    for scale in [1.0, *sorted(args.scales, reverse=True)]:
        tuned = args.finetune_iters > 0 and scale != 1.0
        model = task.model(f'lowres-{scale}-{args.finetune_iters}') if tuned else dense
        extra[f'dense x{scale} input'] = ('dense, lower input', model, 0.0, scale)
    rows = ratio_rows(task, ev, {'SparseViT (full input)': (adapt, ratios)}, extra, args.timing_repeats)
    matched = matched_rows(task, rows, 'SparseViT (full input)', ['dense, lower input'])
    how = ('evaluated only, with the dense weights trained at the full size' if args.finetune_iters == 0 else
           f'fine-tuned at each lower size for {args.finetune_iters} iterations from the dense checkpoint')
    notes = [f'The dense model at a lower input is {how}; SparseViT is the adapted checkpoint at uniform ratios.',
             'Matched latency: SparseViT\'s accuracy interpolated on its accuracy-latency curve at the lower-input '
             'model\'s measured latency.']
    return Outcome(rows, matched, (row_table(task, rows)[0], matched_table(task, matched, 'SparseViT')[0]), notes,
                   lambda p: plot_curves(task, rows, p, 'SparseViT (full input) vs dense at lower input',
                                         points=['dense, lower input']))


def ablate_width(task: Task, ev: Evaluator, args: argparse.Namespace) -> Outcome:
    ratios = [0.0, *args.ratios]
    adapt, dense = task.model('adapt'), task.model('dense')
    extra = {'dense x1.0 width': ('dense, narrower', dense, 0.0, 1.0)}
    for scale in sorted(args.widths, reverse=True):
        extra[f'dense x{scale} width'] = ('dense, narrower', task.model(f'width-{scale}'), 0.0, 1.0)
    rows = ratio_rows(task, ev, {'SparseViT (full width)': (adapt, ratios)}, extra, args.timing_repeats)
    matched = matched_rows(task, rows, 'SparseViT (full width)', ['dense, narrower'])
    notes = ['The narrower dense models are trained from scratch with the dense recipe (same iterations, depths '
             'and head counts; channels rounded to a multiple of the first stage\'s heads).',
             'Matched latency: SparseViT\'s accuracy interpolated on its accuracy-latency curve at the narrower '
             'model\'s measured latency.']
    return Outcome(rows, matched, (row_table(task, rows)[0], matched_table(task, matched, 'SparseViT')[0]), notes,
                   lambda p: plot_curves(task, rows, p, 'SparseViT (full width) vs narrower dense models',
                                         points=['dense, narrower']))


def search_options(task: Task, args: argparse.Namespace, work_dir: Path, table: Path, latency_ratio: float,
                   seed: int = 0) -> Any:
    from projects.sparsevit_bevdet.search import SearchOptions

    quick = args.quick
    return SearchOptions(
        latency_ratio=latency_ratio, metric=task.metric, population=args.population, parents=args.parents,
        generations=args.generations, rescore_top=1, uniform_ratios=[], cache_inputs=True, seed=seed,
        random_seed=seed + 1000, table_repeats=1 if quick else 5, calibration_repeats=1 if quick else 5,
        check_samples=0, final_repeats=2 if quick else 7, threads=args.threads, work_dir=str(work_dir),
        latency_table=str(table))


class Searches:
    """run_search on the adapted detector (one runner, one latency table); each finished search cached."""

    def __init__(self, task: Task, ev: Evaluator, work_dir: Path) -> None:
        self.task, self.ev, self.work_dir = task, ev, work_dir
        self.model = task.model('adapt')
        self._runner = None

    def run(self, name: str, options: Any) -> dict:
        def compute() -> dict:
            from projects.sparsevit_bevdet.search import build_search_runner, run_search

            cfg = self.model.make_cfg(1.0, self.work_dir / 'runner')
            if self._runner is None:
                self._runner = build_search_runner(cfg, str(self.model.checkpoint), self.work_dir / 'runner')
            report = run_search(cfg, str(self.model.checkpoint), options, runner=self._runner)
            return dict(record=report.record, evolution=[e.to_json() for e in report.evolution.history],
                        random=[e.to_json() for e in report.random.history])

        return self.ev.cache.get(name, dict(model=self.model.key, options=options.to_json()), compute)


def ablate_uniform(task: Task, ev: Evaluator, args: argparse.Namespace) -> Outcome:
    ratios = [0.0, *args.ratios]
    adapt = task.model('adapt')
    out_dir = args.work_dir / 'uniform'
    from projects.sparsevit_bevdet.search.runner import BudgetInfeasibleError

    searches = Searches(task, ev, out_dir)
    extra = {}
    picks = {}
    infeasible = []
    for budget in args.budgets:
        options = search_options(task, args, out_dir / f'search-{budget}', out_dir / 'latency_table.json', budget)
        print(f'search at {budget} x dense ({args.population} x {args.generations} evaluations, and as many random)')
        try:
            picks[budget] = searches.run(f'search-{budget}', options)['record']
        except BudgetInfeasibleError as err:  # the other budgets still make a comparison
            print(f'budget {budget} x dense skipped: {err}')
            infeasible.append(f'Budget {budget} x dense: no configuration of the search space fits ({err}).')
            continue
        extra[f'searched, budget {budget}'] = ('searched (evolution)', adapt, picks[budget]['pruning_ratios'], 1.0)
    if not picks:
        raise BudgetInfeasibleError(f'uniform: every budget ({args.budgets} x dense) is infeasible: '
                                    + ' '.join(infeasible))
    rows = ratio_rows(task, ev, {'uniform': (adapt, ratios)}, extra, args.timing_repeats)
    for row in rows:
        if row['method'] == 'searched (evolution)':
            budget = float(row['config'].rsplit(' ', 1)[1])
            row.update(budget=budget, meets_budget=row['x_dense'] <= budget,
                       search_measured_ratio=picks[budget]['measured_ratio'])
    matched = matched_rows(task, rows, 'uniform', ['searched (evolution)'])
    notes = ['Searched: the evolutionary search\'s pick (run_search, calibrated latency table) at each budget, '
             'scored again with the other rows; uniform: the same adapted checkpoint at uniform ratios.',
             'Matched latency: the uniform curve interpolated at the searched configuration\'s measured latency.',
             *infeasible]
    return Outcome(rows, matched, (row_table(task, rows)[0], matched_table(task, matched, 'uniform')[0]), notes,
                   lambda p: plot_curves(task, rows, p, 'searched non-uniform vs uniform ratios',
                                         points=['searched (evolution)']))


def best_so_far(history: list[dict]) -> list[float]:
    out, best = [], -math.inf
    for entry in history:
        best = max(best, entry['score'])
        out.append(best)
    return out


def ablate_search(task: Task, ev: Evaluator, args: argparse.Namespace) -> Outcome:
    out_dir = args.work_dir / 'search'
    searches = Searches(task, ev, out_dir)
    curves: dict[str, list[list[float]]] = {'evolution': [], 'random': []}
    finals = []
    for seed in range(args.seeds):
        options = search_options(task, args, out_dir / f'seed-{seed}', out_dir / 'latency_table.json',
                                 args.latency_ratio, seed)
        print(f'seed {seed + 1}/{args.seeds}: evolution ({args.population} x {args.generations}) and random search')
        result = searches.run(f'seed-{seed}', options)
        for method in curves:
            curves[method].append(best_so_far(result[method]))
        record = result['record']
        finals.append(dict(seed=seed, evolution=record['evolution']['score'], random=record['random']['score'],
                           evolution_measured_ratio=record['evolution']['measured_ratio'],
                           random_measured_ratio=record['random']['measured_ratio']))
    count = min(len(c) for runs in curves.values() for c in runs)
    stats = {m: [[run[i] for run in runs] for i in range(count)] for m, runs in curves.items()}
    steps = sorted({args.population * g for g in range(1, args.generations + 1) if args.population * g <= count}
                   | {count})
    rows = []
    for n in steps:
        row: dict[str, Any] = dict(config=f'{n} evaluations', evaluations=n)
        for method, values in stats.items():
            v = values[n - 1]
            row.update({f'{method}_mean': sum(v) / len(v), f'{method}_min': min(v), f'{method}_max': max(v)})
        row['difference_mean'] = row['evolution_mean'] - row['random_mean']
        rows.append(row)

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        from projects.sparsevit_bevdet.utils.atomic_io import atomic_save_figure

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = list(range(1, count + 1))
        for i, (method, values) in enumerate(stats.items()):
            ax.plot(xs, [sum(v) / len(v) for v in values], color=f'C{i}', label=f'{method} (mean of {args.seeds})')
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=f'C{i}', alpha=0.2,
                            label=f'{method} (range)')
        ax.set_xlabel('evaluations')
        ax.set_ylabel(f'best {task.metric} so far (within the budget)')
        ax.set_title(f'evolutionary vs random search, budget {args.latency_ratio} x dense', fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_save_figure(fig, path)

    notes = [f'Scores on the full validation split, every candidate within the budget ({args.latency_ratio} x the '
             f'measured dense encoder by the calibrated latency table); random search gets as many evaluations as '
             f'the evolution; seeds 0..{args.seeds - 1} (random search seeds + 1000).']
    headers = ['evaluations', 'evolution mean', 'evolution min', 'evolution max', 'random mean', 'random min',
               'random max', 'evolution - random (mean)']
    return Outcome(rows, finals, (headers, ['seed', 'evolution final (full split)', 'random final (full split)',
                                            'evolution measured x dense', 'random measured x dense']), notes, plot)


ABLATION_FUNCTIONS = {
    'window-vs-token': ablate_window_vs_token,
    'resolution': ablate_resolution,
    'width': ablate_width,
    'uniform': ablate_uniform,
    'search': ablate_search,
}


def table_cells(ablation: str, task: Task, outcome: Outcome) -> tuple[list[list[Any]], list[list[Any]]]:
    if ablation == 'search':
        rows = [[r['evaluations'], r['evolution_mean'], r['evolution_min'], r['evolution_max'], r['random_mean'],
                 r['random_min'], r['random_max'], r['difference_mean']] for r in outcome.rows]
        finals = [[f['seed'], f['evolution'], f['random'], f['evolution_measured_ratio'], f['random_measured_ratio']]
                  for f in outcome.matched]
        return rows, finals
    return row_table(task, outcome.rows)[1], matched_table(task, outcome.matched, '')[1]


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    import torch

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin)
    from projects.sparsevit_bevdet.engine.ablation import markdown_table
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json, atomic_write_text
    from projects.sparsevit_bevdet.utils.timing import cpu_name
    from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out_dir = args.work_dir / args.ablation
    with WorkDirLock(args.work_dir, f'tools/ablate.py {args.ablation}'):  # one ablation per work dir at a time
        task = CocoTask(args) if args.task == 'coco' else NuScenesTask(args)
        ev = Evaluator(task)
        outcome = ABLATION_FUNCTIONS[args.ablation](task, ev, args)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows, matched = table_cells(args.ablation, task, outcome)
        second = 'final picks per seed' if args.ablation == 'search' else 'at matched latency'
        text = (f'## {args.ablation} ({args.task}, {task.metric})\n\n' + markdown_table(outcome.headers[0], rows)
                + f'\n\n{second}:\n\n' + markdown_table(outcome.headers[1], matched) + '\n\n'
                + '\n'.join(f'- {n}' for n in outcome.notes) + '\n')
        print('\n' + text)
        atomic_write_text(out_dir / 'table.md', text)
        outcome.plot(out_dir / 'plot.png')
        result = dict(ablation=args.ablation, task=args.task, metric=task.metric, metrics=list(task.metrics),
                      command=' '.join(['tools/ablate.py', *(sys.argv[1:] if argv is None else argv)]),
                      machine=dict(cpu=cpu_name(), cpus=os.cpu_count(), threads=args.threads),
                      quick=args.quick, timing_repeats=args.timing_repeats, rows=outcome.rows,
                      matched=outcome.matched, notes=outcome.notes,
                      cache=dict(reused=ev.cache.reused, computed=ev.cache.computed),
                      wall_s=time.perf_counter() - start)
        atomic_write_json(out_dir / 'results.json', result, indent=1)
    for name in ('table.md', 'results.json', 'plot.png'):
        print(f'wrote {out_dir / name}')
    print(f'done in {result["wall_s"]:.0f} s ({ev.cache.reused} cached rows reused, {ev.cache.computed} computed)')
    return result


if __name__ == '__main__':
    main()
