"""Search SparseViT's per-group pruning ratios of a trained detector under an image-encoder latency budget.

Latency. The encoder is profiled once per machine and setting into a per-block latency table
(``<work-dir>/latency_table.json``, re-profiled when the device, thread count, input shape, dtype, torch
version, architecture or ratio choices differ): every block at every ratio choice, on one sample's cameras
at the config's input size. A candidate's latency is *predicted* from the table, so candidates over the
budget are discarded without running the model. The budget is either absolute (``--latency-budget-ms``) or
relative to the dense encoder (``--latency-ratio``, times the table's dense latency). The table is checked
against interleaved measurements of ``--check-samples`` random configurations, and the final results are
re-measured with ``--final-repeats`` interleaved rounds against dense.

Scoring. Each candidate is scored with the config's evaluator (``--metric``, NDS by default) on the full
validation split, or with ``--proxy-samples N`` on N evenly spread validation samples; then the top
``--rescore-top`` candidates of each search are re-scored on the full split and the reported results come
from full-split scores. The nuScenes database is loaded once per run, not per candidate. With
``--cache-inputs`` the scored samples' preprocessed images are kept in memory after the first candidate, so
later candidates skip decoding and resizing (the test pipeline is deterministic).

Baselines. Beside the evolutionary search: a random search with as many scored evaluations (its own seed),
and uniform ratios (the densest uniform ratio within the budget, plus ``--uniform-ratios``), all scored and
measured alike.

Resuming. Every evaluation is saved at once (``search_state.json``, ``random_state.json``,
``scores_full.json``, ``scores_proxy.json``): re-running the same command resumes without repeating any.
A state made with another checkpoint, metric, evaluation set, budget or ratio choices is refused (one that
holds no evaluation yet is started afresh), and so is a state file of another shape (naming the field). One
process at a time per work dir: a second one is refused, naming the holder of ``<work-dir>/.lock``.

Refused before any work: a checkpoint whose weights do not fit the model (``--allow-partial-load`` to
accept), a non-finite or non-positive budget, and a ``--metric`` the evaluator does not produce (the
evaluator is run on one validation sample first, which gives its keys).

Many workers. With ``--storage URL --study-name NAME`` the evaluations live in an Optuna study instead of
those files (``sqlite:///PATH.db``, ``postgresql://...``, ``mysql://...`` or ``journal://PATH.log``), and
every process started with the same storage and name works on one search: a candidate is scored by one
worker only, the trial of a killed worker is retried once its heartbeat is older than ``--grace-period``,
and the evolution's generations are built from every worker's scores (see
``projects/sparsevit_bevdet/search/shared_study.py``). The first worker stores its fingerprint and latency
table in the study; the others use that table and are refused if their fingerprint (also the search's
seeds and sizes) differs. Each worker writes the outputs below to its own ``--work-dir`` (atomically) from
the shared history when the search is complete; only the final latency measurements are its own.

Outputs in the work dir: ``best.json`` (top level: the evolutionary best, its per-block ratios ready for
``--cfg-options model.img_backbone.pruning_ratios=...``; ``evolution`` / ``random`` / ``uniform`` entries
with ratios, score, predicted and measured latency; the budget; the latency-table check),
``latency_table.json``, ``latency_table_check.json``, ``search_history.json`` and ``search_pareto.png``
(every trial, the baselines, dense and the budget).

Example::

    python tools/search.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_adapt.py work_dirs/adapt/epoch_24.pth \\
        --latency-ratio 0.6 --population 10 --parents 5 --generations 4 --proxy-samples 50 \\
        --work-dir work_dirs/search
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner, ValLoop

    from projects.sparsevit_bevdet.search import ScoreStore, SearchResult
    from projects.sparsevit_bevdet.search.shared_study import SharedScores

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_RATIO_CHOICES = [round(0.1 * i, 1) for i in range(9)]
DEFAULT_UNIFORM_RATIOS = [0.2, 0.4, 0.6, 0.8]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument('--latency-budget-ms', type=float,
                        help='image-encoder latency budget for one sample, in ms, on this machine')
    budget.add_argument('--latency-ratio', type=float,
                        help='budget as a fraction of the dense encoder latency (all ratios 0) measured here, '
                             'e.g. 0.6')
    parser.add_argument('--metric', default='NuScenes/NDS', help='evaluator key to maximise')
    parser.add_argument('--population', type=int, default=10)
    parser.add_argument('--parents', type=int, default=5)
    parser.add_argument('--generations', type=int, default=4)
    parser.add_argument('--mutation-prob', type=float, default=0.2)
    parser.add_argument('--ratio-choices', type=float, nargs='+', default=DEFAULT_RATIO_CHOICES)
    parser.add_argument('--proxy-samples', type=int, default=None,
                        help='score the searches on this many evenly spread validation samples (default: all)')
    parser.add_argument('--rescore-top', type=int, default=3,
                        help='with --proxy-samples: re-score the best K of each search on the full split')
    parser.add_argument('--uniform-ratios', type=float, nargs='*', default=None,
                        help='uniform ratios scored for the plot, besides the densest one within the budget '
                             '(default: those of 0.2 0.4 0.6 0.8 among --ratio-choices)')
    parser.add_argument('--cache-inputs', action='store_true',
                        help='keep every scored sample\'s preprocessed inputs in memory after the first '
                             'candidate, so later candidates skip image decoding (memory: one sample\'s '
                             'images per sample scored; use with --proxy-samples on a real split)')
    parser.add_argument('--random-seed', type=int, default=None, help='seed of the random search (default: seed+1)')
    parser.add_argument('--table-repeats', type=int, default=3,
                        help='interleaved rounds of profiling each uniform ratio for the latency table')
    parser.add_argument('--check-samples', type=int, default=8,
                        help='random configurations timed to check the latency table (0: no check)')
    parser.add_argument('--check-repeats', type=int, default=3)
    parser.add_argument('--final-repeats', type=int, default=15,
                        help='interleaved rounds of timing the results against dense at the end')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', type=Path, default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='key=value overrides of the config')
    parser.add_argument('--storage', default=None,
                        help='Optuna storage shared by the workers of one search: sqlite:///PATH.db, '
                             'postgresql://USER:PASSWORD@HOST/DB, mysql://USER:PASSWORD@HOST/DB or journal://PATH.log')
    parser.add_argument('--study-name', default=None, help='the study of --storage (workers with the same one share)')
    parser.add_argument('--heartbeat-interval', type=int, default=30,
                        help='with --storage: seconds between the heartbeats of a running evaluation')
    parser.add_argument('--grace-period', type=int, default=120,
                        help='with --storage: seconds without a heartbeat after which an evaluation is retried')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='search even if the checkpoint does not fit the model (refused without it)')
    args = parser.parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            parser.error(f'{what} file {path} does not exist')
    for name in ('latency_ratio', 'latency_budget_ms'):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0.0):
            parser.error(f'--{name.replace("_", "-")} must be a finite number > 0, got {value}')
    if args.uniform_ratios is None:
        args.uniform_ratios = [r for r in DEFAULT_UNIFORM_RATIOS if r in args.ratio_choices]
    not_choices = [r for r in args.uniform_ratios if r not in args.ratio_choices]
    if not_choices:
        parser.error(f'--uniform-ratios {not_choices} are not among --ratio-choices {args.ratio_choices} '
                     f'(the latency table covers only those)')
    for name in ('proxy_samples', 'rescore_top', 'table_repeats', 'check_repeats', 'final_repeats'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.random_seed is None:
        args.random_seed = args.seed + 1
    if (args.storage is None) != (args.study_name is None):
        parser.error('--storage and --study-name go together')
    if args.storage is not None:
        from projects.sparsevit_bevdet.search.shared_study import storage_kind

        try:
            storage_kind(args.storage)
        except ValueError as err:
            parser.error(str(err))
        if not 0 < args.heartbeat_interval < args.grace_period:
            parser.error(f'need 0 < --heartbeat-interval < --grace-period, got {args.heartbeat_interval} and '
                         f'{args.grace_period}')
    return args


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            digest.update(chunk)
    return digest.hexdigest()


def eval_set_source(ds_cfg: Any) -> dict:
    """Where the validation set is read from, for the state's fingerprint: its annotation file (nuScenes infos,
    COCO json), or for a set without one (mmseg's Cityscapes) its data root and prefixes."""
    root = ds_cfg.get('data_root') or ''
    if ds_cfg.get('ann_file'):
        return dict(ann_file=os.path.abspath(os.path.join(root, ds_cfg.ann_file)))
    return dict(data_root=os.path.abspath(root), data_prefix=dict(ds_cfg.get('data_prefix') or {}))


def proxy_indices(num_samples: int, proxy_samples: int) -> list[int]:
    """``proxy_samples`` dataset indices evenly spread over ``range(num_samples)`` (deterministic)."""
    if proxy_samples >= num_samples:
        raise ValueError(f'--proxy-samples {proxy_samples} is not fewer than the {num_samples} validation samples; '
                         f'drop it to score on the full split')
    import numpy as np

    return sorted({int(i) for i in np.linspace(0, num_samples - 1, proxy_samples).round()})


def proxy_loop(runner: Runner, cfg: Config, indices: list[int], tokens: Optional[list[str]]) -> ValLoop:
    """A ``ValLoop`` over the validation samples ``indices`` (mmengine's dataset ``indices``) whose metric
    evaluates exactly those samples (``sample_tokens``). With ``tokens=None`` a metric without that option
    evaluates whatever it is given (enough to learn its keys)."""
    from mmdet3d.registry import METRICS
    from mmengine.runner import ValLoop

    loader = copy.deepcopy(cfg.val_dataloader)
    loader.dataset.indices = indices
    evaluator = copy.deepcopy(cfg.val_evaluator)
    for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
        metric_cls = METRICS.get(metric['type'])
        if metric_cls is not None and 'sample_tokens' in inspect.signature(metric_cls).parameters:
            if tokens is not None:
                metric['sample_tokens'] = tokens
        elif tokens is not None:
            raise ValueError(f'--proxy-samples needs a metric that can evaluate a subset of the split (a '
                             f'sample_tokens option, as EgoFrameNuScenesMetric has); {metric["type"]} has none')
    return ValLoop(runner, loader, evaluator)


def check_metric_key(runner: Runner, cfg: Config, metric: str, log: Callable[[str], None]) -> None:
    """Refuse a ``--metric`` the evaluator does not produce, before any work: its keys come from evaluating one
    validation sample (a metric's keys depend on its options, e.g. CocoMetric's ``metric`` list)."""
    dataset = runner.val_loop.dataloader.dataset
    info = dataset.get_data_info(0)
    token = info.get('token') if isinstance(info, dict) else None
    log(f'checking that the evaluator produces {metric!r} on one validation sample')
    keys = proxy_loop(runner, cfg, [0], [token] if token is not None else None).run()
    if metric not in keys:
        raise SystemExit(f'tools/search.py: --metric {metric!r} is not a key the evaluator produces; its keys '
                         f'(from one validation sample) are {sorted(keys)}. Nothing was searched.')


def encoder_input(inputs: Any) -> torch.Tensor:
    """What the image encoder sees for one validation sample, at the size the pipeline produces: the N cameras
    ``(N, 3, H, W)`` of BEVDet's ``inputs['imgs']`` ``(B, N, 3, H, W)``, or the first image ``(1, 3, H, W)`` of an
    mmdet / mmseg batch ``(B, 3, H, W)``."""
    import torch

    imgs = inputs.get('imgs') if isinstance(inputs, dict) else inputs
    if isinstance(imgs, torch.Tensor) and imgs.dim() == 5:
        return imgs[0]
    if isinstance(imgs, torch.Tensor) and imgs.dim() == 4:
        return imgs[:1]
    raise TypeError(f'the data preprocessor gave inputs of type {type(inputs).__name__}'
                    f'{"" if not isinstance(imgs, torch.Tensor) else f" with shape {tuple(imgs.shape)}"}; the search '
                    f'needs images (B, 3, H, W) or multi-view images inputs["imgs"] (B, N, 3, H, W)')


def uniform(space: Sequence, ratio: float) -> tuple[tuple[float, ...], ...]:
    """Every search group at ``ratio``."""
    return tuple((float(ratio),) * len(s.group_blocks) for s in space)


def run_search(cfg: Config, checkpoint: str, args: argparse.Namespace) -> dict:
    """Build the runner from ``cfg``, load ``checkpoint``, search and write the outputs; returns best.json."""
    import torch

    from projects.sparsevit_bevdet.utils.checkpoint_fit import add_checkpoint_fit_hook
    from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir or Path('work_dirs') / f'search_{Path(args.config).stem}')
    cfg.work_dir = str(work_dir)
    cfg.load_from = checkpoint
    # nothing is trained here: without this, a CheckpointHook with save_best (mmseg's configs) would try to
    # save a "best" checkpoint after every candidate's validation
    if cfg.get('default_hooks', {}).get('checkpoint') is not None:
        cfg.default_hooks.checkpoint = None
    add_checkpoint_fit_hook(cfg, checkpoint, args.allow_partial_load)
    with WorkDirLock(work_dir, 'tools/search.py'):  # before the runner writes its log into the work dir
        return _search(cfg, checkpoint, args, work_dir)


def _search(cfg: Config, checkpoint: str, args: argparse.Namespace, work_dir: Path) -> dict:
    """:func:`run_search` once the work dir is locked."""
    import numpy as np
    from mmengine.runner import Runner

    from projects.sparsevit_bevdet.backbones import expand_group_ratios
    from projects.sparsevit_bevdet.engine import find_image_encoder
    from projects.sparsevit_bevdet.search import (
        CachedLoader,
        EvolutionarySearch,
        LatencyTable,
        NoCandidateInBudgetError,
        RandomSearch,
        ScoreStore,
        load_or_profile,
        measure_interleaved,
        prediction_check,
        sample_group_ratios,
    )
    from projects.sparsevit_bevdet.utils.atomic_io import atomic_write_json

    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(checkpoint, map_location='cpu')
    log: Callable[[str], None] = runner.logger.info
    check_metric_key(runner, cfg, args.metric, log)
    model = runner.model
    model.eval()
    encoder = find_image_encoder(model)
    space = encoder.search_space()
    choices = sorted({float(r) for r in args.ratio_choices})

    # -- latency: the table, the budget, the table's check ------------------------------------------------
    val_dataset = runner.val_loop.dataloader.dataset
    batch = model.data_preprocessor(next(iter(runner.val_loop.dataloader)), False)
    images = encoder_input(batch['inputs'])
    shared = None
    if args.storage:
        from projects.sparsevit_bevdet.search.shared_study import (
            SharedEvolutionarySearch,
            SharedRandomSearch,
            SharedStudy,
        )

        shared = SharedStudy(args.storage, args.study_name, args.heartbeat_interval, args.grace_period)
        if shared.copy_latency_table(work_dir / 'latency_table.json'):  # a joining worker need not profile
            log(f'study {args.study_name!r}: using its latency table')
    table = load_or_profile(work_dir / 'latency_table.json', encoder, images, choices, args.table_repeats, log=log)
    source = eval_set_source(cfg.val_dataloader.dataset)
    scored_on = dict(checkpoint_sha256=file_sha256(checkpoint), metric=args.metric)
    eval_set = dict(source, samples=proxy_indices(len(val_dataset), args.proxy_samples)
                    if args.proxy_samples else 'all')
    fingerprint = dict(scored_on, eval_set=eval_set, latency_table=table.key,
                       budget=dict(latency_ratio=args.latency_ratio, latency_budget_ms=args.latency_budget_ms))
    if shared is not None:
        # every worker predicts with the study creator's table, so all of them draw the same candidates
        table = LatencyTable.from_json(shared.join(dict(fingerprint, search=dict(
            seed=args.seed, random_seed=args.random_seed, population=args.population, parents=args.parents,
            mutation_prob=args.mutation_prob)), table.to_json()))
        atomic_write_json(work_dir / 'latency_table.json', table.to_json(), indent=1)  # the table in use

    def blocks(candidate: tuple) -> list[list[float]]:
        return expand_group_ratios(space, candidate)

    def predicted_ms(candidate: tuple) -> float:
        return table.predict(blocks(candidate))

    dense = uniform(space, 0.0)
    dense_predicted = predicted_ms(dense)
    budget_ms = args.latency_budget_ms if args.latency_budget_ms is not None else args.latency_ratio * dense_predicted
    log(f'latency budget {budget_ms:.1f} ms (dense encoder predicted at {dense_predicted:.1f} ms)')
    check = None
    if args.check_samples:
        rng = np.random.default_rng(args.seed)
        sampled = [blocks(sample_group_ratios(space, choices, rng)) for _ in range(args.check_samples)]
        check = prediction_check(table, encoder, images, sampled, args.check_repeats, seed=args.seed)
        atomic_write_json(work_dir / 'latency_table_check.json', check, indent=1)
        log(f'latency table vs measurement on {len(sampled)} random configurations: mean error '
            f'{100 * check["mean_abs_relative_error"]:.1f}%, max {100 * check["max_abs_relative_error"]:.1f}% '
            f'(goal {100 * check["goal"]:.0f}%)')

    # -- scoring: full split, optional proxy subset, both cached on disk -------------------------------------
    def score_with(loop: ValLoop) -> Callable[[tuple], float]:
        if args.cache_inputs:
            loop.dataloader = CachedLoader(loop.dataloader)

        def score(candidate: tuple) -> float:
            encoder.set_pruning_ratios(blocks(candidate))
            metrics = loop.run()
            if args.metric not in metrics:
                raise KeyError(f'metric {args.metric!r} not among the evaluator results: {sorted(metrics)}')
            return float(metrics[args.metric])
        return score

    def scores(name: str, score_fn: Callable[[tuple], float]) -> ScoreStore | SharedScores:
        """The scores of one evaluation set: in the study when shared, else in ``scores_<name>.json``."""
        if shared is not None:
            return shared.scores(name, score_fn)
        samples = eval_set['samples'] if name == 'proxy' else 'all'
        return ScoreStore(work_dir / f'scores_{name}.json', score_fn,
                          dict(scored_on, eval_set=dict(source, samples=samples)))

    full_scores = scores('full', score_with(runner.val_loop))
    search_scores = full_scores
    if args.proxy_samples:
        indices = eval_set['samples']
        tokens = [val_dataset.get_data_info(i)['token'] for i in indices]
        search_scores = scores('proxy', score_with(proxy_loop(runner, cfg, indices, tokens)))
        log(f'scoring on a proxy subset of {len(indices)} of the {len(val_dataset)} validation samples, '
            f'the best {args.rescore_top} of each search re-scored on the full split')

    # -- the searches -------------------------------------------------------------------------------------
    evolution_cls, random_cls = (SharedEvolutionarySearch, SharedRandomSearch) if shared else \
        (EvolutionarySearch, RandomSearch)
    try:
        evolution = evolution_cls(space, search_scores, predicted_ms, budget_ms, choices,
                                  population_size=args.population, num_parents=args.parents,
                                  generations=args.generations, mutation_prob=args.mutation_prob, seed=args.seed,
                                  state_file=None if shared else work_dir / 'search_state.json',
                                  fingerprint=fingerprint).run(log=log)
        random_result = random_cls(space, search_scores, predicted_ms, budget_ms, len(evolution.history), choices,
                                   seed=args.random_seed,
                                   state_file=None if shared else work_dir / 'random_state.json',
                                   fingerprint=fingerprint).run(log=log)
    except NoCandidateInBudgetError as err:
        raise SystemExit(
            f'tools/search.py: {err}. The budget is {budget_ms / dense_predicted:.3f} x the dense encoder '
            f'({dense_predicted:.4g} ms predicted); the fastest configuration drawn is '
            f'{err.fastest / dense_predicted:.3f} x. Raise --latency-ratio / --latency-budget-ms above that. If '
            f'even the sparsest configurations are barely faster than dense, the encoder does too little work per '
            f'window for sparsity to pay (a narrow encoder or a small input; docs/benchmarks.md, issue 8)') from err

    def rescored(result: SearchResult) -> list[tuple]:
        """The candidates of a search re-scored on the full split: its top K with a proxy, else its best."""
        return [e.ratios for e in result.ranked()[:args.rescore_top]] if args.proxy_samples else [result.best.ratios]

    within = [r for r in choices if predicted_ms(uniform(space, r)) <= budget_ms]
    uniform_best_ratio = within[0] if within else None  # the densest uniform ratio within the budget
    uniform_scored = sorted({*args.uniform_ratios, *within[:1]})
    if shared is not None:
        # every worker takes a share of the full-split scores, rather than all waiting on one at a time
        full_scores.score_all([*rescored(evolution), *rescored(random_result),
                               *(uniform(space, r) for r in uniform_scored)], 'full split', log=log)

    def full_split_best(result: SearchResult, name: str) -> tuple[tuple, float]:
        """(candidate, full-split score) of the best of the top-K re-scored on the full split."""
        finalists = rescored(result)
        for i, c in enumerate(finalists):
            if args.proxy_samples and c not in full_scores:
                log(f'{name}: re-scoring on the full split, candidate {i + 1}/{len(finalists)}')
            full_scores(c)
        best = max(finalists, key=full_scores)
        return best, full_scores(best)

    evo_best, evo_score = full_split_best(evolution, 'evolution')
    random_best, random_score = full_split_best(random_result, 'random search')

    # -- uniform baselines: the densest uniform ratio within the budget, and the requested ones ---------------
    for i, r in enumerate(uniform_scored):
        if uniform(space, r) not in full_scores:
            log(f'uniform ratio {r}: scoring on the full split, {i + 1}/{len(uniform_scored)}')
        full_scores(uniform(space, r))
    if uniform_best_ratio is None:
        log('no uniform ratio meets the budget')

    # -- final measurement, interleaved against dense ------------------------------------------------------
    finals = {'dense': dense, 'evolution': evo_best, 'random': random_best}
    if uniform_best_ratio is not None:
        finals['uniform'] = uniform(space, uniform_best_ratio)
    log(f'timing {", ".join(finals)}: {args.final_repeats} interleaved rounds')
    times = measure_interleaved(encoder, images, [blocks(c) for c in finals.values()], args.final_repeats,
                                seed=args.seed)
    measured = {name: float(statistics.median(t)) for name, t in zip(finals, times)}

    def entry(name: str, score: float, evaluations: int, search_score: Optional[float] = None) -> dict:
        candidate, ratio = finals[name], measured[name] / measured['dense']
        meets = ratio <= args.latency_ratio if args.latency_ratio is not None else measured[name] <= budget_ms
        out = dict(score=score, predicted_latency_ms=predicted_ms(candidate), measured_latency_ms=measured[name],
                   measured_ratio=ratio, meets_budget=bool(meets), evaluations=evaluations,
                   group_ratios=[list(s) for s in candidate], pruning_ratios=blocks(candidate))
        if args.proxy_samples and search_score is not None:
            out['proxy_score'] = search_score
        return out

    evo_entry = entry('evolution', evo_score, len(evolution.history), search_scores(evo_best))
    best = dict(
        metric=args.metric, score=evo_score, latency_ms=measured['evolution'],
        predicted_latency_ms=evo_entry['predicted_latency_ms'], dense_latency_ms=measured['dense'],
        measured_ratio=evo_entry['measured_ratio'], meets_budget=evo_entry['meets_budget'],
        latency_budget_ms=budget_ms, group_ratios=evo_entry['group_ratios'], pruning_ratios=evo_entry['pruning_ratios'],
        budget=dict(latency_ratio=args.latency_ratio, latency_budget_ms=budget_ms,
                    dense_predicted_ms=dense_predicted, dense_measured_ms=measured['dense'],
                    final_repeats=args.final_repeats),
        scoring=dict(source, proxy_samples=args.proxy_samples,
                     rescore_top=args.rescore_top if args.proxy_samples else None),
        latency_table=dict(file=str(work_dir / 'latency_table.json'), key=table.key,
                           check=None if check is None else {k: check[k] for k in (
                               'mean_abs_relative_error', 'max_abs_relative_error', 'goal', 'meets_goal')}),
        evolution=evo_entry,
        random=dict(entry('random', random_score, len(random_result.history), search_scores(random_best)),
                    seed=args.random_seed),
        uniform=None if uniform_best_ratio is None else dict(
            entry('uniform', full_scores(finals['uniform']), 1), ratio=uniform_best_ratio),
        uniform_scored=[dict(ratio=r, score=full_scores(uniform(space, r)),
                             predicted_latency_ms=predicted_ms(uniform(space, r))) for r in uniform_scored],
    )
    if shared is not None:
        best['study'] = args.study_name
    atomic_write_json(work_dir / 'best.json', best, indent=1)
    atomic_write_json(work_dir / 'search_history.json', dict(
        evolution=[e.to_json() for e in evolution.history], random=[e.to_json() for e in random_result.history],
        full_split=[dict(ratios=[list(s) for s in c], score=s, predicted_latency_ms=predicted_ms(c))
                    for c, s in full_scores.scores.items()]), indent=1)
    plot_search(evolution, random_result, best, work_dir / 'search_pareto.png')
    print_summary(best, work_dir / 'best.json')
    return best


def plot_search(evolution: SearchResult, random_result: SearchResult, best: dict, path: Path) -> None:
    """Score vs predicted latency: every trial, uniform ratios, the random and evolutionary bests, dense and
    the budget."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from projects.sparsevit_bevdet.utils.atomic_io import atomic_save_figure

    trial_score = 'proxy score' if best['scoring']['proxy_samples'] else 'score'
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    points = ax.scatter([e.latency for e in evolution.history], [e.score for e in evolution.history],
                        c=[e.generation for e in evolution.history], cmap='viridis', s=18,
                        label=f'evolution trials ({trial_score})')
    fig.colorbar(points, ax=ax, label='generation')
    ax.scatter([e.latency for e in random_result.history], [e.score for e in random_result.history], marker='x',
               s=18, color='gray', label=f'random trials ({trial_score})')
    uni = best['uniform_scored']
    ax.plot([u['predicted_latency_ms'] for u in uni], [u['score'] for u in uni], 'o-', color='tab:green',
            label='uniform ratios')
    for u in uni:
        ax.annotate(f"{u['ratio']:g}", (u['predicted_latency_ms'], u['score']), fontsize=7,
                    textcoords='offset points', xytext=(3, 3))
    for name, marker, color in (('random', '^', 'tab:blue'), ('evolution', '*', 'tab:orange')):
        ax.scatter([best[name]['predicted_latency_ms']], [best[name]['score']], marker=marker, s=160, color=color,
                   label=f'{name} best', zorder=3)
    ax.axvline(best['latency_budget_ms'], color='tab:red', linestyle='--', label='latency budget')
    ax.axvline(best['budget']['dense_predicted_ms'], color='black', linestyle=':', label='dense (all ratios 0)')
    ax.set_xlabel('image-encoder latency (ms, predicted by the latency table)')
    ax.set_ylabel(best['metric'])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def print_summary(best: dict, best_path: Path) -> None:
    budget = best['budget']
    spec = f"{budget['latency_ratio']:g} x dense = " if budget['latency_ratio'] is not None else ''
    print(f"\nbudget {spec}{budget['latency_budget_ms']:.1f} ms; dense {budget['dense_predicted_ms']:.1f} ms "
          f"predicted, {budget['dense_measured_ms']:.1f} ms measured")
    check = best['latency_table']['check']
    if check is not None:
        print(f"latency table error on random configurations: mean {100 * check['mean_abs_relative_error']:.1f}%, "
              f"max {100 * check['max_abs_relative_error']:.1f}% (goal {100 * check['goal']:.0f}%)")
    print(f"\n{'method':<14}{best['metric']:>14}{'pred ms':>10}{'meas ms':>10}{'vs dense':>9}{'budget':>8}  "
          f'group ratios per stage')
    rows = [('evolution', best['evolution']), ('random', best['random'])]
    if best['uniform'] is not None:
        rows.append((f"uniform {best['uniform']['ratio']:g}", best['uniform']))
    for name, e in rows:
        print(f"{name:<14}{e['score']:>14.4f}{e['predicted_latency_ms']:>10.1f}{e['measured_latency_ms']:>10.1f}"
              f"{e['measured_ratio']:>9.2f}{'met' if e['meets_budget'] else 'MISSED':>8}  {e['group_ratios']}")
    print(f"{'dense':<14}{'-':>14}{budget['dense_predicted_ms']:>10.1f}{budget['dense_measured_ms']:>10.1f}"
          f"{1.0:>9.2f}")
    # --pruning-ratios sets model.img_backbone (BEVDet) or model.backbone (mmdet / mmseg) alike
    print(f'\nuse: tools/test.py CONFIG CHECKPOINT --pruning-ratios {best_path}  (ratios: {best["pruning_ratios"]})')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from mmengine.config import Config

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin, safe checkpoint loading)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    run_search(cfg, args.checkpoint, args)


if __name__ == '__main__':
    main()
