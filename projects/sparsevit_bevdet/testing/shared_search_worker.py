"""A worker of a shared search on a toy problem, to test the shared-study machinery without a detector: a
cheap deterministic score (with an optional sleep, so that a test can kill a worker mid-evaluation), a toy
latency "table" stored in the study, and SparseViT-T's search space.

    python -m projects.sparsevit_bevdet.testing.shared_search_worker STORAGE STUDY OUT.json \\
        [--eval-seconds S] [--events EVENTS.jsonl] [--heartbeat-interval 1 --grace-period 2]

runs the evolutionary search and its random baseline as ``tools/search.py --storage`` does and writes both
histories and bests to ``OUT.json``. :func:`reference` runs the same searches in one process with the
file-based classes: what any number of workers must reproduce.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Callable, Optional

from ..backbones.sparsevit import StageSearchSpace
from ..search.evolution import EvolutionarySearch, Log, RandomSearch
from ..search.shared_study import SharedEvolutionarySearch, SharedRandomSearch, SharedStudy
from ..search.state import GroupRatios
from ..utils.atomic_io import atomic_write_json

SPACE = [StageSearchSpace(i, d, d // 2, 96 * 2 ** i, 4 * 2 ** i) for i, d in enumerate((2, 2, 6, 2))]  # Swin-T
CHOICES = (0.0, 0.2, 0.4, 0.6, 0.8)
SETTINGS = dict(population_size=6, num_parents=3, generations=2, mutation_prob=0.5)
BUDGET_FRACTION = 0.6
WEIGHTS = [[3.0], [2.0], [0.2, 0.5, 1.0], [0.1]]  # how much each group's sparsity hurts the score
TOY_TABLE = dict(remainder_ms=1.0, group_ms=[[3.0], [2.0], [1.0, 1.0, 1.0], [0.5]])


def toy_score(candidate: GroupRatios) -> float:
    return -sum(w * r * r for ws, rs in zip(WEIGHTS, candidate) for w, r in zip(ws, rs))


def toy_latency(table: dict, candidate: GroupRatios) -> float:
    """Each group's time shrinks with its ratio (the groups' ratios are sorted, their costs are equal)."""
    return table['remainder_ms'] + sum(ms * (1.0 - r) for mss, rs in zip(table['group_ms'], candidate)
                                       for ms, r in zip(mss, rs))


def searches(score_fn: Callable[[GroupRatios], float], table: dict, seed: int, shared: bool, log: Log) -> dict:
    """The evolutionary search, then the random search with as many evaluations (as tools/search.py)."""
    evolution_cls, random_cls = (SharedEvolutionarySearch, SharedRandomSearch) if shared else \
        (EvolutionarySearch, RandomSearch)
    budget = BUDGET_FRACTION * toy_latency(table, tuple((0.0,) * s.num_groups for s in SPACE))

    def latency(candidate: GroupRatios) -> float:
        return toy_latency(table, candidate)

    evolution = evolution_cls(SPACE, score_fn, latency, budget, CHOICES, seed=seed, **SETTINGS).run(log=log)
    random = random_cls(SPACE, score_fn, latency, budget, len(evolution.history), CHOICES, seed=seed + 1).run(log=log)
    return dict(evolution=[e.to_json() for e in evolution.history], random=[e.to_json() for e in random.history],
                evolution_best=evolution.best.to_json(), random_best=random.best.to_json())


def reference(seed: int = 0) -> dict:
    """The searches in one process, with the file-based classes and one score cache for both."""
    cache: dict[GroupRatios, float] = {}

    def score(candidate: GroupRatios) -> float:
        return cache.setdefault(candidate, toy_score(candidate))

    return searches(score, TOY_TABLE, seed, shared=False, log=lambda msg: None)


def fingerprint(seed: int) -> dict:
    return dict(objective='toy', budget_fraction=BUDGET_FRACTION, ratio_choices=list(CHOICES),
                search=dict(SETTINGS, seed=seed))


def _event(path: Optional[str], kind: str, candidate: GroupRatios) -> None:
    """Append one line to the events file (one small O_APPEND write: lines of several workers never mix)."""
    if path is not None:
        line = json.dumps(dict(event=kind, ratios=[list(s) for s in candidate], pid=os.getpid())) + '\n'
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('storage')
    parser.add_argument('study_name')
    parser.add_argument('out')
    parser.add_argument('--eval-seconds', type=float, default=0.0, help='sleep of every evaluation')
    parser.add_argument('--events', default=None, help='JSON lines: start and end of every evaluation')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--heartbeat-interval', type=int, default=1)
    parser.add_argument('--grace-period', type=int, default=2)
    parser.add_argument('--poll-interval', type=float, default=0.1)
    args = parser.parse_args(argv)

    study = SharedStudy(args.storage, args.study_name, heartbeat_interval=args.heartbeat_interval,
                        grace_period=args.grace_period, poll_interval=args.poll_interval)
    table = study.join(fingerprint(args.seed), TOY_TABLE)

    def score(candidate: GroupRatios) -> float:
        _event(args.events, 'start', candidate)
        time.sleep(args.eval_seconds)
        _event(args.events, 'end', candidate)
        return toy_score(candidate)

    result = searches(study.scores('toy', score), table, args.seed, shared=True,
                      log=lambda msg: print(msg, flush=True))
    atomic_write_json(args.out, result, indent=1)


if __name__ == '__main__':
    main()
