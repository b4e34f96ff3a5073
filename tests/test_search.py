"""EvolutionarySearch on a known objective: budget respected, better than its start, resumable."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.search import EvolutionarySearch

WEIGHTS = [[3.0], [2.0], [0.2, 0.5, 1.0], [0.1]]  # how much each group's sparsity hurts the score


@pytest.fixture(scope='module')
def space():
    return SparseViT(arch='tiny').search_space()


def score(candidate) -> float:
    return -sum(w * r * r for ws, rs in zip(WEIGHTS, candidate) for w, r in zip(ws, rs))


def latency(candidate) -> float:
    flat = [r for stage in candidate for r in stage]
    return 1.0 - sum(flat) / len(flat)


def test_search_respects_budget_and_improves(space):
    calls = []
    search = EvolutionarySearch(space, lambda c: calls.append(c) or score(c), latency, latency_budget=0.6,
                                population_size=16, num_parents=8, generations=20, seed=1)
    result = search.run(log=lambda msg: None)
    assert result.best.latency <= 0.6
    for stage in result.best.ratios:
        assert list(stage) == sorted(stage)
    first = [e for e in result.history if e.generation == 0]
    assert result.best.score > max(e.score for e in first)
    assert len(calls) == len(set(calls))  # never scored twice
    # against the exhaustive optimum of this small problem, and against random search with as many evaluations
    choices = [round(0.1 * i, 1) for i in range(9)]
    feasible = [c for c in (((a,), (b,), tuple(mid), (d,)) for a, b, d in itertools.product(choices, repeat=3)
                            for mid in itertools.combinations_with_replacement(choices, 3)) if latency(c) <= 0.6]
    optimum = max(score(c) for c in feasible)
    assert result.best.score >= optimum - 0.15
    rng = np.random.default_rng(0)
    random_best = max(score(feasible[i]) for i in rng.choice(len(feasible), len(calls), replace=False))
    assert result.best.score > random_best
    blocks = result.block_ratios(space)
    SparseViT(arch='tiny').set_pruning_ratios(blocks)


def test_interrupted_search_resumes_without_repeating_work(space, tmp_path):
    kwargs = dict(latency_budget=0.6, population_size=8, num_parents=4, generations=4, seed=3)
    reference = EvolutionarySearch(space, score, latency, **kwargs).run(log=lambda msg: None)

    state = tmp_path / 'search.json'
    calls = []

    def failing_score(c):
        if len(calls) == 15:
            raise KeyboardInterrupt
        calls.append(c)
        return score(c)

    with pytest.raises(KeyboardInterrupt):
        EvolutionarySearch(space, failing_score, latency, state_file=state, **kwargs).run(log=lambda msg: None)
    assert state.is_file()
    more = []
    resumed = EvolutionarySearch(space, lambda c: more.append(c) or score(c), latency, state_file=state,
                                 **kwargs).run(log=lambda msg: None)
    assert not set(more) & set(calls[:8])  # the first generation's evaluations were kept
    assert resumed.best.ratios == reference.best.ratios and resumed.best.score == reference.best.score


def test_infeasible_budget_and_bad_state(space, tmp_path):
    with pytest.raises(ValueError, match='no candidate within the latency budget'):
        EvolutionarySearch(space, score, latency, latency_budget=0.05, max_sampling_tries=50).run(log=lambda m: None)
    state = tmp_path / 'state.json'
    state.write_text('{broken')
    with pytest.raises(ValueError, match='corrupt search state'):
        EvolutionarySearch(space, score, latency, latency_budget=0.6, state_file=state).run(log=lambda m: None)
