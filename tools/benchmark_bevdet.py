"""Whole-BEVDet latency from the images and camera matrices to CenterHead's raw outputs, dense vs sparse.

Times ``BEVDet.head_outputs`` (image encoder, neck, LSS view transform, BEV encoder, CenterHead's convolutions;
decoding and NMS are not included) for every pruning setting, interleaved round-robin (medians), in each mode:

* ``eager``: PyTorch eager;
* ``graph``: CUDA only, the forward replayed as captured CUDA graphs (``BEVDet(cuda_graphs=True)``, one graph per
  pruning setting), captured during the warm-up rounds.

The view transformer runs with ``static_geometry=True`` in both modes (every frustum point splatted, no host
synchronisation), so eager and graph compute the same thing and the cost does not depend on the matrices. On
CUDA each row also has ``event_ms`` (back-to-back calls timed by CUDA events) and ``--profile`` adds the top
kernels of the dense and the sparsest setting.

Input: random images of ``--batch`` samples x 6 cameras at the config's ``input_size`` and the camera rig of
the synthetic nuScenes (nuScenes' rig: intrinsics, mounting, the 900 x 1600 -> input resize and crop).

Examples::

    python tools/benchmark_bevdet.py --device cuda --dtype float16 --modes eager graph --ratios 0 0.6 \\
        --searched work_dirs/search/best.json --json work_dirs/bench/bevdet_whole.json
    python tools/benchmark_bevdet.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py --device cpu
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_CONFIG = ROOT / 'configs/bevdet/bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py'
SOURCE_SIZE = (900, 1600)  # nuScenes' camera images (H, W)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from projects.sparsevit_bevdet.utils.entrypoint import check_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', default=str(DEFAULT_CONFIG),
                        help='a BEVDet config (default: the full-size Swin-T recipe at 256 x 704)')
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--dtype', choices=('float32', 'float16', 'bfloat16'), default='float32',
                        help='CUDA: autocast dtype over float32 weights (as mmengine runs fp16=True); CPU: float32')
    parser.add_argument('--modes', nargs='+', choices=('eager', 'graph'), default=['eager'])
    parser.add_argument('--batch', type=int, default=1, help='samples (each of 6 cameras)')
    parser.add_argument('--ratios', type=float, nargs='+', default=[0.0, 0.6], help='uniform ratios (0 is added)')
    parser.add_argument('--searched', default=None,
                        help="a ratios file (tools/search.py's best.json) or JSON list, timed as 'searched'")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--profile', action='store_true', help='CUDA: top kernels of the dense and sparsest rows')
    parser.add_argument('--json', type=Path, help='write the table as JSON here')
    args = parser.parse_args(argv)
    check_file(parser, args.config, 'config file')
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or args.threads < 1:
        parser.error('--repeats, --batch and --threads must be >= 1, --warmup >= 0')
    if any(not 0.0 <= r < 1.0 for r in args.ratios):
        parser.error(f'--ratios must be in [0, 1), got {args.ratios}')
    if args.device == 'cpu' and 'graph' in args.modes:
        parser.error('--modes graph replays CUDA graphs: it needs --device cuda')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but torch.cuda.is_available() is False')
    args.settings = [(f'r={r:.2f}', r) for r in sorted({0.0, *args.ratios})]
    if args.searched is not None:
        from projects.sparsevit_bevdet.utils.searched_ratios import read_pruning_ratios

        try:
            args.settings.append(('searched', read_pruning_ratios(args.searched)))
        except (OSError, ValueError) as err:
            parser.error(f'--searched: {err}')
    return args


def nuscenes_rig(input_size: tuple[int, int], num_cams: int = 6) -> dict[str, np.ndarray]:
    """``(N, 4, 4)`` cam2img, cam2ego and img_aug_matrix of the synthetic nuScenes rig, resized and cropped from
    900 x 1600 to ``input_size`` (H, W) as BEVDet's test-time augmentation does (fit the width, crop the top)."""
    from projects.sparsevit_bevdet.datasets.nuscenes_format import CAMERA_NAMES
    from projects.sparsevit_bevdet.synthetic.nuscenes.world import _make_rig

    cams = _make_rig(np.random.default_rng(0), SOURCE_SIZE)[:num_cams]
    assert [c.name for c in cams] == list(CAMERA_NAMES)[:num_cams]
    cam2img, cam2ego = np.tile(np.eye(4), (num_cams, 1, 1)), np.tile(np.eye(4), (num_cams, 1, 1))
    for i, cam in enumerate(cams):
        cam2img[i, :3, :3] = cam.intrinsic
        cam2ego[i, :3, :3], cam2ego[i, :3, 3] = cam.rotation, cam.translation
    h, w = input_size
    scale = w / SOURCE_SIZE[1]
    aug = np.diag([scale, scale, 1.0, 1.0])
    aug[1, 3] = -(round(SOURCE_SIZE[0] * scale) - h)  # crop the top rows
    return dict(cam2img=cam2img, cam2ego=cam2ego, img_aug_matrix=np.tile(aug, (num_cams, 1, 1)))


def build_detector(config: str) -> torch.nn.Module:
    """The config's BEVDet with the static view-transform geometry, random weights, in eval mode."""
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.sparsevit_bevdet  # noqa: F401  (registers modules)

    cfg = Config.fromfile(config)
    if cfg.model.get('type') != 'BEVDet':
        raise ValueError(f'{config}: model.type is {cfg.model.get("type")!r}; this tool times BEVDet configs')
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    cfg.model.img_view_transformer.static_geometry = True
    cfg.model.img_backbone.pop('init_cfg', None)  # random weights: timing does not depend on them
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def measure(args: argparse.Namespace) -> dict:
    from mmengine.utils import ProgressBar

    from projects.sparsevit_bevdet.engine import find_image_encoder
    from projects.sparsevit_bevdet.models.bevdet import VIEW_MATRICES
    from projects.sparsevit_bevdet.utils.timing import cpu_name, cuda_event_ms, interleaved_times, top_cuda_kernels

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if device.type == 'cuda' else torch.float32
    base = build_detector(args.config).to(device)
    input_size = tuple(base.img_view_transformer.input_size)
    rig = nuscenes_rig(input_size)
    num_cams = rig['cam2img'].shape[0]
    mats = {k: torch.as_tensor(np.stack([rig[k]] * args.batch), dtype=torch.float32, device=device)
            for k in VIEW_MATRICES if k in rig}
    mats['bev_aug_matrix'] = torch.eye(4, device=device).repeat(args.batch, 1, 1)
    imgs = torch.randn(args.batch, num_cams, 3, *input_size, device=device)
    inputs = (imgs, *(mats[k] for k in VIEW_MATRICES))

    # one copy per (setting, mode): each keeps its own ratios and captured graph, so no call re-sets anything
    runners: dict[str, Callable[[], Any]] = {}
    meta: dict[str, tuple[str, str, Any]] = {}
    for label, spec in args.settings:
        for mode in args.modes:
            model = copy.deepcopy(base)
            find_image_encoder(model).set_pruning_ratios(spec)
            model.cuda_graphs = mode == 'graph'
            name = f'{label} {mode}'
            runners[name] = (lambda m=model: m.head_outputs(*inputs))
            meta[name] = (label, mode, spec)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    autocast = torch.autocast('cuda', dtype=dtype) if dtype != torch.float32 else torch.autocast('cpu', enabled=False)
    with torch.inference_mode(), autocast:
        print(f'[{device.type}] warm-up {args.warmup} + {args.repeats} interleaved rounds of {len(runners)} variants')
        bar = ProgressBar(args.warmup + args.repeats)
        times = interleaved_times(runners, args.repeats, args.warmup, sync=sync, on_round=bar.update)
        print()
        event_ms, kernels = {}, {}
        if device.type == 'cuda':
            sparsest = args.settings[-1][0] if args.searched is None else args.settings[-2][0]
            for name, (label, _, _) in meta.items():
                event_ms[name] = cuda_event_ms(runners[name], args.repeats)
                if args.profile and label in ('r=0.00', sparsest):
                    kernels[name] = top_cuda_kernels(runners[name])
    rows = []
    for name, (label, mode, spec) in meta.items():
        t = torch.tensor(times[name])
        row = dict(variant=name, setting=label, mode=mode, ratio=spec, dtype=str(dtype).replace('torch.', ''),
                   median_ms=1e3 * t.quantile(0.5).item(), p25_ms=1e3 * t.quantile(0.25).item(),
                   p75_ms=1e3 * t.quantile(0.75).item(), runs=len(times[name]))
        if name in event_ms:
            row['event_ms'] = event_ms[name]
        if name in kernels:
            row['top_kernels'] = kernels[name]
        rows.append(row)
    dense = {r['mode']: r for r in rows if r['setting'] == 'r=0.00'}
    for row in rows:
        ref = dense[row['mode']]
        row['vs_dense'] = row['median_ms'] / ref['median_ms']
        if 'event_ms' in row:
            row['event_vs_dense'] = row['event_ms'] / ref['event_ms']
    env = dict(device=device.type, cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__)
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    title = (f'BEVDet head outputs, {args.batch} x {num_cams} x 3 x {input_size[0]} x {input_size[1]}, '
             f'{Path(args.config).name}, {env.get("gpu", env["cpu"])}, torch {torch.__version__}')
    return dict(title=title, env=env, args=json.loads(json.dumps(vars(args), default=str)), rows=rows)


def markdown_table(payload: dict) -> str:
    def fmt(value: Any, digits: int = 1) -> str:
        return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'

    lines = ['| setting | mode | dtype | median ms | p25-p75 ms | vs dense | CUDA-event ms | vs dense (events) |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in payload['rows']:
        lines.append(f"| {r['setting']} | {r['mode']} | {r['dtype']} | {fmt(r['median_ms'])} | "
                     f"{fmt(r['p25_ms'])}-{fmt(r['p75_ms'])} | {fmt(r['vs_dense'], 3)} | {fmt(r.get('event_ms'))} | "
                     f"{fmt(r.get('event_vs_dense'), 3)} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = measure(args)
    print(payload['title'])
    print(markdown_table(payload))
    if args.json:
        from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

        atomic_write_json(args.json, payload, indent=2)
        print(f'wrote {args.json}')
    return payload


if __name__ == '__main__':
    main()
