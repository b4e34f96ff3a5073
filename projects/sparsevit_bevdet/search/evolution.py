"""Evolutionary search of per-group pruning ratios under a latency budget (SparseViT, Sec. 3.4).

A candidate holds one ratio per search group (a W-MSA / SW-MSA pair; see ``SparseViT.search_space()``),
sorted within each stage as SparseViT requires. The search keeps a population of candidates that meet
the latency budget, and each generation:

1. scores them (higher is better, e.g. NDS or mAP on the validation split);
2. keeps the best ``num_parents``;
3. refills the population with mutations (each group re-drawn with ``mutation_prob``) and crossovers
   (each stage taken from one of two parents) of the parents that meet the budget.

Scores and latencies are cached per candidate, so a candidate is never evaluated twice. With a
``state_file`` the state is written atomically after every generation: all evaluations, the
population, the generation index and the random state. A re-run with the same file resumes where the
interrupted run stopped, without repeating finished evaluations.

The search sees the model only through the two callables it is given; ``tools/search.py`` builds them
from a config, a checkpoint and SparseViT's public API.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..backbones.sparsevit import StageSearchSpace, expand_group_ratios
from ..utils.atomic_io import atomic_write_json

GroupRatios = tuple[tuple[float, ...], ...]


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


class EvolutionarySearch:
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
        state_file: JSON file for resuming (written after every generation).
        max_sampling_tries: draws allowed to find each new candidate within the budget.
    """

    def __init__(self, space: Sequence[StageSearchSpace], score_fn: Callable[[GroupRatios], float],
                 latency_fn: Callable[[GroupRatios], float], latency_budget: float,
                 ratio_choices: Sequence[float] = tuple(round(0.1 * i, 1) for i in range(9)),
                 population_size: int = 20, num_parents: int = 10, generations: int = 10,
                 mutation_prob: float = 0.2, seed: int = 0, state_file: Optional[str | Path] = None,
                 max_sampling_tries: int = 1000) -> None:
        if not 0 < num_parents <= population_size:
            raise ValueError(f'need 0 < num_parents <= population_size, got {num_parents} and {population_size}')
        if not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f'mutation_prob must be in [0, 1], got {mutation_prob}')
        choices = sorted({float(r) for r in ratio_choices})
        if not choices or not all(0.0 <= r < 1.0 for r in choices):
            raise ValueError(f'ratio_choices must be ratios in [0, 1), got {ratio_choices!r}')
        self.space = list(space)
        self.score_fn, self.latency_fn = score_fn, latency_fn
        self.latency_budget = float(latency_budget)
        self.choices = np.array(choices)
        self.population_size, self.num_parents, self.generations = population_size, num_parents, generations
        self.mutation_prob = mutation_prob
        self.max_sampling_tries = max_sampling_tries
        self.state_file = Path(state_file) if state_file is not None else None
        self.rng = np.random.default_rng(seed)
        self.latencies: dict[GroupRatios, float] = {}
        self.evaluations: dict[GroupRatios, Evaluation] = {}
        self.population: list[GroupRatios] = []
        self.generation = 0

    # -- candidates --------------------------------------------------------------------------------
    def _canonical(self, groups: Sequence[Sequence[float]]) -> GroupRatios:
        return tuple(tuple(sorted(float(r) for r in stage)) for stage in groups)

    def random_candidate(self) -> GroupRatios:
        return self._canonical([self.rng.choice(self.choices, size=len(s.group_blocks)) for s in self.space])

    def mutate(self, parent: GroupRatios) -> GroupRatios:
        return self._canonical([[self.rng.choice(self.choices) if self.rng.random() < self.mutation_prob else r
                                 for r in stage] for stage in parent])

    def crossover(self, a: GroupRatios, b: GroupRatios) -> GroupRatios:
        return tuple(sa if self.rng.random() < 0.5 else sb for sa, sb in zip(a, b))

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

    def _child(self, parents: Sequence[GroupRatios], mutation: bool) -> GroupRatios:
        if mutation or len(parents) < 2:
            return self.mutate(parents[self.rng.integers(len(parents))])
        a, b = self.rng.choice(len(parents), 2, replace=False)
        return self.crossover(parents[a], parents[b])

    # -- state ---------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_file is None:
            return
        atomic_write_json(self.state_file, dict(
            generation=self.generation, latency_budget=self.latency_budget, choices=self.choices.tolist(),
            population=[[list(s) for s in c] for c in self.population],
            evaluations=[e.to_json() for e in self.evaluations.values()],
            latencies=[dict(ratios=[list(s) for s in c], latency=v) for c, v in self.latencies.items()],
            rng=self.rng.bit_generator.state), indent=1)

    def _load(self) -> bool:
        if self.state_file is None or not self.state_file.is_file():
            return False
        try:
            state = json.loads(self.state_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f'{self.state_file}: corrupt search state ({err}); delete it to start over') from err
        if state['latency_budget'] != self.latency_budget or state['choices'] != self.choices.tolist():
            raise ValueError(f'{self.state_file} was written for latency budget {state["latency_budget"]} and '
                             f'ratios {state["choices"]}, this search has {self.latency_budget} and '
                             f'{self.choices.tolist()}; use another state file')
        self.generation = state['generation']
        self.population = [self._canonical(c) for c in state['population']]
        for e in state['evaluations']:
            ratios = self._canonical(e['ratios'])
            self.evaluations[ratios] = Evaluation(ratios, e['score'], e['latency'], e['generation'])
        for item in state['latencies']:
            self.latencies[self._canonical(item['ratios'])] = item['latency']
        self.rng.bit_generator.state = state['rng']
        return True

    # -- the search ----------------------------------------------------------------------------------
    def _score(self, candidate: GroupRatios) -> Evaluation:
        if candidate not in self.evaluations:
            self.evaluations[candidate] = Evaluation(candidate, float(self.score_fn(candidate)),
                                                     self.latency(candidate), self.generation)
        return self.evaluations[candidate]

    def run(self, log: Callable[[str], None] = print) -> SearchResult:
        """Run (or resume) the search; returns the best candidate found within the budget."""
        if self._load():
            log(f'resuming from {self.state_file}: generation {self.generation}, '
                f'{len(self.evaluations)} candidates evaluated')
        if not self.population:
            taken: set[GroupRatios] = set()
            while len(self.population) < self.population_size:
                candidate = self._draw(self.random_candidate, taken)
                if candidate is None:
                    if not self.population:
                        raise ValueError(f'no candidate within the latency budget {self.latency_budget} after '
                                         f'{self.max_sampling_tries} draws (fastest seen: '
                                         f'{min(self.latencies.values()):.4g})')
                    break
                taken.add(candidate)
                self.population.append(candidate)
            self._save()
        while self.generation < self.generations:
            scored = sorted((self._score(c) for c in self.population), key=lambda e: -e.score)
            self._save()  # evaluations are the expensive part: keep them even if the next step dies
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
        for c in self.population:
            self._score(c)
        history = sorted(self.evaluations.values(), key=lambda e: (e.generation, -e.score))
        best = max((e for e in self.evaluations.values() if e.latency <= self.latency_budget), key=lambda e: e.score)
        self._save()
        return SearchResult(best, history)
