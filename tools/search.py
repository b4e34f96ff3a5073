"""Search SparseViT's per-group pruning ratios of a trained detector under a latency budget.

Each candidate is scored on the validation split with the config's evaluator (``--metric``, NDS by
default) and timed as the image encoder's forward on one sample's cameras at the config's input size
(median of ``--latency-repeats`` runs, after a warm-up), on this machine. Candidates over the budget are
never scored. The state is written after every generation (``<work-dir>/search_state.json``): re-running
the same command resumes without repeating finished evaluations.

Outputs in the work dir: ``best.json`` (the best ratios in the backbone's per-block format, ready for
``--cfg-options model.img_backbone.pruning_ratios=...``), ``search_history.json`` and
``search_pareto.png`` (score vs latency of every evaluated candidate).

Example::

    python tools/search.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_adapt.py work_dirs/adapt/epoch_24.pth \\
        --latency-budget-ms 900 --generations 10 --population 20 --work-dir work_dirs/search
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--latency-budget-ms', type=float, required=True,
                        help='image-encoder latency budget for one sample, in ms, on this machine')
    parser.add_argument('--metric', default='NuScenes/NDS', help='evaluator key to maximise')
    parser.add_argument('--population', type=int, default=20)
    parser.add_argument('--parents', type=int, default=10)
    parser.add_argument('--generations', type=int, default=10)
    parser.add_argument('--mutation-prob', type=float, default=0.2)
    parser.add_argument('--ratio-choices', type=float, nargs='+', default=[round(0.1 * i, 1) for i in range(9)])
    parser.add_argument('--latency-repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', type=Path, default=None)
    from mmengine.config import DictAction

    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='key=value overrides of the config')
    args = parser.parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            parser.error(f'{what} file {path} does not exist')
    return args


def run_search(cfg, checkpoint: str, args: argparse.Namespace) -> dict:
    """Build the runner from ``cfg``, load ``checkpoint`` and search; returns the content of best.json."""
    import torch
    from mmengine.runner import Runner

    from projects.sparsevit_bevdet.backbones import expand_group_ratios
    from projects.sparsevit_bevdet.engine import find_image_encoder
    from projects.sparsevit_bevdet.search import EvolutionarySearch
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir or Path('work_dirs') / f'search_{Path(args.config).stem}')
    cfg.work_dir = str(work_dir)
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(checkpoint, map_location='cpu')
    model = runner.model
    model.eval()
    encoder = find_image_encoder(model)
    space = encoder.search_space()

    # one sample's cameras at the input size the pipeline produces
    batch = model.data_preprocessor(next(iter(runner.val_loop.dataloader)), False)
    images = batch['inputs']['imgs'][0]

    def set_ratios(candidate) -> None:
        encoder.set_pruning_ratios(expand_group_ratios(space, candidate))

    def latency_ms(candidate) -> float:
        set_ratios(candidate)
        times = []
        with torch.inference_mode():
            encoder(images)  # warm-up: geometry caches, allocator
            for _ in range(args.latency_repeats):
                start = time.perf_counter()
                encoder(images)
                times.append(1e3 * (time.perf_counter() - start))
        return statistics.median(times)

    def score(candidate) -> float:
        set_ratios(candidate)
        metrics = runner.val_loop.run()
        if args.metric not in metrics:
            raise KeyError(f'metric {args.metric!r} not among the evaluator results: {sorted(metrics)}')
        return float(metrics[args.metric])

    search = EvolutionarySearch(space, score, latency_ms, args.latency_budget_ms, args.ratio_choices,
                                population_size=args.population, num_parents=args.parents,
                                generations=args.generations, mutation_prob=args.mutation_prob, seed=args.seed,
                                state_file=work_dir / 'search_state.json')
    result = search.run(log=runner.logger.info)
    dense = latency_ms(tuple((0.0,) * len(s.group_blocks) for s in space))
    best = dict(metric=args.metric, score=result.best.score, latency_ms=result.best.latency,
                dense_latency_ms=dense, latency_budget_ms=args.latency_budget_ms,
                group_ratios=[list(s) for s in result.best.ratios], pruning_ratios=result.block_ratios(space))
    atomic_write_json(work_dir / 'best.json', best, indent=1)
    atomic_write_json(work_dir / 'search_history.json', [e.to_json() for e in result.history], indent=1)
    plot_history(result, best, work_dir / 'search_pareto.png')
    print_summary(result, best)
    return best


def plot_history(result, best: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from projects.sparsevit_bevdet.utils.atomic_io import atomic_open

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    gens = [e.generation for e in result.history]
    points = ax.scatter([e.latency for e in result.history], [e.score for e in result.history], c=gens,
                        cmap='viridis', s=18)
    fig.colorbar(points, ax=ax, label='generation')
    ax.axvline(best['latency_budget_ms'], color='tab:red', linestyle='--', label='latency budget')
    ax.axvline(best['dense_latency_ms'], color='gray', linestyle=':', label='dense (all ratios 0)')
    ax.scatter([best['latency_ms']], [best['score']], marker='*', s=160, color='tab:orange', label='best')
    ax.set_xlabel('image-encoder latency (ms, median)')
    ax.set_ylabel(best['metric'])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=120)
    plt.close(fig)


def print_summary(result, best: dict) -> None:
    print(f"\nbest {best['metric']} {best['score']:.4f} at {best['latency_ms']:.1f} ms "
          f"(budget {best['latency_budget_ms']:.1f} ms, dense {best['dense_latency_ms']:.1f} ms)")
    print(f"{'rank':>4} {'score':>8} {'latency ms':>11}  group ratios per stage")
    ranked = sorted(result.history, key=lambda e: -e.score)[:10]
    for i, e in enumerate(ranked, 1):
        print(f'{i:4d} {e.score:8.4f} {e.latency:11.1f}  {[list(s) for s in e.ratios]}')
    print(f"\nuse: --cfg-options 'model.img_backbone.pruning_ratios={best['pruning_ratios']}'")


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmengine.config import Config

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin, safe checkpoint loading)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    run_search(cfg, args.checkpoint, args)


if __name__ == '__main__':
    main()
