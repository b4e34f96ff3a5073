"""Evolutionary search of per-group pruning ratios under a latency budget (SparseViT, Sec. 3.4), and the
random-search baseline it is compared with.

A candidate holds one ratio per search group (a W-MSA / SW-MSA pair; see ``SparseViT.search_space()``),
sorted within each stage as SparseViT requires. :class:`EvolutionarySearch` keeps a population of
candidates that meet the latency budget, and each generation:

1. scores them (higher is better, e.g. NDS or mAP on the validation split);
2. keeps the best ``num_parents``;
3. refills the population with mutations (each group re-drawn with ``mutation_prob``) and crossovers
   (each stage taken from one of two parents) of the parents that meet the budget.

:class:`RandomSearch` scores ``num_evaluations`` distinct random candidates within the budget: the
baseline an evolutionary result must beat with the same number of evaluations.

Scores and latencies are cached per candidate, so a candidate is never evaluated twice. With a
``state_file`` the state is written atomically after every evaluation: all evaluations, the population,
the generation index and the random state, and a fingerprint (the budget, the ratio choices and whatever
the caller adds, e.g. checkpoint and evaluation set). A re-run with the same file resumes where the
interrupted run stopped, without repeating finished evaluations; a state with another fingerprint is
refused with an error naming the fields that differ.

The searches see the model only through the two callables they are given; ``tools/search.py`` builds them
from a config, a checkpoint and SparseViT's public API.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..backbones.sparsevit import StageSearchSpace, expand_group_ratios
from ..utils.atomic_io import atomic_write_json
from .state import (
    EVALUATION_FIELDS,
    RATIOS,
    GroupRatios,
    canonical,
    check_fingerprint,
    check_state_shape,
    fingerprint_diffs,
    read_state,
)

DEFAULT_RATIO_CHOICES = tuple(round(0.1 * i, 1) for i in range(9))
Log = Callable[[str], None]


class NoCandidateInBudgetError(ValueError):
    """No sampled configuration is predicted within the latency budget; ``fastest`` is the fastest one seen."""

    def __init__(self, budget: float, tries: int, fastest: float) -> None:
        super().__init__(f'no candidate within the latency budget {budget:.4g} after {tries} draws '
                         f'(fastest seen: {fastest:.4g})')
        self.budget = budget
        self.fastest = fastest


@dataclass
class Evaluation:
    """One evaluated candidate."""

    ratios: GroupRatios
    score: float
    latency: float
    generation: int

    def to_json(self) -> dict:
        return dict(ratios=[list(s) for s in self.ratios], score=self.score, latency=self.latency,
                    generation=self.generation)


@dataclass
class SearchResult:
    """The best candidate within the budget, and every evaluation of the run."""

    best: Evaluation
    history: list[Evaluation] = field(default_factory=list)

    def block_ratios(self, space: Sequence[StageSearchSpace]) -> list[list[float]]:
        """The best candidate in the backbone's per-block format (for ``set_pruning_ratios``)."""
        return expand_group_ratios(space, self.best.ratios)

    def ranked(self) -> list[Evaluation]:
        """Evaluations by decreasing score."""
        return sorted(self.history, key=lambda e: -e.score)


def sample_group_ratios(space: Sequence[StageSearchSpace], choices: Sequence[float],
                        rng: np.random.Generator) -> GroupRatios:
    """A uniformly random candidate: every group's ratio drawn from ``choices``, sorted within stages."""
    return canonical([rng.choice(np.asarray(choices), size=len(s.group_blocks)) for s in space])


class _BudgetedSearch:
    """What both searches share: candidates within the budget, the latency cache, scoring (one log line
    per new evaluation) and the resumable state file."""

    def __init__(self, space: Sequence[StageSearchSpace], score_fn: Callable[[GroupRatios], float],
                 latency_fn: Callable[[GroupRatios], float], latency_budget: float,
                 ratio_choices: Sequence[float], seed: int, state_file: Optional[str | Path],
                 fingerprint: Optional[dict], max_sampling_tries: int) -> None:
        choices = sorted({float(r) for r in ratio_choices})
        if not choices or not all(0.0 <= r < 1.0 for r in choices):
            raise ValueError(f'ratio_choices must be ratios in [0, 1), got {ratio_choices!r}')
        self.space = list(space)
        self.score_fn, self.latency_fn = score_fn, latency_fn
        self.latency_budget = float(latency_budget)
        self.choices = np.array(choices)
        self.max_sampling_tries = max_sampling_tries
        self.state_file = Path(state_file) if state_file is not None else None
        self.fingerprint = dict(search=type(self).__name__, latency_budget=self.latency_budget,
                                ratio_choices=choices, **(fingerprint or {}))
        self.rng = np.random.default_rng(seed)
        self.latencies: dict[GroupRatios, float] = {}
        self.evaluations: dict[GroupRatios, Evaluation] = {}
        self.generation = 0
        self.log: Log = print

    # -- candidates --------------------------------------------------------------------------------
    def random_candidate(self) -> GroupRatios:
        return sample_group_ratios(self.space, self.choices, self.rng)

    def latency(self, candidate: GroupRatios) -> float:
        if candidate not in self.latencies:
            self.latencies[candidate] = float(self.latency_fn(candidate))
        return self.latencies[candidate]

    def within_budget(self, candidate: GroupRatios) -> bool:
        return self.latency(candidate) <= self.latency_budget

    def _draw(self, make: Callable[..., GroupRatios], taken: set[GroupRatios], *args) -> Optional[GroupRatios]:
        """``make(*args)`` until a new candidate within the budget comes out (None after too many tries)."""
        for _ in range(self.max_sampling_tries):
            candidate = make(*args)
            if candidate not in taken and self.within_budget(candidate):
                return candidate
        return None

    def _no_candidate_error(self) -> NoCandidateInBudgetError:
        return NoCandidateInBudgetError(self.latency_budget, self.max_sampling_tries, min(self.latencies.values()))

    # -- state ---------------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    # the fields of _extra_state, as read_state checks them
    _EXTRA_FIELDS: dict = {}

    def _save(self) -> None:
        if self.state_file is None:
            return
        atomic_write_json(self.state_file, dict(
            fingerprint=self.fingerprint, generation=self.generation,
            evaluations=[e.to_json() for e in self.evaluations.values()],
            latencies=[dict(ratios=[list(s) for s in c], latency=v) for c, v in self.latencies.items()],
            rng=self.rng.bit_generator.state, **self._extra_state()), indent=1)

    def _load(self) -> Optional[dict]:
        """Restore the shared state from the file (None if there is none); returns the whole state."""
        if self.state_file is None:
            return None
        state = read_state(self.state_file, dict(
            fingerprint=dict, generation=int, evaluations=[EVALUATION_FIELDS],
            latencies=[dict(ratios=RATIOS, latency=float)], rng=dict))
        if state is None:
            return None
        diffs = fingerprint_diffs(state['fingerprint'], self.fingerprint)
        if diffs and not state['evaluations']:
            # nothing would be lost (e.g. a run that stopped at its first evaluation on a wrong --metric)
            self.log(f'{self.state_file} was written by a different search ({"; ".join(diffs)}) but holds no '
                     'evaluation: starting afresh')
            return None
        check_fingerprint(self.state_file, state['fingerprint'], self.fingerprint)
        # the fields of this kind of search, once the fingerprint says it is one
        check_state_shape(self.state_file, state, self._EXTRA_FIELDS)
        self.generation = state['generation']
        for e in state['evaluations']:
            ratios = canonical(e['ratios'])
            self.evaluations[ratios] = Evaluation(ratios, e['score'], e['latency'], e['generation'])
        for item in state['latencies']:
            self.latencies[canonical(item['ratios'])] = item['latency']
        self.rng.bit_generator.state = state['rng']
        return state

    # -- scoring -------------------------------------------------------------------------------------
    def _score(self, candidate: GroupRatios, where: str) -> Evaluation:
        """Score ``candidate`` unless done before; the state is saved right after a new evaluation."""
        if candidate not in self.evaluations:
            start = time.perf_counter()
            score = float(self.score_fn(candidate))
            self.evaluations[candidate] = Evaluation(candidate, score, self.latency(candidate), self.generation)
            self._save()
            self.log(f'{where}: score {score:.4f}, latency {self.latency(candidate):.4g} '
                     f'(budget {self.latency_budget:.4g}), {time.perf_counter() - start:.1f} s')
        return self.evaluations[candidate]

    def _score_many(self, candidates: Sequence[GroupRatios], where: str) -> list[Evaluation]:
        """Score each of ``candidates`` in turn (a search shared through a study splits them among workers)."""
        n = len(candidates)
        return [self._score(c, f'{where}, candidate {i + 1}/{n}') for i, c in enumerate(candidates)]

    def _result(self, candidates: Sequence[GroupRatios]) -> SearchResult:
        evaluated = [self.evaluations[c] for c in candidates]
        history = sorted(evaluated, key=lambda e: (e.generation, -e.score))
        best = max((e for e in evaluated if e.latency <= self.latency_budget), key=lambda e: e.score)
        return SearchResult(best, history)


class EvolutionarySearch(_BudgetedSearch):
    """Latency-constrained evolutionary search over SparseViT's pruning ratios.

    Args:
        space: ``SparseViT.search_space()``.
        score_fn: candidate -> score, higher is better (e.g. NDS of the detector with those ratios).
        latency_fn: candidate -> latency (any unit, the budget's).
        latency_budget: candidates above it are discarded without being scored.
        ratio_choices: the ratios a group can take.
        population_size, num_parents, generations: the evolution's sizes.
        mutation_prob: probability that a mutation re-draws a given group.
        seed: seed of the search's random generator.
        state_file: JSON file for resuming (written after every evaluation).
        fingerprint: what else the state depends on (JSON values); a state with other values is refused.
        max_sampling_tries: draws allowed to find each new candidate within the budget.
    """

    def __init__(self, space: Sequence[StageSearchSpace], score_fn: Callable[[GroupRatios], float],
                 latency_fn: Callable[[GroupRatios], float], latency_budget: float,
                 ratio_choices: Sequence[float] = DEFAULT_RATIO_CHOICES,
                 population_size: int = 20, num_parents: int = 10, generations: int = 10,
                 mutation_prob: float = 0.2, seed: int = 0, state_file: Optional[str | Path] = None,
                 fingerprint: Optional[dict] = None, max_sampling_tries: int = 1000) -> None:
        if not 0 < num_parents <= population_size:
            raise ValueError(f'need 0 < num_parents <= population_size, got {num_parents} and {population_size}')
        if not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f'mutation_prob must be in [0, 1], got {mutation_prob}')
        super().__init__(space, score_fn, latency_fn, latency_budget, ratio_choices, seed, state_file,
                         fingerprint, max_sampling_tries)
        self.population_size, self.num_parents, self.generations = population_size, num_parents, generations
        self.mutation_prob = mutation_prob
        self.population: list[GroupRatios] = []

    def mutate(self, parent: GroupRatios) -> GroupRatios:
        return canonical([[self.rng.choice(self.choices) if self.rng.random() < self.mutation_prob else r
                           for r in stage] for stage in parent])

    def crossover(self, a: GroupRatios, b: GroupRatios) -> GroupRatios:
        return tuple(sa if self.rng.random() < 0.5 else sb for sa, sb in zip(a, b))

    def _child(self, parents: Sequence[GroupRatios], mutation: bool) -> GroupRatios:
        if mutation or len(parents) < 2:
            return self.mutate(parents[self.rng.integers(len(parents))])
        a, b = self.rng.choice(len(parents), 2, replace=False)
        return self.crossover(parents[a], parents[b])

    def _extra_state(self) -> dict:
        return dict(population=[[list(s) for s in c] for c in self.population])

    _EXTRA_FIELDS = dict(population=[RATIOS])

    def _score_population(self, where: str) -> list[Evaluation]:
        return self._score_many(self.population, where)

    def run(self, log: Log = print) -> SearchResult:
        """Run (or resume) the search; returns the best candidate found within the budget."""
        self.log = log
        state = self._load()
        if state is not None:
            self.population = [canonical(c) for c in state['population']]
            log(f'resuming from {self.state_file}: generation {self.generation}, '
                f'{len(self.evaluations)} candidates evaluated')
        if not self.population:
            taken: set[GroupRatios] = set()
            while len(self.population) < self.population_size:
                candidate = self._draw(self.random_candidate, taken)
                if candidate is None:
                    if not self.population:
                        raise self._no_candidate_error()
                    break
                taken.add(candidate)
                self.population.append(candidate)
            self._save()
        while self.generation < self.generations:
            scored = sorted(self._score_population(f'generation {self.generation + 1}/{self.generations}'),
                            key=lambda e: -e.score)
            best = scored[0]
            log(f'generation {self.generation + 1}/{self.generations}: best score {best.score:.4f} at latency '
                f'{best.latency:.4g} (budget {self.latency_budget:.4g}), {len(self.evaluations)} evaluated')
            parents = [e.ratios for e in scored[:self.num_parents]]
            children: list[GroupRatios] = []
            taken = set(parents)
            want = self.population_size - len(parents)
            for i in range(want):
                child = self._draw(self._child, taken, parents, i < want // 2)  # half mutations, half crossovers
                if child is not None:
                    taken.add(child)
                    children.append(child)
            self.population = parents + children
            self.generation += 1
            self._save()
        self._score_population('final population')
        return self._result(list(self.evaluations))


class RandomSearch(_BudgetedSearch):
    """Random-search baseline: ``num_evaluations`` distinct random candidates within the budget, scored in
    the order drawn. Same arguments as :class:`EvolutionarySearch` where they apply; the state (drawn
    candidates, evaluations, random state) is saved after every evaluation, and asking a resumed run for
    more evaluations draws the extra candidates from where the previous run stopped."""

    def __init__(self, space: Sequence[StageSearchSpace], score_fn: Callable[[GroupRatios], float],
                 latency_fn: Callable[[GroupRatios], float], latency_budget: float, num_evaluations: int,
                 ratio_choices: Sequence[float] = DEFAULT_RATIO_CHOICES, seed: int = 0,
                 state_file: Optional[str | Path] = None, fingerprint: Optional[dict] = None,
                 max_sampling_tries: int = 1000) -> None:
        if num_evaluations < 1:
            raise ValueError(f'num_evaluations must be >= 1, got {num_evaluations}')
        super().__init__(space, score_fn, latency_fn, latency_budget, ratio_choices, seed, state_file,
                         fingerprint, max_sampling_tries)
        self.num_evaluations = num_evaluations
        self.candidates: list[GroupRatios] = []

    def _extra_state(self) -> dict:
        return dict(candidates=[[list(s) for s in c] for c in self.candidates])

    _EXTRA_FIELDS = dict(candidates=[RATIOS])

    def run(self, log: Log = print) -> SearchResult:
        """Run (or resume) the random search; returns the best candidate."""
        self.log = log
        state = self._load()
        if state is not None:
            self.candidates = [canonical(c) for c in state['candidates']]
        while len(self.candidates) < self.num_evaluations:
            candidate = self._draw(self.random_candidate, set(self.candidates))
            if candidate is None:
                if not self.candidates:
                    raise self._no_candidate_error()
                log(f'random search: only {len(self.candidates)} distinct candidates within the budget found')
                break
            self.candidates.append(candidate)
        self._save()
        chosen = self.candidates[:self.num_evaluations]
        self._score_many(chosen, 'random search')
        return self._result(chosen)
