"""Latency of SparseViT at several uniform pruning ratios against mmdet's dense SwinTransformer.

All variants share the same weights and are timed interleaved in one process (round-robin, a
shuffled order each round), so slow drift of the machine affects them alike; the table reports
medians and the spread (25th-75th percentile). Ratios are the point: compare them within one run.

``--modes`` picks how SparseViT runs (each mode at every ratio, all interleaved in one table):

* ``eager``: PyTorch eager;
* ``graph``: CUDA only, replayed CUDA graphs (``SparseViT(cuda_graphs=True)``; mmdet's Swin through the same
  :class:`GraphedModule`, as the row ``mmdet SwinTransformer graph``), captured during the warm-up rounds;
* ``compiled``: ``torch.compile(fullgraph=True)`` (inductor; compiled during the warm-up rounds);
* ``reduce-overhead``: CUDA only, ``torch.compile(mode='reduce-overhead', fullgraph=True)`` (inductor + CUDA graphs);
* ``onnxruntime``: the encoder exported to ONNX at each ratio, run by onnxruntime (CPU, float32).

Each row's ``vs r=0`` is against r=0 of the same mode (the sparse / dense ratio), ``vs eager`` against
eager at the same ratio. On CUDA every row also has ``event_ms``: the mean of ``--repeats`` back-to-back
calls timed by CUDA events (GPU time, with launch gaps but without per-call host synchronisation), and
``--profile`` adds the top kernels (name, calls, GPU ms) of one call of r=0 and r=0.6 per mode.

Examples::

    python tools/benchmark_latency.py --arch tiny --shape 6 3 256 704 --threads 2 \\
        --json work_dirs/bench/latency_cpu.json --plot work_dirs/bench/latency_cpu.png
    python tools/benchmark_latency.py --device cuda --dtype float16 --repeats 50
    python tools/benchmark_latency.py --shape 1 3 672 672 --out-indices 0 1 2 3 --ratios 0 0.6 \\
        --modes eager static compiled --no-mmdet
    python tools/benchmark_latency.py --shape 6 3 256 704 --ratios 0 0.6 --modes eager onnxruntime --no-mmdet
    python tools/benchmark_latency.py --shape 1 3 672 672 --out-indices 0 1 2 3 --ratios 0 0.6 \\
        --configs configs/coco/mask-rcnn_sparsevit-t-r30_fpn_672_coco.py   # per-block ratios of a config

``--configs`` adds the per-block ratios of each config's SparseViT backbone (``model.backbone`` or
``model.img_backbone``, ``pruning_ratios``) as one more variant per mode, named after the config file.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from projects.sparsevit_bevdet.utils.searched_ratios import pruning_settings, ratio_label  # noqa: E402

DENSE = 'mmdet SwinTransformer'
MODES = ('eager', 'graph', 'compiled', 'reduce-overhead', 'onnxruntime')
CUDA_ONLY_MODES = ('graph', 'reduce-overhead')
DENSE_GRAPH = f'{DENSE} graph'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='tiny', choices=['tiny', 'small', 'base', 'large'])
    parser.add_argument('--window-size', type=int, default=7)
    parser.add_argument('--shape', type=int, nargs=4, default=[6, 3, 256, 704], metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--ratios', type=float, nargs='+', default=[0.0, 0.2, 0.4, 0.6, 0.8])
    parser.add_argument('--configs', type=Path, nargs='+', default=[],
                        help="configs whose SparseViT backbone's per-block pruning_ratios are timed too")
    parser.add_argument('--out-indices', type=int, nargs='+', default=[2, 3],
                        help='stages whose outputs are returned (BEVDet uses 2 3)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                        help='auto: CPU, and CUDA too when present')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'],
                        help='CUDA only, as autocast (float32 weights, as mmengine runs fp16 inference; '
                             "mmdet's Swin does not run with half weights); CPU always runs float32")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=7, help='timed rounds (each runs every variant once)')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['eager'],
                        help='how SparseViT runs (see above); onnxruntime: CPU only')
    parser.add_argument('--no-mmdet', action='store_true', help="skip mmdet's dense Swin")
    parser.add_argument('--memory', action='store_true',
                        help='also measure peak memory of one forward per variant (CPU: a subprocess each)')
    parser.add_argument('--profile', action='store_true',
                        help='CUDA: add the top kernels of one call of r=0 and r=0.6 (torch.profiler) per mode')
    parser.add_argument('--json', type=Path, help='write the table as JSON here')
    parser.add_argument('--plot', type=Path, help='write a PNG of latency vs sparsity here')
    parser.add_argument('--markdown', action='store_true', help='also print the table as Markdown')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--_memory-child', dest='memory_child', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--_memory-ratios', dest='memory_ratios', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.settings = pruning_settings(args.ratios, args.configs)
    except (OSError, ValueError, KeyError) as err:
        parser.error(f'--ratios / --configs: {err}')
    if {'compiled', 'reduce-overhead', 'graph'} & set(args.modes) and args.warmup < 1:
        parser.error('--modes compiled / reduce-overhead / graph need --warmup >= 1 (the first call of each ratio '
                     'compiles or captures)')
    if set(CUDA_ONLY_MODES) & set(args.modes) and args.device == 'cpu':
        parser.error(f'--modes {" / ".join(CUDA_ONLY_MODES)} run on CUDA only')
    if 'onnxruntime' in args.modes and args.device == 'cuda':
        parser.error('--modes onnxruntime runs on the CPU only (the onnxruntime package has no CUDA provider)')
    return args


def build_models(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    from mmdet.models.backbones import SwinTransformer

    from projects.sparsevit_bevdet.backbones import SparseViT
    from projects.sparsevit_bevdet.backbones.sparsevit import ARCH_SETTINGS

    torch.manual_seed(args.seed)
    common = dict(ARCH_SETTINGS[args.arch], window_size=args.window_size, drop_path_rate=0.0,
                  out_indices=tuple(args.out_indices))
    sparse = SparseViT(**common)
    sparse.init_weights()
    sparse.eval()
    dense = None
    if not args.no_mmdet:
        dense = SwinTransformer(**common)
        dense.load_state_dict(sparse.state_dict(), strict=True)
        dense.eval()  # on its own line: mmdet's SwinTransformer.train() returns None
    return sparse, dense


def variant_name(label: str, mode: str) -> str:
    return f'SparseViT {label}' + ('' if mode == 'eager' else f' {mode}')


def device_modes(args: argparse.Namespace, device: torch.device) -> list[str]:
    if device.type == 'cpu':
        return [m for m in args.modes if m not in CUDA_ONLY_MODES]
    return [m for m in args.modes if m != 'onnxruntime']


def variants(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, str, object]]:
    """``(name, mode, setting label, ratios)`` of every timed variant (mmdet's Swin: mode 'mmdet', r=0)."""
    modes = device_modes(args, device)
    names = [(variant_name(label, m), m, label, spec) for m in modes for label, spec in args.settings]
    if args.no_mmdet:
        return names
    names.append((DENSE, 'mmdet', ratio_label(0.0), 0.0))
    if 'graph' in modes:
        names.append((DENSE_GRAPH, 'mmdet graph', ratio_label(0.0), 0.0))
    return names


def build_runners(args: argparse.Namespace, device: torch.device, sparse: torch.nn.Module,
                  dense: torch.nn.Module | None, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """A call per variant; each mode has its own copy of the encoder (compiled graphs guard on its attributes)."""
    runners: dict[str, Callable[[], object]] = {}
    modes = device_modes(args, device)
    if dense is not None:
        runners[DENSE] = lambda: dense(x)
        if 'graph' in modes:
            from projects.sparsevit_bevdet.utils.cuda_graphs import GraphedModule

            runners[DENSE_GRAPH] = GraphedModule(dense).__call__
    for mode in modes:
        model = sparse if mode == 'eager' else copy.deepcopy(sparse)
        if mode == 'onnxruntime':
            runners.update(onnxruntime_runners(args, model, x))
            continue
        if mode in ('compiled', 'reduce-overhead'):
            # one graph per ratio; above the recompile limit dynamo would fall back to eager
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       len(args.settings) + 1)
            call = torch.compile(model, fullgraph=True, mode='reduce-overhead' if mode == 'reduce-overhead' else None)
        else:
            model.cuda_graphs = mode == 'graph'
            call = model
        for label, spec in args.settings:
            runners[variant_name(label, mode)] = ratio_runner(model, call, spec, x)
    return runners


def ratio_runner(model: torch.nn.Module, call: Callable, ratio: object, x: torch.Tensor) -> Callable[[], object]:
    """Set ``ratio`` (a float or per-block lists) on ``model``, then run ``call`` (the model or its compiled
    wrapper) on ``x``."""
    def run() -> object:
        model.set_pruning_ratios(ratio)
        return call(x)
    return run


def onnxruntime_runners(args: argparse.Namespace, model: torch.nn.Module,
                        x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The encoder exported at every ratio, each run by an onnxruntime session with ``--threads`` threads."""
    from projects.sparsevit_bevdet.backbones.onnx_export import export_onnx, onnxruntime_session, run_onnxruntime

    runners: dict[str, Callable[[], object]] = {}
    for label, spec in args.settings:
        print(f'[onnxruntime] exporting {label}')
        model.set_pruning_ratios(spec)
        session = onnxruntime_session(export_onnx(model, x), args.threads)
        runners[variant_name(label, 'onnxruntime')] = lambda s=session: run_onnxruntime(s, x)
    return runners


def run_variant(name: str, ratios: object, sparse, dense, x: torch.Tensor) -> None:
    if name == DENSE:
        dense(x)
    else:
        sparse.set_pruning_ratios(ratios)
        sparse(x)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Reduced precision the way mmengine's test loop runs it (``fp16=True``): autocast over float32 weights."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_device(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from mmengine.utils import ProgressBar

    from projects.sparsevit_bevdet.backbones.complexity import sparsevit_macs
    from projects.sparsevit_bevdet.utils.timing import interleaved_times

    sparse, dense = build_models(args)
    dtype = getattr(torch, args.dtype) if device.type == 'cuda' else torch.float32
    sparse.to(device)
    if dense is not None:
        dense.to(device)
    x = torch.randn(*args.shape, device=device)
    names = variants(args, device)
    runners = build_runners(args, device, sparse, dense, x)  # outside inference mode: export traces the model
    with torch.inference_mode(), autocast(device, dtype):
        print(f'[{device.type}] warm-up {args.warmup} + {args.repeats} interleaved rounds of {len(names)} variants')
        bar = ProgressBar(args.warmup + args.repeats)
        times = interleaved_times(runners, args.repeats, args.warmup, args.seed, sync=lambda: sync(device),
                                  on_round=bar.update)
        print()
        event_ms, kernels = {}, {}
        if device.type == 'cuda':
            from projects.sparsevit_bevdet.utils.timing import cuda_event_ms, top_cuda_kernels

            for name, mode, label, _ in names:
                event_ms[name] = cuda_event_ms(runners[name], args.repeats)
                if args.profile and (mode.startswith('mmdet') or label in (ratio_label(0.0), ratio_label(0.6))):
                    kernels[name] = top_cuda_kernels(runners[name])
    rows = []
    dense_label = ratio_label(0.0)
    for name, mode, label, spec in names:
        t = torch.tensor(times[name])
        # ratio: the uniform ratio, or the per-block lists of a --configs setting
        row = dict(device=device.type, variant=name, mode=mode, setting=label, dtype=str(dtype).replace('torch.', ''),
                   median_ms=1e3 * t.quantile(0.5).item(), p25_ms=1e3 * t.quantile(0.25).item(),
                   p75_ms=1e3 * t.quantile(0.75).item(), runs=len(times[name]), ratio=spec)
        if name in event_ms:
            row['event_ms'] = event_ms[name]
        if name in kernels:
            row['top_kernels'] = kernels[name]
        sparse.set_pruning_ratios(spec)
        row['gmacs'] = sparsevit_macs(sparse, tuple(args.shape), swin_layout=name == DENSE) / 1e9
        rows.append(row)
    median = {(r['mode'], r['setting']): r['median_ms'] for r in rows}
    for row in rows:
        own_mode = {'mmdet': 'eager', 'mmdet graph': 'graph'}.get(row['mode'], row['mode'])
        dense_ref = median.get((own_mode, dense_label))
        eager_ref = median.get(('eager', row['setting']))
        row['vs_sparsevit_r0'] = row['median_ms'] / dense_ref if dense_ref else None
        row['vs_eager'] = row['median_ms'] / eager_ref if eager_ref and not row['mode'].startswith('mmdet') else None
        # graph rows against mmdet's Swin replayed the same way
        mmdet_ref = median.get(('mmdet graph' if own_mode == 'graph' else 'mmdet', dense_label))
        row['vs_mmdet'] = row['median_ms'] / mmdet_ref if mmdet_ref else None
    if args.memory:
        for row in rows:
            if row['mode'] in ('eager', 'mmdet') and row['variant'] != DENSE_GRAPH:  # others need their set-up
                row['peak_mem_mb'] = measure_memory(args, device, row['variant'], row['ratio'])
    return rows


def measure_memory(args: argparse.Namespace, device: torch.device, name: str, ratios: object) -> float:
    """Peak memory of one forward above what is held before it, in MiB."""
    if device.type == 'cuda':
        sparse, dense = build_models(args)
        sparse.to(device)
        if dense is not None:
            dense.to(device)
        x = torch.randn(*args.shape, device=device)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode(), autocast(device, getattr(torch, args.dtype)):
            run_variant(name, ratios, sparse, dense, x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    # CPU: a fresh process per variant (allocator caches would blur an in-process measurement)
    cmd = [sys.executable, __file__, '--_memory-child', name, '--_memory-ratios', json.dumps(ratios),
           '--arch', args.arch,
           '--window-size', str(args.window_size), '--threads', str(args.threads),
           '--shape', *map(str, args.shape), '--out-indices', *map(str, args.out_indices)]
    if args.no_mmdet:
        cmd.append('--no-mmdet')
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak RSS of one forward above the RSS before it, in MiB (Linux).

    The high-water mark is reset through /proc/self/clear_refs first: ru_maxrss would report the
    parent's RSS, which Linux carries over across fork + exec.
    """
    sparse, dense = build_models(args)
    x = torch.randn(*args.shape)

    def status_kib(field: str) -> int:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))

    ratios = json.loads(args.memory_ratios)
    with torch.inference_mode():
        run_variant(args.memory_child, ratios, sparse, dense, torch.randn(1, 3, 64, 64))  # load kernels
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        rss_before = status_kib('VmRSS:')
        run_variant(args.memory_child, ratios, sparse, dense, x)
    print((status_kib('VmHWM:') - rss_before) / 1024)


def _has_modes(rows: list[dict]) -> bool:
    return any(r['mode'] not in ('eager', 'mmdet', 'mmdet graph') for r in rows)


def print_table(rows: list[dict]) -> None:
    has_mem, has_modes = any('peak_mem_mb' in r for r in rows), _has_modes(rows)

    def ratio(v: float | None) -> str:
        return f'{v:7.3f}' if v is not None else '      -'

    has_events = any('event_ms' in r for r in rows)
    header = (f"{'device':6} {'variant':30} {'dtype':8} {'median ms':>10} {'p25-p75 ms':>16} "
              + (f"{'event ms':>9} " if has_events else '') + f"{'GMACs':>8} "
              f"{'vs r=0':>7} {'vs mmdet':>8}" + (f" {'vs eager':>8}" if has_modes else '')
              + (f" {'peak MiB':>9}" if has_mem else ''))
    print(header)
    print('-' * len(header))
    for r in rows:
        events = (f"{r['event_ms']:9.2f} " if 'event_ms' in r else f"{'-':>9} ") if has_events else ''
        line = (f"{r['device']:6} {r['variant']:30} {r['dtype']:8} {r['median_ms']:10.1f} "
                f"{r['p25_ms']:7.1f}-{r['p75_ms']:<8.1f} {events}{r['gmacs']:8.1f} {ratio(r['vs_sparsevit_r0'])} "
                f"{ratio(r['vs_mmdet']):>8}")
        if has_modes:
            line += f" {ratio(r['vs_eager']):>8}"
        if has_mem:
            line += f" {r['peak_mem_mb']:9.0f}" if 'peak_mem_mb' in r else f" {'-':>9}"
        print(line)
    for r in rows:
        if r.get('top_kernels'):
            print(f"top CUDA kernels of one call, {r['variant']} ({r['device']}, {r['dtype']}):")
            for k in r['top_kernels']:
                print(f"  {k['gpu_ms']:8.3f} ms {k['calls']:5d} x  {k['name'][:100]}")


def markdown_table(rows: list[dict]) -> str:
    has_mem, has_modes = any('peak_mem_mb' in r for r in rows), _has_modes(rows)
    has_events = any('event_ms' in r for r in rows)
    head = ['device', 'variant', 'median ms', 'p25-p75 ms'] + (['event ms'] if has_events else [])
    head += ['GMACs', 'vs SparseViT r=0', 'vs mmdet']
    head += ['vs eager'] if has_modes else []
    head += ['peak MiB'] if has_mem else []
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['device'], r['variant'], f"{r['median_ms']:.1f}", f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}"]
        cells += [f"{r['event_ms']:.2f}" if 'event_ms' in r else '-'] if has_events else []
        cells += [f"{r['gmacs']:.1f}", f"{r['vs_sparsevit_r0']:.3f}", f"{r['vs_mmdet']:.3f}" if r['vs_mmdet'] else '-']
        cells += [f"{r['vs_eager']:.3f}" if r['vs_eager'] else '-'] if has_modes else []
        cells += [f"{r['peak_mem_mb']:.0f}" if 'peak_mem_mb' in r else '-'] if has_mem else []
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_json(path: Path, payload: dict) -> None:
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

    atomic_write_json(path, payload, indent=2)


def write_plot(path: Path, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for device in sorted({r['device'] for r in rows}):
        modes = [m for m in MODES if any(r['device'] == device and r['mode'] == m for r in rows)]
        for mode in modes:
            sparse = [r for r in rows if r['device'] == device and r['mode'] == mode
                      and isinstance(r['ratio'], float)]
            xs = [100 * r['ratio'] for r in sparse]
            spread = [[r['median_ms'] - r['p25_ms'] for r in sparse], [r['p75_ms'] - r['median_ms'] for r in sparse]]
            ax.errorbar(xs, [r['median_ms'] for r in sparse], yerr=spread, marker='o', capsize=3,
                        label=f'SparseViT ({device})' if modes == ['eager'] else f'SparseViT {mode} ({device})')
            if mode == modes[0]:
                base = sparse[0]
                ax.plot(xs, [base['median_ms'] * r['gmacs'] / base['gmacs'] for r in sparse], ':', color='gray',
                        label=f'MAC-proportional ({device}, {mode})')
            for r in rows:  # --configs settings: at the sparsity their MACs correspond to
                if r['device'] == device and r['mode'] == mode and not isinstance(r['ratio'], float):
                    x_cfg = 100 * (1 - r['gmacs'] / sparse[0]['gmacs'])
                    ax.plot([x_cfg], [r['median_ms']], 's', color='black')
                    ax.annotate(r['setting'], (x_cfg, r['median_ms']), fontsize=6, xytext=(3, 3),
                                textcoords='offset points')
        mm = [r for r in rows if r['device'] == device and r['variant'] == DENSE]
        if mm:
            ax.axhline(mm[0]['median_ms'], linestyle='--', color='tab:red', label=f'mmdet Swin dense ({device})')
    ax.set_xlabel('uniform window sparsity (%); configs (squares) at their MAC reduction')
    ax.set_ylabel('latency (ms, median)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_open

    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    import projects.sparsevit_bevdet  # noqa: F401  (registers modules)
    from projects.sparsevit_bevdet.utils.timing import cpu_name

    devices = [torch.device('cpu')]
    if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            sys.exit('--device cuda requested but torch.cuda.is_available() is False')
        devices = [torch.device('cuda')] if args.device == 'cuda' else [*devices, torch.device('cuda')]
    rows = []
    for device in devices:
        rows += time_device(args, device)
    title = (f'Swin-{args.arch[0].upper()} window {args.window_size}, input {"x".join(map(str, args.shape))}, '
             f'{args.threads} CPU threads, torch {torch.__version__}')
    print(title)
    print_table(rows)
    if args.markdown:
        print(markdown_table(rows))
    payload = dict(title=title, args=json.loads(json.dumps(vars(args), default=str)),
                   torch=torch.__version__, cpu=cpu_name(), rows=rows)
    if args.json:
        write_json(args.json, payload)
        print(f'wrote {args.json}')
    if args.plot:
        write_plot(args.plot, rows, title)
        print(f'wrote {args.plot}')


if __name__ == '__main__':
    main()
