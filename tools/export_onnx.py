"""Export the SparseViT image encoder of a config to ONNX at fixed pruning ratios and check it in onnxruntime.

Only the image encoder is exported: ``model.img_backbone`` of BEVDet configs, ``model.backbone`` of mmdet /
mmseg configs (the rest of BEVDet, the LSS view transform with its per-sample camera matrices and
CenterHead's box decoding, is not). The graph is fixed to the ``--shape`` input and the ratios; which windows
are kept stays computed from each input in the graph. After the export the model runs in onnxruntime on
the export input and on a second random input, and its outputs must equal PyTorch's (max abs <= --tolerance,
printed); only then is the file written (atomically: a temporary file renamed into place).

Examples::

    python tools/export_onnx.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_adapt.py \\
        work_dirs/adapt/iter_150.pth --pruning-ratios work_dirs/search/best.json \\
        --shape 6 3 128 352 --out work_dirs/onnx/encoder.onnx
    python tools/export_onnx.py configs/coco/mask-rcnn_sparsevit-t_fpn_672_coco.py --pruning-ratios 0.6 \\
        --shape 1 3 672 672 --out work_dirs/onnx/mask-rcnn_r60.onnx --benchmark 20 --threads 2

Without CHECKPOINT the encoder gets random (seeded) weights, enough for checking the export and for latency;
the config's ``init_cfg`` (e.g. ImageNet weights from a URL) is not loaded.
``--benchmark N`` also exports the encoder at ratio 0 and times onnxruntime and PyTorch eager, dense and at
the given ratios, interleaved over N rounds; it prints the medians and the sparse / dense ratio of each.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

# Importing the plugin installs safe (weights_only) checkpoint loading before the checkpoint is read.
import projects.sparsevit_bevdet  # noqa: E402,F401
from projects.sparsevit_bevdet.backbones import SparseViT  # noqa: E402
from projects.sparsevit_bevdet.backbones.onnx_export import (  # noqa: E402
    export_onnx,
    max_abs_errors,
    onnxruntime_session,
    run_onnxruntime,
)
from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_bytes  # noqa: E402
from projects.sparsevit_bevdet.utils.checkpoint_fit import (  # noqa: E402
    CheckpointMismatchError,
    check_state_dict_fits,
    state_dict_of,
)
from projects.sparsevit_bevdet.utils.entrypoint import check_file  # noqa: E402
from projects.sparsevit_bevdet.utils.safe_checkpoint import (  # noqa: E402
    CheckpointSecurityError,
    CorruptCheckpointError,
)
from projects.sparsevit_bevdet.utils.searched_ratios import apply_pruning_ratios  # noqa: E402
from projects.sparsevit_bevdet.utils.timing import interleaved_times, median_ms  # noqa: E402

ENCODER_KEYS = ('img_backbone', 'backbone')  # BEVDet; mmdet / mmseg


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmengine config whose model.img_backbone (or model.backbone) is a SparseViT')
    parser.add_argument('checkpoint', nargs='?', help='runner checkpoint of the whole model (loaded weights-only)')
    parser.add_argument('--pruning-ratios', metavar='JSON_OR_VALUE',
                        help="tools/search.py's best.json (or any JSON file with the ratios) or a literal such as "
                        "0.6 or '[[0.3, 0.3], [0, 0], [...], [...]]'; default: the config's")
    parser.add_argument('--shape', type=int, nargs=4, required=True, metavar=('N', 'C', 'H', 'W'),
                        help='input shape the graph is made for (BEVDet: cameras x 3 x height x width)')
    parser.add_argument('--out', type=Path, required=True, help='the .onnx file to write')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted max |onnxruntime - PyTorch| of any output (default 1e-4)')
    parser.add_argument('--benchmark', type=int, default=0, metavar='N',
                        help='time onnxruntime and PyTorch eager, dense vs the ratios, over N interleaved rounds')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds before --benchmark')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads of torch and onnxruntime (default: torch\'s current count)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random inputs')
    args = parser.parse_args(argv)
    check_file(parser, args.config, 'config file')
    if args.checkpoint is not None:
        check_file(parser, args.checkpoint, 'checkpoint')
    if any(v < 1 for v in args.shape):
        parser.error(f'--shape values must be positive, got {args.shape}')
    if args.out.is_dir():
        parser.error(f'--out {args.out} is a directory; give the .onnx file to write')
    if args.benchmark < 0 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error('--benchmark and --warmup must be >= 0, --threads >= 1')
    if not args.tolerance > 0:
        parser.error(f'--tolerance must be > 0, got {args.tolerance}')
    return args


def build_encoder(cfg: Config) -> tuple[SparseViT, str]:
    """The config's SparseViT image encoder (not initialised) and its key in ``model``.

    Raises:
        ValueError: the model has no image backbone, or it is not a SparseViT.
    """
    model = cfg.get('model') or {}
    key = next((k for k in ENCODER_KEYS if model.get(k) is not None), None)
    if key is None:
        raise ValueError(f'the config has no model.{" or model.".join(ENCODER_KEYS)}')
    kwargs = copy.deepcopy(dict(model[key]))
    type_name = str(kwargs.pop('type', ''))
    if type_name.split('.')[-1] != 'SparseViT':
        raise ValueError(f"tools/export_onnx.py exports SparseViT encoders; model.{key} has type={type_name!r}")
    return SparseViT(**kwargs), key


def load_encoder_weights(encoder: SparseViT, checkpoint: str, key: str) -> None:
    """Load the ``<key>.*`` weights of a runner checkpoint through mmengine's (safe) checkpoint loaders.

    Raises:
        ValueError: the checkpoint has no such weights, or they do not fit the encoder.
    """
    from mmengine.runner import CheckpointLoader

    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state_dict = state_dict_of(loaded, checkpoint)
    prefix = f'{key}.'
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not weights:
        heads = sorted({k.split('.', 1)[0] for k in state_dict})
        raise ValueError(f'{checkpoint} has no {prefix}* weights (the model.{key} of this config); '
                         f'its top-level names are {heads[:8]}')
    # names and shapes, with the same report as tools/test.py and tools/search.py (no partial export)
    check_state_dict_fits(encoder, weights, f'the {prefix}* weights of {checkpoint}')
    encoder.load_state_dict(weights, strict=False)  # num_batches_tracked-like counters may be absent


def example_inputs(shape: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The export input and a second input (other values, so other kept windows), both standard normal."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator)


def benchmark(encoder: SparseViT, images: torch.Tensor, sparse_model: bytes, dense_model: bytes, rounds: int,
              warmup: int, threads: int, seed: int) -> dict[str, dict[str, float]]:
    """Interleaved medians (ms) of onnxruntime (the two exported models) and PyTorch eager, dense and at the
    encoder's ratios."""
    ratios = encoder.pruning_ratios
    sessions = {setting: onnxruntime_session(model, threads)
                for setting, model in (('dense', dense_model), ('sparse', sparse_model))}
    configs = {'dense': 0.0, 'sparse': ratios}

    def eager(setting: str) -> None:
        encoder.set_pruning_ratios(configs[setting])
        encoder(images)

    variants = {}
    for setting in ('dense', 'sparse'):
        variants[f'onnxruntime {setting}'] = lambda s=setting: run_onnxruntime(sessions[s], images)
        variants[f'pytorch {setting}'] = lambda s=setting: eager(s)
    try:
        with torch.inference_mode():
            times = interleaved_times(variants, rounds, warmup, seed)
    finally:
        encoder.set_pruning_ratios(ratios)
    result = {}
    for backend in ('onnxruntime', 'pytorch'):
        dense, sparse = median_ms(times[f'{backend} dense']), median_ms(times[f'{backend} sparse'])
        result[backend] = dict(dense_ms=dense, sparse_ms=sparse, sparse_vs_dense=sparse / dense)
    return result


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Export, verify, write; returns the output path, the errors and the benchmark (if asked)."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    try:
        cfg = Config.fromfile(args.config)
        apply_pruning_ratios(cfg, args.pruning_ratios)
        encoder, key = build_encoder(cfg)
        if args.checkpoint is not None:
            load_encoder_weights(encoder, args.checkpoint, key)
        else:
            print('no checkpoint given: random encoder weights (the config\'s init_cfg is not loaded)')
            torch.manual_seed(args.seed)
            encoder.init_cfg = None
            encoder.init_weights()
        in_channels = encoder.patch_embed.projection.in_channels
        if args.shape[1] != in_channels:
            raise ValueError(f'--shape has {args.shape[1]} channels, the encoder takes {in_channels}')
    except (ValueError, TypeError, KeyError, FileNotFoundError, CheckpointSecurityError,
            CorruptCheckpointError, CheckpointMismatchError) as err:
        raise SystemExit(f'export_onnx.py: error: {err}') from err
    encoder.eval()
    images, other = example_inputs(args.shape, args.seed)
    print(f'exporting model.{key} (SparseViT, ratios {encoder.pruning_ratios}) for input {tuple(args.shape)}')
    model = export_onnx(encoder, images, [f'stage{i}' for i in encoder.out_indices])
    session = onnxruntime_session(model, threads)
    errors = {}
    with torch.no_grad():
        for name, x in (('export input', images), ('another input', other)):
            errors[name] = max_abs_errors(run_onnxruntime(session, x), encoder(x))
            print(f'onnxruntime vs PyTorch, {name}: max abs error per output '
                  + ', '.join(f'{e:.2e}' for e in errors[name]))
    worst = max(max(e) for e in errors.values())
    if worst > args.tolerance:
        raise SystemExit(f'export_onnx.py: error: onnxruntime differs from PyTorch by {worst:.2e} > '
                         f'--tolerance {args.tolerance:g}; {args.out} not written')
    atomic_write_bytes(args.out, model)
    print(f'wrote {args.out} ({len(model) / 2 ** 20:.1f} MiB)')
    summary: dict[str, Any] = dict(out=str(args.out), max_abs_error=errors)
    if args.benchmark:
        ratios = encoder.pruning_ratios
        dense_model = model
        if any(r > 0 for stage in ratios for r in stage):
            encoder.set_pruning_ratios(0.0)
            try:
                dense_model = export_onnx(encoder, images)
            finally:
                encoder.set_pruning_ratios(ratios)
        print(f'benchmark: {args.warmup} + {args.benchmark} interleaved rounds, {threads} threads')
        summary['benchmark'] = benchmark(encoder, images, model, dense_model, args.benchmark, args.warmup, threads,
                                         args.seed)
        print(f"{'backend':13} {'dense ms':>10} {'sparse ms':>10} {'sparse/dense':>13}")
        for backend, row in summary['benchmark'].items():
            print(f"{backend:13} {row['dense_ms']:10.1f} {row['sparse_ms']:10.1f} {row['sparse_vs_dense']:13.3f}")
    return summary


if __name__ == '__main__':
    main()
