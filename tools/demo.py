"""The main job on the embedded synthetic nuScenes (``make demo``): does SparseViT make BEVDet faster at
nearly the same NDS, and does the search find that configuration under a latency budget?

Stages (each cached in the work dir; a second run reuses finished stages and a killed run resumes; a stage
whose config, data root or upstream stage changed since is moved aside to `<stage>.stale-<time>` and redone):

1. ``data``: generate the synthetic nuScenes (a partial v1.0-trainval in the real format: 32 short train scenes,
   10 val scenes of 32 key frames) and its mmdet3d info pkls;
2. ``dense``: train BEVDet + SparseViT-T from scratch (``configs/bevdet/..._cpu-demo.py``);
3. ``adapt``: sparsity-aware adaptation from the dense checkpoint (``..._cpu-demo_adapt.py``);
4. ``search``: the search of ``tools/search.py`` (the library's ``run_search``) on the adapted detector under a
   budget of ``--latency-ratio`` x the dense image-encoder latency (evolutionary search, random-search and
   uniform-ratio baselines);
5. ``evaluate``: dense (the dense checkpoint, ratio 0), and with the adapted checkpoint: ratio 0
   (``dense_adapted``, what sparsity costs on the same weights), the best uniform ratio within the budget and
   the searched ratios, on the full val split through the nuScenes devkit, with the image
   encoder's and the whole detector's latency measured interleaved in this process (medians);
6. outputs: one table, ``summary.json``, ``pareto.png`` (NDS vs encoder latency), ``predictions.png``
   (one val sample's boxes in BEV and on the six cameras) and ``learning_curve.png``.

``--quick`` runs every stage for a few iterations on a tiny generated set (what the test suite runs).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the cached-stage machinery lives in projects/sparsevit_bevdet/engine/stages.py; these names stay reachable
# here (imported on first use, so that --help does not import the plugin)
_STAGE_NAMES = ('STAGE_FILE', 'claim_stage_dir', 'stage_key', 'train_cached')


def __getattr__(name: str) -> Any:
    if name in _STAGE_NAMES:
        from projects.sparsevit_bevdet.engine import stages

        return getattr(stages, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

DENSE_CONFIG = ROOT / 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_pretrained.py'
PRETRAIN_ITERS = 600  # Mask R-CNN iterations on the synthetic COCO (batch 4, 160 x 160)
ADAPT_CONFIG = ROOT / 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_adapt.py'
PARETO_UNIFORM = (0.2, 0.4, 0.6, 0.8)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=None,
                        help='synthetic nuScenes root (default data/nuscenes-synth-trainval; --quick: <work-dir>/data)')
    parser.add_argument('--work-dir', type=Path, default=None,
                        help='outputs and cached stages (default work_dirs/demo; --quick: work_dirs/demo-quick)')
    parser.add_argument('--latency-ratio', type=float, default=None,
                        help='search budget: this fraction of the dense image-encoder latency (default 0.6; '
                        '--quick: 1.0, as fixed costs dominate at its tiny input)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--timing-repeats', type=int, default=7, help='interleaved timing rounds per configuration')
    parser.add_argument('--quick', action='store_true',
                        help='a few iterations per stage on a tiny generated set (smoke test of the pipeline)')
    args = parser.parse_args(argv)
    if args.latency_ratio is None:
        args.latency_ratio = 1.0 if args.quick else 0.6
    if not 0.0 < args.latency_ratio <= 1.0:
        parser.error(f'--latency-ratio must be in (0, 1], got {args.latency_ratio}')
    default_work = 'work_dirs/demo-quick' if args.quick else 'work_dirs/demo'
    args.work_dir = (args.work_dir or ROOT / default_work).resolve()
    args.data_root = (args.data_root
                      or (args.work_dir / 'data' if args.quick else ROOT / 'data/nuscenes-synth-trainval'))
    args.data_root = args.data_root.resolve()
    return args


def section(title: str) -> None:
    print(f'\n=== {title} ' + '=' * max(0, 96 - len(title)), flush=True)


@contextlib.contextmanager
def stage(title: str, name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Print the stage's banner, run it and record its wall time in ``seconds[name]``."""
    section(title)
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    print(f'{name} stage: {seconds[name]:.0f} s', flush=True)


# ----------------------------------------------------------------------------------------------------
# configuration: the shipped configs, pointed at the data root (and shrunk with --quick)

QUICK_IMAGE_SIZE = (90, 160)
QUICK_INPUT_SIZE = (64, 176)
# The demo's synthetic set: a partial v1.0-trainval (scene names from the devkit's train / val splits, eval set
# 'val'). Many short train scenes give more distinct worlds for the same number of frames; 10 val scenes of
# 32 key frames (320 samples) let a paired bootstrap over scenes resolve about 0.02 NDS. Images at 450 x 800
# (half of nuScenes' 900 x 1600): the network sees 128 x 352, and decoding is 4 x cheaper.
DEMO_DATA = dict(version='v1.0-trainval', train_scenes=32, samples_per_scene=12, val_scenes=10,
                 val_samples_per_scene=32, image_size=(450, 800))
QUICK_DATA = dict(version='v1.0-trainval', train_scenes=4, samples_per_scene=3, val_scenes=3,
                  val_samples_per_scene=3, image_size=QUICK_IMAGE_SIZE)


def demo_config(path: Path, args: argparse.Namespace, work_dir: Path) -> Any:
    """``path`` read as shipped, reading ``args.data_root``; with ``--quick`` a few iterations at a tiny size."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    root = str(args.data_root) + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        if args.quick:
            cfg[loader].num_workers = 0
            cfg[loader].persistent_workers = False
            for step in cfg[loader].dataset.pipeline:
                if step['type'] == 'BEVDetImageAug':
                    step['data_config'] = dict(step['data_config'], input_size=QUICK_INPUT_SIZE,
                                               src_size=QUICK_IMAGE_SIZE)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].update(data_root=root, ann_file=root + 'nuscenes_infos_val.pkl',
                              jsonfile_prefix=str(work_dir / 'results'))
    cfg.work_dir = str(work_dir)
    if args.quick:
        cfg.model.img_view_transformer.input_size = QUICK_INPUT_SIZE
        iters = 2
        cfg.train_cfg.update(max_iters=iters, val_interval=iters + 1)
        cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=iters)]
        cfg.default_hooks.checkpoint.update(interval=iters)
        cfg.default_hooks.logger.update(interval=1)
    else:
        # the demo evaluates every configuration itself, after training
        cfg.train_cfg.update(val_interval=cfg.train_cfg.max_iters + 1)
    return cfg


# ----------------------------------------------------------------------------------------------------
# stages


def stage_data(args: argparse.Namespace) -> str:
    """Generate (or reuse) the synthetic set and its info pkls; returns the generator's parameters as text
    (the marker file), the fingerprint the training stages depend on."""
    from projects.sparsevit_bevdet.datasets import create_nuscenes_infos
    from projects.sparsevit_bevdet.synthetic.nuscenes import (
        MARKER_FILE,
        SyntheticNuScenesConfig,
        generate_synthetic_nuscenes,
    )

    root = args.data_root
    spec = QUICK_DATA if args.quick else DEMO_DATA
    version = spec['version']
    marker = root / MARKER_FILE
    wanted = SyntheticNuScenesConfig(out_dir=root, workers=2, **spec)
    current = json.loads(marker.read_text()) if marker.is_file() else None
    if (root / version).is_dir() and current is not None and _same_generation(current, wanted):
        print(f'{root}/{version} exists: reusing it')
    else:
        if current is not None:
            print(f'{root} holds a synthetic set of other parameters ({current}): regenerating it')
        wanted.overwrite = True  # the generator still refuses a folder it did not write
        summary = generate_synthetic_nuscenes(wanted, progress=True, log=print)
        print(summary.table())
    if (root / 'nuscenes_infos_val.pkl').is_file() and (root / 'nuscenes_infos_train.pkl').is_file():
        print(f'{root}/nuscenes_infos_{{train,val}}.pkl exist: reusing them')
    else:
        for split, path in create_nuscenes_infos(root, version, root, progress=True, partial=True).items():
            print(f'wrote {split} infos: {path}')
    return marker.read_text()


def _same_generation(marker: dict, cfg: Any) -> bool:
    """Whether a generated set's marker records the parameters of ``cfg`` (and this generator version)."""
    from projects.sparsevit_bevdet.synthetic.nuscenes.world import GENERATOR_VERSION

    wanted = dict(generator_version=GENERATOR_VERSION, version=cfg.version, seed=cfg.seed,
                  samples_per_scene=cfg.samples_per_scene, image_size=list(cfg.image_size),
                  train_scenes=cfg.train_scenes, val_scenes=cfg.val_scenes,
                  val_samples_per_scene=cfg.val_samples_per_scene)
    return all(marker.get(k) == v for k, v in wanted.items())


def stage_pretrain(args: argparse.Namespace) -> tuple[Path, str]:
    """SparseViT at the recipe's width trained in Mask R-CNN on the synthetic COCO (cached like the others)."""
    from mmengine.config import Config

    from projects.sparsevit_bevdet.engine.stages import stage_key, train_cached
    from projects.sparsevit_bevdet.utils.pretrain_stage import (
        PRETRAIN_CONFIG,
        check_same_encoder,
        ensure_synthetic_coco,
        pretrain_config,
    )

    data_root = args.work_dir / 'coco-data' if args.quick else ROOT / 'data/coco-synth'
    data_key = ensure_synthetic_coco(data_root, args.quick)
    cfg = pretrain_config(data_root, args.work_dir / 'pretrain', args.quick, PRETRAIN_ITERS)
    check_same_encoder(cfg, Config.fromfile(str(DENSE_CONFIG)))
    return train_cached('pretrain', cfg, PRETRAIN_CONFIG, stage_key(cfg.pretty_text, data_key))


def stage_train(name: str, config: Path, args: argparse.Namespace, load_from: Optional[Path] = None,
                upstream_key: str = '', init_checkpoint: Optional[Path] = None) -> tuple[Path, str]:
    """Train ``config`` in ``<work-dir>/<name>``; reuse a finished run, resume an interrupted one.

    Returns the final checkpoint and the stage's fingerprint (config text and ``upstream_key``).
    """
    from projects.sparsevit_bevdet.engine.stages import stage_key, train_cached

    work_dir = args.work_dir / name
    cfg = demo_config(config, args, work_dir)
    if load_from is not None:
        cfg.load_from = str(load_from)
    if init_checkpoint is not None:  # the pretrain stage's encoder, loaded as users load Swin weights
        cfg.model.img_backbone.init_cfg = dict(type='Pretrained', checkpoint=str(init_checkpoint))
    return train_cached(name, cfg, config, stage_key(cfg.pretty_text, upstream_key))


def stage_search(checkpoint: Path, args: argparse.Namespace, upstream_key: str) -> dict:
    """The search (``projects.sparsevit_bevdet.search.run_search``, what ``tools/search.py`` runs) on the adapted
    detector; its ``best.json`` record (cached: a finished search is reused)."""
    from projects.sparsevit_bevdet.engine.stages import claim_stage_dir, stage_key
    from projects.sparsevit_bevdet.search import SearchOptions, format_summary, run_search

    work_dir = args.work_dir / 'search'
    best = work_dir / 'best.json'
    sizes = (dict(population=3, parents=2, generations=1, table_repeats=1, calibration_repeats=1, check_samples=2,
                  check_repeats=1, final_repeats=2, rescore_top=1)
             if args.quick else
             dict(population=8, parents=4, generations=3, proxy_samples=32, rescore_top=2, table_repeats=7,
                  check_repeats=5))
    options = SearchOptions(latency_ratio=args.latency_ratio, work_dir=work_dir, threads=args.threads,
                            uniform_ratios=PARETO_UNIFORM, cache_inputs=True, **sizes)
    cfg = demo_config(ADAPT_CONFIG, args, work_dir)
    claim_stage_dir(work_dir, stage_key(cfg.pretty_text, upstream_key, str(checkpoint),
                                        json.dumps(options.to_json(), sort_keys=True)))
    if best.is_file() and (work_dir / 'demo_search_done').is_file():
        print(f'{best} exists: reusing the finished search')
        return json.loads(best.read_text())
    report = run_search(cfg, str(checkpoint), options)
    print(format_summary(report.record, report.best_json))
    (work_dir / 'demo_search_done').write_text('done\n')
    return report.record


def Detector(name: str, config: Path, checkpoint: Path, args: argparse.Namespace) -> Any:
    """One of the demo's trained detectors (``config`` read as :func:`demo_config` reads it): a
    :class:`~projects.sparsevit_bevdet.engine.stages.TrainedDetector`, ready to test at given ratios and to time
    (same process, same data), with ``config`` and ``results_json`` (the metric's submission file) added."""
    from projects.sparsevit_bevdet.engine.stages import TrainedDetector

    work_dir = args.work_dir / 'evaluate' / name
    detector = TrainedDetector(demo_config(config, args, work_dir), checkpoint)
    detector.config = config
    detector.results_json = work_dir / 'results' / 'results_nusc.json'
    return detector


BOOTSTRAP_PAIRS = (('searched', 'dense'), ('searched', 'dense_adapted'), ('searched', 'uniform'))


def stage_bootstrap(submissions: dict[str, Path], keys: dict[str, dict], args: argparse.Namespace) -> dict:
    """Paired bootstrap (90 %, over val scenes) of every row's mAP / NDS and of :data:`BOOTSTRAP_PAIRS`, from
    the rows' devkit submissions; cached in ``<work-dir>/evaluate/bootstrap.json`` under the rows' keys."""
    from mmengine.config import Config

    from projects.sparsevit_bevdet.evaluation.bootstrap import bootstrap_submissions
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

    cached = args.work_dir / 'evaluate' / 'bootstrap.json'
    replicates = 200 if args.quick else 1000
    key = dict(rows=keys, replicates=replicates, level=0.9, seed=0, pairs=[list(p) for p in BOOTSTRAP_PAIRS])
    if cached.is_file() and json.loads(cached.read_text()).get('key') == key:
        print(f'bootstrap: reusing {cached}')
        return json.loads(cached.read_text())['result']
    version = Config.fromfile(str(DENSE_CONFIG)).test_dataloader.dataset.metainfo['version']
    start = time.perf_counter()
    result = bootstrap_submissions(args.data_root, version, submissions, BOOTSTRAP_PAIRS, replicates=replicates,
                                   level=0.9, seed=0)
    print(f'bootstrap: {replicates} replicates over {result["_settings"]["num_scenes"]} val scenes in '
          f'{time.perf_counter() - start:.0f} s')
    atomic_write_json(cached, dict(key=key, result=result), indent=1)
    return result


def stage_evaluate(dense_ckpt: Path, adapt_ckpt: Path, best: dict, args: argparse.Namespace,
                   stage_keys: dict[str, str]) -> dict:
    """Score and time dense / uniform / searched; cached per row in ``<work-dir>/evaluate/<name>.json``."""
    import torch

    cache_dir = args.work_dir / 'evaluate'
    cache_dir.mkdir(parents=True, exist_ok=True)
    if best.get('uniform') is None:
        raise RuntimeError(f'no uniform ratio meets the search budget ({best["latency_budget_ms"]:.1f} ms); '
                           f'raise --latency-ratio')
    dense = Detector('dense', DENSE_CONFIG, dense_ckpt, args)
    adapted = Detector('adapted', ADAPT_CONFIG, adapt_ckpt, args)
    # dense_adapted: the adapted weights at ratio 0, so that what sparsity costs is read on the same
    # weights (the adapted checkpoint trained longer than the dense one)
    rows = {
        'dense': (dense, 0.0),
        'dense_adapted': (adapted, 0.0),
        'uniform': (adapted, best['uniform']['pruning_ratios']),
        'searched': (adapted, best['pruning_ratios']),
    }
    results: dict[str, dict] = {}
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_bytes, atomic_write_json

    submissions = {name: cache_dir / f'{name}_results_nusc.json' for name in rows}  # kept for the bootstrap
    keys = {}
    for name, (detector, ratios) in rows.items():
        cached = cache_dir / f'{name}.json'
        key = keys[name] = dict(checkpoint=str(detector.checkpoint), pruning_ratios=ratios,
                                stage=stage_keys['dense' if detector is dense else 'adapt'])
        if (cached.is_file() and json.loads(cached.read_text()).get('key') == key
                and submissions[name].is_file()):
            results[name] = json.loads(cached.read_text())['metrics']
            print(f'{name}: reusing {cached}')
            continue
        print(f'{name}: testing on the full val split at ratios {ratios}', flush=True)
        metrics = detector.test(ratios)
        atomic_write_bytes(submissions[name], detector.results_json.read_bytes())
        atomic_write_json(cached, dict(key=key, metrics=metrics), indent=1)
        results[name] = metrics
    uncertainty = stage_bootstrap(submissions, keys, args)

    # latency: one val sample, every configuration timed in turn within each round (medians)
    batch = next(iter(dense.runner.test_dataloader))
    times: dict[str, dict[str, list[float]]] = {n: {'encoder': [], 'detector': []} for n in rows}
    with torch.inference_mode():
        data = dense.model.data_preprocessor(batch, False)
        images = data['inputs']['imgs'].flatten(0, 1)
        for round_idx in range(args.timing_repeats + 1):
            for name, (detector, ratios) in rows.items():
                detector.encoder.set_pruning_ratios(ratios)
                start = time.perf_counter()
                detector.encoder(images)
                mid = time.perf_counter()
                detector.model.test_step(batch)
                end = time.perf_counter()
                if round_idx:  # round 0 warms caches and the allocator
                    times[name]['encoder'].append(1e3 * (mid - start))
                    times[name]['detector'].append(1e3 * (end - mid))
    summary: dict[str, Any] = dict(
        budget=dict(latency_ratio=args.latency_ratio, encoder_ms=best.get('latency_budget_ms'),
                    dense_encoder_ms_search=best.get('dense_latency_ms')))
    for name, (detector, ratios) in rows.items():
        detector.encoder.set_pruning_ratios(ratios)
        summary[name] = dict(
            config=str(detector.config.relative_to(ROOT)), checkpoint=str(detector.checkpoint),
            pruning_ratios=detector.encoder.pruning_ratios,
            mAP=results[name]['NuScenes/mAP'], NDS=results[name]['NuScenes/NDS'],
            encoder_ms=statistics.median(times[name]['encoder']),
            detector_ms=statistics.median(times[name]['detector']),
            **{f'{m}_interval': [uncertainty[name][m]['low'], uncertainty[name][m]['high']] for m in ('mAP', 'NDS')})
    summary['bootstrap'] = uncertainty
    summary['budget']['encoder_ms_this_run'] = args.latency_ratio * summary['dense']['encoder_ms']
    summary['_detectors'] = rows  # for the plots; dropped before writing
    return summary


# ----------------------------------------------------------------------------------------------------
# outputs


def print_table(summary: dict) -> None:
    dense = summary['dense']
    print(f"\n{'configuration':<13} {'mAP':>7} {'NDS':>7} {'NDS 90% interval':>17} {'encoder ms':>11} {'x dense':>8} "
          f"{'detector ms':>12} {'x dense':>8}  group-mean ratio per stage")
    for name in ('dense', 'dense_adapted', 'uniform', 'searched'):
        row = summary[name]
        per_stage = [round(sum(s) / len(s), 2) for s in row['pruning_ratios']]
        low, high = row['NDS_interval']
        print(f"{name:<13} {row['mAP']:7.4f} {row['NDS']:7.4f} {f'[{low:.4f}, {high:.4f}]':>17} "
              f"{row['encoder_ms']:11.1f} {row['encoder_ms'] / dense['encoder_ms']:8.3f} {row['detector_ms']:12.1f} "
              f"{row['detector_ms'] / dense['detector_ms']:8.3f}  {per_stage}")
    settings = summary['bootstrap']['_settings']
    print(f"paired bootstrap, {settings['level']:.0%} intervals over {settings['num_scenes']} val scenes "
          f"({settings['num_samples']} samples, {settings['replicates']} replicates):")
    for pair in BOOTSTRAP_PAIRS:
        entry = summary['bootstrap'][' - '.join(pair)]
        print(f"  {' - '.join(pair):<26}" + '  '.join(
            f"{m} {entry[m]['value']:+.4f} [{entry[m]['low']:+.4f}, {entry[m]['high']:+.4f}]"
            f"{'' if entry[m]['resolved'] else ' (not resolved)'}" for m in ('mAP', 'NDS')))
    budget = summary['budget']
    print(f"budget: {budget['latency_ratio']} x dense encoder = {budget['encoder_ms_this_run']:.1f} ms in this run "
          f"({budget['encoder_ms']:.1f} ms in the search's own measurement)")


def plot_pareto(summary: dict, search_dir: Path, path: Path) -> None:
    """NDS vs encoder latency: every search trial, the baselines, dense and the budget."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from projects.sparsevit_bevdet.utils.atomic_io import atomic_save_figure

    best = json.loads((search_dir / 'best.json').read_text())
    history = json.loads((search_dir / 'search_history.json').read_text())
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    proxy = best['scoring'].get('proxy_samples')
    for key, color in (('evolution', 'tab:orange'), ('random', 'tab:purple')):
        trials = history[key]
        ax.scatter([e['latency'] for e in trials], [e['score'] for e in trials], s=12, color=color, alpha=0.35,
                   label=f'{key} trials' + (f' (NDS on {proxy} proxy samples)' if proxy else ''))
    uniform = sorted(best['uniform_scored'], key=lambda u: u['ratio'])
    ax.plot([u['predicted_latency_ms'] for u in uniform], [u['score'] for u in uniform], 'o-', color='tab:blue',
            label='uniform ratio ' + ', '.join(f"{u['ratio']:.1f}" for u in uniform))
    for key, marker, color in (('random', 's', 'tab:purple'), ('evolution', '*', 'tab:orange')):
        entry = best[key]
        ax.scatter([entry['predicted_latency_ms']], [entry['score']], marker=marker, s=150, color=color,
                   edgecolor='black', label=f'{key} search best', zorder=3)
    dense = summary['dense']
    ax.scatter([best['budget']['dense_predicted_ms']], [dense['NDS']], marker='D', s=60, color='black',
               label='dense (dense-trained checkpoint)', zorder=3)
    ax.scatter([best['budget']['dense_predicted_ms']], [summary['dense_adapted']['NDS']], marker='D', s=60,
               facecolor='white', edgecolor='black', label='dense (adapted checkpoint)', zorder=3)
    # the demo's four configurations on the full split, with their 90 % bootstrap intervals over val scenes
    for name, latency in (('dense', best['budget']['dense_predicted_ms']),
                          ('dense_adapted', best['budget']['dense_predicted_ms']),
                          ('uniform', best['uniform']['predicted_latency_ms']),
                          ('searched', best['predicted_latency_ms'])):
        row = summary[name]
        low, high = row['NDS_interval']
        ax.errorbar([latency], [row['NDS']], yerr=[[max(row['NDS'] - low, 0.0)], [max(high - row['NDS'], 0.0)]],
                    fmt='none', ecolor='black', capsize=4, linewidth=1, zorder=2)
    gap = summary['bootstrap']['searched - dense_adapted']['NDS']
    ax.set_title(f"searched - dense (same weights) NDS {gap['value']:+.3f}, 90 % interval "
                 f"[{gap['low']:+.3f}, {gap['high']:+.3f}]", fontsize=9)
    ax.axvline(best['latency_budget_ms'], color='tab:red', linestyle='--', label='latency budget')
    ax.set_xlabel('image-encoder latency (ms, predicted by the latency table)')
    ax.set_ylabel('NDS (synthetic val; markers: full split)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def plot_learning_curve(work_dirs: dict[str, Path], path: Path) -> None:
    """Total training loss per logged iteration of the dense and adaptation runs (mmengine's scalars.json)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from projects.sparsevit_bevdet.utils.atomic_io import atomic_save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    offset = 0
    for name, work_dir in work_dirs.items():
        points: dict[int, float] = {}
        for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
            for line in scalars.read_text().splitlines():
                record = json.loads(line)
                if 'loss' in record and 'iter' in record:
                    points[int(record['iter'])] = float(record['loss'])
        if points:
            its = sorted(points)
            ax.plot([offset + i for i in its], [points[i] for i in its], label=name)
            offset += its[-1]
    ax.set_yscale('log')
    ax.set_xlabel('iteration (adaptation continues after dense)')
    ax.set_ylabel('training loss')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, path)


def plot_sample(summary: dict, path: Path) -> None:
    """Predicted (searched configuration) and ground-truth boxes of one val sample."""
    import torch

    from projects.sparsevit_bevdet.visualization import plot_sample_predictions

    detector, ratios = summary['_detectors']['searched']
    detector.encoder.set_pruning_ratios(ratios)
    dataset = detector.runner.test_dataloader.dataset
    index = len(dataset) // 2
    batch = detector.runner.test_dataloader.collate_fn([dataset[index]])
    with torch.inference_mode():
        prediction = detector.model.test_step(batch)[0]
    plot_sample_predictions(dataset, index, prediction, path)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock

    # one demo per work dir: a second process resuming the same stages would corrupt them
    with WorkDirLock(args.work_dir, 'tools/demo.py'):
        run_demo(args)


def run_demo(args: argparse.Namespace) -> None:
    """Every stage of the demo, in order (the work dir is locked)."""
    import torch

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin, safe checkpoint loading)
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    seconds: dict[str, float] = {}  # wall time of each stage in this run (a reused stage takes seconds)
    with stage('1/7 data: synthetic nuScenes (partial v1.0-trainval) and mmdet3d infos', 'data', seconds):
        data_key = stage_data(args)
    with stage('2/7 pretrain: SparseViT-T (recipe width) in Mask R-CNN on the synthetic COCO', 'pretrain', seconds):
        pretrain_ckpt, pretrain_key = stage_pretrain(args)
    with stage('3/7 dense: BEVDet + SparseViT-T from the pretrained encoder', 'dense', seconds):
        dense_ckpt, dense_key = stage_train('dense', DENSE_CONFIG, args, upstream_key=data_key + pretrain_key,
                                            init_checkpoint=pretrain_ckpt)
    with stage('4/7 adapt: sparsity-aware adaptation from the dense checkpoint', 'adapt', seconds):
        adapt_ckpt, adapt_key = stage_train('adapt', ADAPT_CONFIG, args, load_from=dense_ckpt,
                                            upstream_key=dense_key)
    with stage(f'5/7 search: per-group pruning ratios under {args.latency_ratio} x the dense encoder latency',
               'search', seconds):
        best = stage_search(adapt_ckpt, args, upstream_key=adapt_key)
    with stage('6/7 evaluate: dense / best uniform / searched on the full val split, latency interleaved',
               'evaluate', seconds):
        summary = stage_evaluate(dense_ckpt, adapt_ckpt, best, args, dict(dense=dense_key, adapt=adapt_key))
    section('7/7 results')
    print_table(summary)
    plot_pareto(summary, args.work_dir / 'search', args.work_dir / 'pareto.png')
    plot_sample(summary, args.work_dir / 'predictions.png')
    plot_learning_curve({'dense': args.work_dir / 'dense', 'adapt': args.work_dir / 'adapt'},
                        args.work_dir / 'learning_curve.png')
    written = copy.copy(summary)
    del written['_detectors']
    written['stage_seconds'] = seconds
    atomic_write_json(args.work_dir / 'summary.json', written, indent=1)
    for name in ('summary.json', 'pareto.png', 'predictions.png', 'learning_curve.png'):
        print(f'wrote {args.work_dir / name}')
    print('stage times: ' + ', '.join(f'{name} {sec:.0f} s' for name, sec in seconds.items()))
    print(f'\ndone in {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
    main()
