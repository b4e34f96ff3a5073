"""The search as a library: a trained detector's SparseViT ratios searched under an encoder latency budget.

::

    from mmengine.config import Config
    from projects.sparsevit_bevdet.search import SearchOptions, run_search

    cfg = Config.fromfile('configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_adapt.py')
    options = SearchOptions(latency_ratio=0.6, proxy_samples=32, work_dir='work_dirs/search')
    report = run_search(cfg, 'work_dirs/adapt/iter_250.pth', options)
    print(report.record['score'], report.record['pruning_ratios'])

:func:`run_search` builds an mmengine ``Runner`` from the config (or takes one that
:func:`build_search_runner` made, to search one detector several times without rebuilding it), loads the
checkpoint (refused if it does not fit the model, unless ``allow_partial_load``), checks that the evaluator
produces the metric, then:

1. latency: the per-block latency table of the encoder on one validation sample's input (reused from the
   work dir when made in the same setting), calibrated against whole measured configurations with the dense
   encoder among them (:func:`~.latency_table.ensure_calibrated`), so a relative budget is a fraction of the
   *measured* dense encoder; the table's error on random configurations is checked;
2. scoring: the evaluator's metric on the full validation split, or on an evenly spread proxy subset with the
   best candidates re-scored on the full split; every score saved at once (files, or a shared Optuna study);
3. the evolutionary search, a random search with as many evaluations and uniform ratios, all scored alike;
4. the results timed again against dense (interleaved rounds);

and writes ``best.json`` (:attr:`SearchReport.record`), ``search_history.json``, ``search_pareto.png``,
``latency_table.json`` (unless ``options.latency_table`` names another file, which searches on one machine may
share) and ``latency_table_check.json`` in the work dir. Re-running resumes without repeating an
evaluation; a state of another search is refused (:class:`~.state.StateMismatchError`), and so is a second
process on the same work dir. Refusals a caller can fix raise :class:`~.options.SearchError`.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

from ..backbones.sparsevit import expand_group_ratios
from .evolution import EvolutionarySearch, NoCandidateInBudgetError, RandomSearch, SearchResult, sample_group_ratios
from .latency_table import (
    BlockRatios,
    LatencyTable,
    ensure_calibrated,
    load_or_profile,
    measure_interleaved,
    prediction_check,
)
from .options import SearchError, SearchOptions
from .report import plot_search
from .scoring import (
    ValScore,
    check_metric_key,
    encoder_input,
    eval_set_source,
    file_sha256,
    proxy_indices,
    proxy_loop,
    uniform,
)
from .state import GroupRatios, ScoreStore

if TYPE_CHECKING:
    from mmengine.config import Config
    from mmengine.runner import Runner

    from .shared_study import SharedScores, SharedStudy

__all__ = ['BudgetInfeasibleError', 'SearchReport', 'build_search_runner', 'default_work_dir', 'run_search']

Log = Callable[[str], None]
Scores = Union[ScoreStore, 'SharedScores']


class BudgetInfeasibleError(SearchError):
    """No configuration drawn is predicted within the budget (raised before anything was scored)."""


@dataclass
class SearchReport:
    """A finished search.

    Attributes:
        record: what ``best.json`` holds: the evolutionary best at the top level (``score``, ``pruning_ratios``,
            ``measured_ratio``, ``meets_budget``, ...), ``evolution`` / ``random`` / ``uniform`` entries, the
            budget, the scoring and the latency table with its calibration and check.
        evolution: every evaluation of the evolutionary search (scores on the set it searched on).
        random: the same for the random search.
        full_scores: full-split score of every candidate scored there.
        table: the calibrated latency table the search predicted with.
        work_dir: where the outputs are.
    """

    record: dict
    evolution: SearchResult
    random: SearchResult
    full_scores: dict[GroupRatios, float]
    table: LatencyTable
    work_dir: Path

    @property
    def best_json(self) -> Path:
        return self.work_dir / 'best.json'


def default_work_dir(cfg: Config) -> Path:
    """``work_dirs/search_<config file name>``."""
    if not cfg.filename:
        raise SearchError('the config has no file name to name the work dir after; give <work_dir>')
    return Path('work_dirs') / f'search_{Path(cfg.filename).stem}'


def build_search_runner(cfg: Config, checkpoint: str, work_dir: str | Path, allow_partial_load: bool = False) -> Runner:
    """An mmengine ``Runner`` of ``cfg`` (a copy; logs in ``work_dir``) with ``checkpoint`` loaded, ready for
    :func:`run_search`: a checkpoint that does not fit the model is refused (``CheckpointMismatchError``)
    unless ``allow_partial_load``, and no ``CheckpointHook`` runs (nothing is trained; a hook with
    ``save_best``, as mmseg's configs have, would save a checkpoint after every candidate's validation)."""
    from ..utils.checkpoint_fit import add_checkpoint_fit_hook
    from ..utils.entrypoint import build_runner

    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(work_dir)
    cfg.load_from = str(checkpoint)
    if cfg.get('default_hooks', {}).get('checkpoint') is not None:
        cfg.default_hooks.checkpoint = None
    add_checkpoint_fit_hook(cfg, str(checkpoint), allow_partial_load)
    runner = build_runner(cfg)
    runner.load_checkpoint(str(checkpoint), map_location='cpu')
    return runner


def run_search(cfg: Config, checkpoint: str | Path, options: SearchOptions,
               runner: Optional[Runner] = None) -> SearchReport:
    """Search the pruning ratios of ``checkpoint``'s detector under ``options``' budget (see the module docstring).

    Args:
        cfg: the detector's config (its model, validation loader and evaluator).
        checkpoint: the trained weights.
        options: the search; ``options.work_dir`` defaults to :func:`default_work_dir`.
        runner: a runner :func:`build_search_runner` made for ``checkpoint``, reused instead of building one
            (several searches of one detector: each needs its own ``work_dir``; its log stays where the runner
            was built, and whether a partial load was allowed was decided there).

    Raises:
        SearchError: options that cannot be right, a metric the evaluator does not produce, a budget no
            configuration meets.
    """
    import torch

    from ..utils.workdir_lock import WorkDirLock

    options = options.checked()
    if options.threads:
        torch.set_num_threads(options.threads)
    work_dir = Path(options.work_dir or default_work_dir(cfg))
    if runner is not None and runner.cfg.get('load_from') != str(checkpoint):
        raise SearchError(f'the runner was built for checkpoint {runner.cfg.get("load_from")!r}, not '
                          f'{str(checkpoint)!r} (make it with build_search_runner)')
    with WorkDirLock(work_dir, 'a search (run_search)'):  # before the runner writes its log into the work dir
        if runner is None:
            runner = build_search_runner(cfg, str(checkpoint), work_dir, options.allow_partial_load)
        return _SearchRun(runner, str(checkpoint), options, work_dir).run()


class _SearchRun:
    """One search on a built runner; each step a method, in the order :meth:`run` calls them."""

    def __init__(self, runner: Runner, checkpoint: str, options: SearchOptions, work_dir: Path) -> None:
        from ..engine import find_image_encoder

        self.runner, self.cfg, self.checkpoint = runner, runner.cfg, checkpoint
        self.options, self.work_dir = options, work_dir
        self.log: Log = runner.logger.info
        check_metric_key(runner, self.cfg, options.metric, self.log)
        self.model = runner.model
        self.model.eval()
        self.encoder = find_image_encoder(self.model)
        self.space = self.encoder.search_space()
        self.choices = sorted({float(r) for r in options.ratio_choices})
        self.val_dataset = runner.val_loop.dataloader.dataset
        batch = self.model.data_preprocessor(next(iter(runner.val_loop.dataloader)), False)
        self.images = encoder_input(batch['inputs'])
        self.shared: Optional[SharedStudy] = None
        self.table: Optional[LatencyTable] = None
        self.table_file = Path(options.latency_table or work_dir / 'latency_table.json')

    # -- latency ---------------------------------------------------------------------------------------
    def blocks(self, candidate: GroupRatios) -> list[list[float]]:
        return expand_group_ratios(self.space, candidate)

    def predicted_ms(self, candidate: GroupRatios) -> float:
        return self.table.predict(self.blocks(candidate))

    def measure(self, configs: list[BlockRatios], repeats: int) -> list[list[float]]:
        """Times (ms) of ``repeats`` interleaved rounds of each configuration of the encoder."""
        return measure_interleaved(self.encoder, self.images, configs, repeats, seed=self.options.seed)

    def latency_table(self) -> LatencyTable:
        """The calibrated table of this setting: the work dir's (or, with a study, the study's) if made in the
        same setting, else profiled and calibrated now."""
        options, path = self.options, self.table_file
        if options.storage:
            from .shared_study import SharedStudy

            self.shared = SharedStudy(options.storage, options.study_name, options.heartbeat_interval,
                                      options.grace_period)
            if self.shared.copy_latency_table(path):  # a joining worker need not profile
                self.log(f'study {options.study_name!r}: using its latency table')
        table = load_or_profile(path, self.encoder, self.images, self.choices, options.table_repeats, log=self.log)
        return ensure_calibrated(path, table, self.measure, options.calibration_repeats, log=self.log)

    def fingerprint(self) -> dict:
        """What the search's states depend on: checkpoint, metric, evaluation set, latency table and its
        calibration, budget."""
        options = self.options
        return dict(self.scored_on, eval_set=self.eval_set(self.proxy_indices), latency_table=self.table.key,
                    latency_calibration=self.table.calibration.sha256()[:16],
                    budget=dict(latency_ratio=options.latency_ratio, latency_budget_ms=options.latency_budget_ms))

    def join_study(self, fingerprint: dict) -> None:
        """With a study: join it (refused if its fingerprint differs) and predict with its table, so every
        worker draws the same candidates."""
        from ..utils.atomic_io import atomic_write_json

        options = self.options
        self.table = LatencyTable.from_json(self.shared.join(dict(fingerprint, search=dict(
            seed=options.seed, random_seed=options.random_seed, population=options.population,
            parents=options.parents, mutation_prob=options.mutation_prob)), self.table.to_json()))
        atomic_write_json(self.table_file, self.table.to_json(), indent=1)  # the one in use

    def check_table(self) -> Optional[dict]:
        """The calibrated table against ``check_samples`` random configurations, timed interleaved."""
        import numpy as np

        from ..utils.atomic_io import atomic_write_json

        options = self.options
        if not options.check_samples:
            return None
        rng = np.random.default_rng(options.seed)
        sampled = [self.blocks(sample_group_ratios(self.space, self.choices, rng))
                   for _ in range(options.check_samples)]
        check = prediction_check(self.table, self.encoder, self.images, sampled, options.check_repeats,
                                 seed=options.seed)
        atomic_write_json(self.work_dir / 'latency_table_check.json', check, indent=1)
        self.log(f'latency table vs measurement on {len(sampled)} random configurations: mean error '
                 f'{100 * check["mean_abs_relative_error"]:.1f}%, max {100 * check["max_abs_relative_error"]:.1f}% '
                 f'(goal {100 * check["goal"]:.0f}%)')
        return check

    # -- scoring ---------------------------------------------------------------------------------------
    @cached_property
    def scored_on(self) -> dict:
        """What every score depends on: the checkpoint (hashed once per run) and the metric."""
        return dict(checkpoint_sha256=file_sha256(self.checkpoint), metric=self.options.metric)

    @cached_property
    def source(self) -> dict:
        return eval_set_source(self.cfg.val_dataloader.dataset)

    @cached_property
    def proxy_indices(self) -> Optional[list[int]]:
        if not self.options.proxy_samples:
            return None
        return proxy_indices(len(self.val_dataset), self.options.proxy_samples)

    def eval_set(self, samples: Optional[list[int]]) -> dict:
        """The evaluation set of the samples ``samples`` (None: the full split)."""
        return dict(self.source, samples='all' if samples is None else samples)

    def scores(self, name: str, score_fn: ValScore, samples: Optional[list[int]]) -> Scores:
        """The scores of one evaluation set: in the study when shared, else in ``scores_<name>.json``."""
        if self.shared is not None:
            return self.shared.scores(name, score_fn)
        return ScoreStore(self.work_dir / f'scores_{name}.json', score_fn,
                          dict(self.scored_on, eval_set=self.eval_set(samples)))

    def score_stores(self) -> tuple[Scores, Scores]:
        """(full-split scores, the scores the searches rank by: the proxy subset's, or the full split's)."""
        options = self.options
        full = self.scores('full', ValScore(self.encoder, self.space, self.runner.val_loop, options.metric,
                                            options.cache_inputs), None)
        indices = self.proxy_indices
        if indices is None:
            return full, full
        tokens = [self.val_dataset.get_data_info(i)['token'] for i in indices]
        loop = proxy_loop(self.runner, self.cfg, indices, tokens)
        proxy = self.scores('proxy', ValScore(self.encoder, self.space, loop, options.metric, options.cache_inputs),
                            indices)
        self.log(f'scoring on a proxy subset of {len(indices)} of the {len(self.val_dataset)} validation samples, '
                 f'the best {options.rescore_top} of each search re-scored on the full split')
        return full, proxy

    # -- the searches ----------------------------------------------------------------------------------
    def searches(self, search_scores: Scores, budget_ms: float, dense_ms: float,
                 fingerprint: dict) -> tuple[SearchResult, SearchResult]:
        """The evolutionary search, then a random search with as many evaluations."""
        options = self.options
        evolution_cls, random_cls = EvolutionarySearch, RandomSearch
        if self.shared is not None:
            from .shared_study import SharedEvolutionarySearch, SharedRandomSearch

            evolution_cls, random_cls = SharedEvolutionarySearch, SharedRandomSearch
        try:
            evolution = evolution_cls(self.space, search_scores, self.predicted_ms, budget_ms, self.choices,
                                      population_size=options.population, num_parents=options.parents,
                                      generations=options.generations, mutation_prob=options.mutation_prob,
                                      seed=options.seed, state_file=self.state_file('search_state.json'),
                                      fingerprint=fingerprint).run(log=self.log)
            random_result = random_cls(self.space, search_scores, self.predicted_ms, budget_ms,
                                       len(evolution.history), self.choices, seed=options.random_seed,
                                       state_file=self.state_file('random_state.json'),
                                       fingerprint=fingerprint).run(log=self.log)
        except NoCandidateInBudgetError as err:
            raise BudgetInfeasibleError(
                f'{err}. The budget is {budget_ms / dense_ms:.3f} x the dense encoder ({dense_ms:.4g} ms '
                f'predicted); the fastest configuration drawn is {err.fastest / dense_ms:.3f} x. Raise '
                f'<latency_ratio> / <latency_budget_ms> above that. If even the sparsest configurations are barely '
                f'faster than dense, the encoder does too little work per window for sparsity to pay (a narrow '
                f'encoder or a small input; docs/benchmarks.md, issue 8)') from err
        return evolution, random_result

    def state_file(self, name: str) -> Optional[Path]:
        """A search's state file in the work dir; none with a study (the state is the study's)."""
        return None if self.shared is not None else self.work_dir / name

    def finalists(self, result: SearchResult) -> list[GroupRatios]:
        """The candidates of a search re-scored on the full split: its top K with a proxy, else its best."""
        if self.options.proxy_samples:
            return [e.ratios for e in result.ranked()[:self.options.rescore_top]]
        return [result.best.ratios]

    def full_split_best(self, result: SearchResult, name: str, full_scores: Scores) -> GroupRatios:
        """The best of a search's finalists by full-split score."""
        finalists = self.finalists(result)
        for i, candidate in enumerate(finalists):
            if self.options.proxy_samples and candidate not in full_scores:
                self.log(f'{name}: re-scoring on the full split, candidate {i + 1}/{len(finalists)}')
            full_scores(candidate)
        return max(finalists, key=full_scores)

    def score_uniform(self, ratios: list[float], full_scores: Scores) -> None:
        for i, r in enumerate(ratios):
            if uniform(self.space, r) not in full_scores:
                self.log(f'uniform ratio {r}: scoring on the full split, {i + 1}/{len(ratios)}')
            full_scores(uniform(self.space, r))

    def measure_finals(self, finals: dict[str, GroupRatios]) -> dict[str, float]:
        """Median encoder time (ms) of each final configuration, interleaved with the others."""
        self.log(f'timing {", ".join(finals)}: {self.options.final_repeats} interleaved rounds')
        times = self.measure([self.blocks(c) for c in finals.values()], self.options.final_repeats)
        return {name: float(statistics.median(t)) for name, t in zip(finals, times)}

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> SearchReport:
        from ..utils.atomic_io import atomic_write_json

        options = self.options
        self.table = self.latency_table()
        fingerprint = self.fingerprint()
        if self.shared is not None:
            self.join_study(fingerprint)
        dense = uniform(self.space, 0.0)
        dense_predicted = self.predicted_ms(dense)
        budget_ms = options.latency_budget_ms if options.latency_budget_ms is not None else \
            options.latency_ratio * dense_predicted
        self.log(f'latency budget {budget_ms:.1f} ms (dense encoder predicted at {dense_predicted:.1f} ms, '
                 f'calibrated against its measurement)')
        check = self.check_table()
        full_scores, search_scores = self.score_stores()
        evolution, random_result = self.searches(search_scores, budget_ms, dense_predicted, fingerprint)

        within = [r for r in self.choices if self.predicted_ms(uniform(self.space, r)) <= budget_ms]
        uniform_best_ratio = within[0] if within else None  # the densest uniform ratio within the budget
        uniform_scored = sorted({*options.uniform_ratios, *within[:1]})
        if self.shared is not None:
            # every worker takes a share of the full-split scores, rather than all waiting on one at a time
            full_scores.score_all([*self.finalists(evolution), *self.finalists(random_result),
                                   *(uniform(self.space, r) for r in uniform_scored)], 'full split', log=self.log)
        evo_best = self.full_split_best(evolution, 'evolution', full_scores)
        random_best = self.full_split_best(random_result, 'random search', full_scores)
        self.score_uniform(uniform_scored, full_scores)
        if uniform_best_ratio is None:
            self.log('no uniform ratio meets the budget')

        finals = {'dense': dense, 'evolution': evo_best, 'random': random_best}
        if uniform_best_ratio is not None:
            finals['uniform'] = uniform(self.space, uniform_best_ratio)
        measured = self.measure_finals(finals)
        record = _Record(self, finals, measured, full_scores, search_scores, budget_ms).build(
            evolution, random_result, uniform_best_ratio, uniform_scored, check, dense_predicted)
        atomic_write_json(self.work_dir / 'best.json', record, indent=1)
        atomic_write_json(self.work_dir / 'search_history.json', dict(
            evolution=[e.to_json() for e in evolution.history], random=[e.to_json() for e in random_result.history],
            full_split=[dict(ratios=[list(s) for s in c], score=s, predicted_latency_ms=self.predicted_ms(c))
                        for c, s in full_scores.scores.items()]), indent=1)
        plot_search(evolution, random_result, record, self.work_dir / 'search_pareto.png')
        return SearchReport(record=record, evolution=evolution, random=random_result,
                            full_scores=dict(full_scores.scores), table=self.table, work_dir=self.work_dir)


class _Record:
    """The ``best.json`` record of a finished search."""

    def __init__(self, run: _SearchRun, finals: dict[str, GroupRatios], measured: dict[str, float],
                 full_scores: Scores, search_scores: Scores, budget_ms: float) -> None:
        self.run, self.options = run, run.options
        self.finals, self.measured = finals, measured
        self.full_scores, self.search_scores, self.budget_ms = full_scores, search_scores, budget_ms

    def entry(self, name: str, score: float, evaluations: int, proxy: bool = False) -> dict:
        """One final configuration: score, predicted and measured latency, ratio to dense, budget met."""
        candidate, measured = self.finals[name], self.measured[name]
        ratio = measured / self.measured['dense']
        options = self.options
        meets = ratio <= options.latency_ratio if options.latency_ratio is not None else measured <= self.budget_ms
        out = dict(score=score, predicted_latency_ms=self.run.predicted_ms(candidate), measured_latency_ms=measured,
                   measured_ratio=ratio, meets_budget=bool(meets), evaluations=evaluations,
                   group_ratios=[list(s) for s in candidate], pruning_ratios=self.run.blocks(candidate))
        if proxy and options.proxy_samples:
            out['proxy_score'] = self.search_scores(candidate)
        return out

    def latency_table(self, check: Optional[dict]) -> dict:
        table = self.run.table
        cal = table.calibration
        return dict(file=str(self.run.table_file), key=table.key,
                    calibration=dict(ratios=cal.ratios, predicted_ms=cal.predicted_ms, measured_ms=cal.measured_ms,
                                     factors=cal.factors, repeats=cal.repeats),
                    check=None if check is None else {k: check[k] for k in (
                        'mean_abs_relative_error', 'max_abs_relative_error', 'goal', 'meets_goal')})

    def build(self, evolution: SearchResult, random_result: SearchResult, uniform_best_ratio: Optional[float],
              uniform_scored: list[float], check: Optional[dict], dense_predicted: float) -> dict:
        options, run, full = self.options, self.run, self.full_scores
        evo = self.entry('evolution', full(self.finals['evolution']), len(evolution.history), proxy=True)
        dense = uniform(run.space, 0.0)
        record = dict(
            metric=options.metric, score=evo['score'], latency_ms=self.measured['evolution'],
            predicted_latency_ms=evo['predicted_latency_ms'], dense_latency_ms=self.measured['dense'],
            measured_ratio=evo['measured_ratio'], meets_budget=evo['meets_budget'],
            latency_budget_ms=self.budget_ms, group_ratios=evo['group_ratios'], pruning_ratios=evo['pruning_ratios'],
            budget=dict(latency_ratio=options.latency_ratio, latency_budget_ms=self.budget_ms,
                        dense_predicted_ms=dense_predicted,
                        dense_uncalibrated_ms=run.table.predict_uncalibrated(run.blocks(dense)),
                        dense_measured_ms=self.measured['dense'], final_repeats=options.final_repeats),
            scoring=dict(run.source, proxy_samples=options.proxy_samples,
                         rescore_top=options.rescore_top if options.proxy_samples else None),
            latency_table=self.latency_table(check),
            evolution=evo,
            random=dict(self.entry('random', full(self.finals['random']), len(random_result.history), proxy=True),
                        seed=options.random_seed),
            uniform=None if uniform_best_ratio is None else dict(
                self.entry('uniform', full(self.finals['uniform']), 1), ratio=uniform_best_ratio),
            uniform_scored=[dict(ratio=r, score=full(uniform(run.space, r)),
                                 predicted_latency_ms=run.predicted_ms(uniform(run.space, r))) for r in uniform_scored],
        )
        if run.shared is not None:
            record['study'] = options.study_name
        return record
