"""Whole-model latency of a detector / segmentor with a SparseViT backbone, dense vs sparse, interleaved.

Builds the model of CONFIG (mmdet, mmseg or mmdet3d: the config's ``default_scope`` decides), optionally
loads CHECKPOINT, and times ``predict`` on one input for every pruning setting, round-robin with a shuffled
order per round (medians). The backbone's own time is read within the same calls (forward hooks), so each
row gives the encoder and the whole model.

Settings: ``--ratios`` (uniform, must include 0) and ``--configs`` (the per-block ``pruning_ratios`` of other
configs' SparseViT backbones, e.g. the paper's three Mask R-CNN configurations).

Input: ``--shape B C H W`` random images for mmdet / mmseg configs, or ``--from-dataset``: the first batch of
the config's test dataloader (needed for BEVDet, whose camera matrices come from the data).

With random weights (no CHECKPOINT) the number of detections a detector keeps after its score threshold is
arbitrary, so heads that run per detection (Mask R-CNN's mask head) do an arbitrary amount of work; the tool
prints the counts. Give a trained checkpoint, or fix that work: ``--cfg-options model.test_cfg.rcnn.score_thr=0``
makes Mask R-CNN keep ``max_per_img`` (100) detections in every setting.

Examples::

    python tools/benchmark_model.py configs/coco/mask-rcnn_sparsevit-t_fpn_672_coco.py --shape 1 3 672 672 \\
        --cfg-options model.test_cfg.rcnn.score_thr=0 --ratios 0 \\
        --configs configs/coco/mask-rcnn_sparsevit-t-r30_fpn_672_coco.py \\
        configs/coco/mask-rcnn_sparsevit-t-r60_fpn_672_coco.py configs/coco/mask-rcnn_sparsevit-t-r70_fpn_672_coco.py
    python tools/benchmark_model.py configs/cityscapes/mask2former_sparsevit-l_cityscapes.py \\
        --shape 1 3 1024 2048 --ratios 0 0.6 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import projects.sparsevit_bevdet  # noqa: E402,F401  (safe checkpoint loading, registrations)
from projects.sparsevit_bevdet.utils.searched_ratios import pruning_settings, ratio_label  # noqa: E402
from projects.sparsevit_bevdet.utils.timing import cpu_name  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    from projects.sparsevit_bevdet.utils.entrypoint import check_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None, help='trained weights (default: random init)')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='time the model even if the checkpoint does not fit it (refused without it)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--shape', type=int, nargs=4, metavar=('B', 'C', 'H', 'W'), help='random input images')
    source.add_argument('--from-dataset', action='store_true', help="the first batch of the config's test dataloader")
    parser.add_argument('--ratios', type=float, nargs='+', default=[0.0, 0.6])
    parser.add_argument('--configs', type=Path, nargs='+', default=[],
                        help="configs whose SparseViT backbone's per-block pruning_ratios are timed too")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (each runs every setting once)')
    parser.add_argument('--json', type=Path, help='write the table as JSON here')
    parser.add_argument('--markdown', action='store_true', help='also print the table as Markdown')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='key=value overrides of the config')
    args = parser.parse_args(argv)
    check_file(parser, args.config, 'config file')
    if args.checkpoint is not None:
        check_file(parser, args.checkpoint, 'checkpoint')
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error('--repeats and --threads must be >= 1, --warmup >= 0')
    try:
        args.settings = pruning_settings(args.ratios, args.configs)
    except (OSError, ValueError, KeyError) as err:
        parser.error(f'--ratios / --configs: {err}')
    return args


def build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """The model of ``args.config`` in eval mode, its SparseViT backbone and the config."""
    from mmengine.registry import MODELS

    from projects.sparsevit_bevdet.backbones import SparseViT
    from projects.sparsevit_bevdet.utils.checkpoint_fit import load_fitting_checkpoint
    from projects.sparsevit_bevdet.utils.entrypoint import init_scope, load_config

    cfg = load_config(args.config, args.cfg_options, 'none', None)
    init_scope(cfg)
    torch.manual_seed(args.seed)
    # no init_weights(): its init_cfg may name pretrained weights to download; latency does not need them
    model = MODELS.build(cfg.model)
    if args.checkpoint is not None:
        load_fitting_checkpoint(model, args.checkpoint, args.allow_partial_load)
    model.eval()
    backbone = getattr(model, 'img_backbone', None) or getattr(model, 'backbone', None)
    if not isinstance(backbone, SparseViT):
        raise ValueError(f'{args.config}: the model has no SparseViT backbone (model.backbone / model.img_backbone '
                         f'is {type(backbone).__name__})')
    return model, backbone, cfg


def random_inputs(cfg: Any, shape: list[int]) -> tuple[torch.Tensor, list]:
    """Random normalised images ``(B, C, H, W)`` and data samples with the metainfo ``predict`` reads."""
    scope = cfg.get('default_scope')
    b, _, h, w = shape
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample

        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                    scale_factor=(1.0, 1.0))
        samples = [DetDataSample(metainfo=meta) for _ in range(b)]
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample

        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                    padding_size=[0, 0, 0, 0])
        samples = [SegDataSample(metainfo=meta) for _ in range(b)]
    else:
        raise NotImplementedError(f'random inputs are built for mmdet and mmseg configs only (default_scope '
                                  f'{scope!r}); use --from-dataset (BEVDet needs camera matrices from the data)')
    return torch.randn(*shape), samples


def dataset_inputs(cfg: Any, model: torch.nn.Module) -> dict:
    """The first batch of the config's test dataloader, through the model's data preprocessor."""
    from mmengine.runner import Runner

    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    batch = next(iter(Runner.build_dataloader(loader_cfg)))
    with torch.inference_mode():
        return model.data_preprocessor(batch, False)


class EncoderTimer:
    """Seconds spent in the backbone's forward during the last model call (forward pre/post hooks)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        backbone.register_forward_pre_hook(self._begin)
        backbone.register_forward_hook(self._end)

    def _begin(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _end(self, *_: Any) -> None:
        self.seconds = time.perf_counter() - self._start


def measure(args: argparse.Namespace) -> dict:
    from mmengine.utils import ProgressBar

    from projects.sparsevit_bevdet.backbones.complexity import sparsevit_macs
    from projects.sparsevit_bevdet.utils.timing import interleaved_times

    model, backbone, cfg = build_model(args)
    if args.from_dataset:
        data = dataset_inputs(cfg, model)
        inputs, samples = data['inputs'], data['data_samples']
        image_shape = tuple((inputs['imgs'] if isinstance(inputs, dict) else inputs).flatten(0, -4).shape)
    else:
        inputs, samples = random_inputs(cfg, args.shape)
        image_shape = tuple(args.shape)
    timer = EncoderTimer(backbone)
    encoder_s: dict[str, list[float]] = {label: [] for label, _ in args.settings}
    detections: dict[str, int] = {}

    def runner(label: str, spec: object) -> Callable[[], None]:
        def run() -> None:
            backbone.set_pruning_ratios(spec)
            out = model(inputs, samples, mode='predict')
            encoder_s[label].append(timer.seconds)
            detections[label] = _num_predictions(out)
        return run

    runners = {label: runner(label, spec) for label, spec in args.settings}
    print(f'{len(runners)} settings, {args.warmup} warm-up + {args.repeats} interleaved rounds')
    bar = ProgressBar(args.warmup + args.repeats)
    with torch.inference_mode():
        times = interleaved_times(runners, args.repeats, args.warmup, args.seed, on_round=bar.update)
    print()
    rows = []
    for label, spec in args.settings:
        backbone.set_pruning_ratios(spec)
        rows.append(dict(setting=label, ratio=spec, model_ms=1e3 * statistics.median(times[label]),
                         encoder_ms=1e3 * statistics.median(encoder_s[label][args.warmup:]),
                         encoder_gmacs=sparsevit_macs(backbone, image_shape) / 1e9,
                         predictions=detections.get(label)))
    dense = rows[[label for label, _ in args.settings].index(ratio_label(0.0))]
    for row in rows:
        row['model_vs_dense'] = row['model_ms'] / dense['model_ms']
        row['encoder_vs_dense'] = row['encoder_ms'] / dense['encoder_ms']
        row['rest_ms'] = row['model_ms'] - row['encoder_ms']
    return dict(config=args.config, checkpoint=args.checkpoint, input_shape=list(image_shape),
                threads=args.threads, repeats=args.repeats, torch=torch.__version__,
                cpu=cpu_name(), random_weights=args.checkpoint is None, rows=rows)


def _num_predictions(out: Any) -> int | None:
    """Detections kept by the first sample's prediction (None for segmentation outputs)."""
    sample = out[0] if isinstance(out, (list, tuple)) and out else None
    for key in ('pred_instances', 'pred_instances_3d'):
        inst = getattr(sample, key, None) if sample is not None else None
        if inst is not None:
            return len(inst)
    return None


def markdown_table(payload: dict) -> str:
    head = ['setting', 'model ms', 'x dense', 'encoder ms', 'x dense', 'rest ms', 'encoder GMACs', 'predictions']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in payload['rows']:
        lines.append(f"| {r['setting']} | {r['model_ms']:.1f} | {r['model_vs_dense']:.3f} | {r['encoder_ms']:.1f} | "
                     f"{r['encoder_vs_dense']:.3f} | {r['rest_ms']:.1f} | {r['encoder_gmacs']:.1f} | "
                     f"{'-' if r['predictions'] is None else r['predictions']} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = measure(args)
    print(f"{args.config}: input {'x'.join(map(str, payload['input_shape']))}, {args.threads} threads, "
          f"medians of {args.repeats} interleaved rounds")
    for r in payload['rows']:
        print(f"  {r['setting']:45} model {r['model_ms']:9.1f} ms ({r['model_vs_dense']:.3f} x dense)  "
              f"encoder {r['encoder_ms']:9.1f} ms ({r['encoder_vs_dense']:.3f} x)  rest {r['rest_ms']:8.1f} ms")
    counts = {r['predictions'] for r in payload['rows']}
    if payload['random_weights'] and counts != {None}:  # None: no per-detection heads (segmentors)
        print(f'note: random weights (no checkpoint); predictions kept per image: {sorted(counts, key=str)}. Heads '
              f'that run per detection then do a different amount of work than in a trained model; give a checkpoint, '
              f'or fix that work, e.g. --cfg-options model.test_cfg.rcnn.score_thr=0 (Mask R-CNN: the mask head runs '
              f'on max_per_img detections in every setting)')
    if args.markdown:
        print(markdown_table(payload))
    if args.json:
        from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

        atomic_write_json(args.json, payload, indent=2)
        print(f'wrote {args.json}')
    return payload


if __name__ == '__main__':
    main()
