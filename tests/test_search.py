"""EvolutionarySearch and RandomSearch on a known objective: budget respected, better than its start and
than random search, resumable without repeating an evaluation, states refused for another search."""
from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.search import (
    EvolutionarySearch,
    RandomSearch,
    ScoreStore,
    StateMismatchError,
    canonical,
)

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


def test_interrupted_mid_generation_repeats_no_evaluation(space, tmp_path):
    """The state is saved after every evaluation: an interruption inside a generation costs nothing."""
    kwargs = dict(latency_budget=0.6, population_size=8, num_parents=4, generations=3, seed=5)
    reference_calls = []
    reference = EvolutionarySearch(space, lambda c: reference_calls.append(c) or score(c), latency,
                                   **kwargs).run(log=lambda msg: None)
    state = tmp_path / 'search.json'
    calls = []

    def failing_score(c):
        if len(calls) == 11:  # inside the second generation
            raise KeyboardInterrupt
        calls.append(c)
        return score(c)

    with pytest.raises(KeyboardInterrupt):
        EvolutionarySearch(space, failing_score, latency, state_file=state, **kwargs).run(log=lambda msg: None)
    assert len(json.loads(state.read_text())['evaluations']) == 11
    more = []
    resumed = EvolutionarySearch(space, lambda c: more.append(c) or score(c), latency, state_file=state,
                                 **kwargs).run(log=lambda msg: None)
    assert len(calls) + len(more) == len(reference_calls)
    assert calls + more == reference_calls
    assert resumed.best == reference.best


def test_state_refused_for_another_search(space, tmp_path):
    state = tmp_path / 'search.json'
    kwargs = dict(population_size=4, num_parents=2, generations=1, state_file=state)
    EvolutionarySearch(space, score, latency, 0.6, fingerprint=dict(checkpoint_sha256='aaa', metric='NDS'),
                       **kwargs).run(log=lambda msg: None)
    cases = [(dict(latency_budget=0.6, fingerprint=dict(checkpoint_sha256='bbb', metric='NDS')),
              "checkpoint_sha256: 'aaa' in the state, 'bbb' now"),
             (dict(latency_budget=0.6, fingerprint=dict(checkpoint_sha256='aaa', metric='mAP')),
              "metric: 'NDS' in the state, 'mAP' now"),
             (dict(latency_budget=0.5, fingerprint=dict(checkpoint_sha256='aaa', metric='NDS')),
              'latency_budget: 0.6 in the state, 0.5 now'),
             (dict(latency_budget=0.6, ratio_choices=[0.0, 0.5], fingerprint=dict(checkpoint_sha256='aaa',
                                                                                    metric='NDS')),
              'ratio_choices: ')]
    for extra, message in cases:
        with pytest.raises(StateMismatchError, match=re.escape(message)) as err:
            EvolutionarySearch(space, score, latency, **extra, **kwargs).run(log=lambda msg: None)
        assert 'Choose another --work-dir or delete' in str(err.value)
    # a random search does not resume an evolutionary search's state
    with pytest.raises(StateMismatchError, match="search: 'EvolutionarySearch' in the state, 'RandomSearch' now"):
        RandomSearch(space, score, latency, 0.6, 4, state_file=state,
                     fingerprint=dict(checkpoint_sha256='aaa', metric='NDS')).run(log=lambda msg: None)


def test_random_search_baseline(space, tmp_path):
    state = tmp_path / 'random.json'
    calls = []

    def failing_score(c):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(c)
        return score(c)

    with pytest.raises(KeyboardInterrupt):
        RandomSearch(space, failing_score, latency, 0.6, 12, seed=7, state_file=state).run(log=lambda msg: None)
    more = []
    result = RandomSearch(space, lambda c: more.append(c) or score(c), latency, 0.6, 12, seed=7,
                          state_file=state).run(log=lambda msg: None)
    reference = RandomSearch(space, score, latency, 0.6, 12, seed=7).run(log=lambda msg: None)
    assert len(calls) + len(more) == 12 and len(set(calls + more)) == 12
    assert [e.ratios for e in result.history] == [e.ratios for e in reference.history]
    assert all(e.latency <= 0.6 for e in result.history)
    assert result.best.score == max(e.score for e in result.history)
    # asking a finished run for more evaluations scores only the new ones
    extra = []
    longer = RandomSearch(space, lambda c: extra.append(c) or score(c), latency, 0.6, 15, seed=7,
                          state_file=state).run(log=lambda msg: None)
    assert len(extra) == 3 and len(longer.history) == 15


def test_score_store_persists_and_checks_fingerprint(tmp_path):
    path = tmp_path / 'scores.json'
    calls = []
    fingerprint = dict(checkpoint_sha256='aaa', eval_set=dict(ann_file='val.pkl', samples=[0, 5]))
    store = ScoreStore(path, lambda c: calls.append(c) or score(c), fingerprint)
    candidate = canonical([[0.2], [0.0], [0.4, 0.1, 0.0], [0.8]])
    assert store(candidate) == score(candidate) and store(candidate) == score(candidate)
    reopened = ScoreStore(path, lambda c: calls.append(c) or score(c), fingerprint)
    assert candidate in reopened and reopened(candidate) == score(candidate) and len(calls) == 1
    with pytest.raises(StateMismatchError, match=re.escape("eval_set: {'ann_file': 'val.pkl', 'samples': [0, 5]} "
                                                           "in the state, {'ann_file': 'val.pkl', 'samples': 'all'}")):
        ScoreStore(path, score, dict(fingerprint, eval_set=dict(ann_file='val.pkl', samples='all')))
