"""Interleaved latency measurement shared by the benchmark tools.

Every variant runs once per round, in a shuffled order each round, so slow drift of the machine
(thermal state, other load) affects all variants alike; compare medians of one run, not across runs.
"""
from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from typing import Callable, Optional

__all__ = ['cpu_name', 'cuda_event_ms', 'interleaved_times', 'median_ms', 'top_cuda_kernels']


def interleaved_times(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                      seed: int = 0, sync: Callable[[], None] = lambda: None,
                      on_round: Optional[Callable[[], None]] = None) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each variant, timed round-robin after ``warmup`` rounds.

    Args:
        variants: name -> a call that runs the variant once.
        repeats: timed rounds (each runs every variant once).
        warmup: untimed rounds first (lazy initialisation, caches, compilation).
        seed: seed of the per-round shuffles.
        sync: waits for queued device work (``torch.cuda.synchronize`` on CUDA); called around each run.
        on_round: called after every round (progress display).
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    for round_idx in range(warmup + repeats):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            sync()
            start = time.perf_counter()
            variants[name]()
            sync()
            if round_idx >= warmup:
                times[name].append(time.perf_counter() - start)
        if on_round is not None:
            on_round()
    return times


def median_ms(seconds: list[float]) -> float:
    """Median of ``seconds`` in milliseconds."""
    return 1e3 * statistics.median(seconds)


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), ``'unknown'`` elsewhere: recorded beside every timing."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return 'unknown'


def cuda_event_ms(call: Callable[[], object], runs: int) -> float:
    """Mean GPU milliseconds per call of ``runs`` back-to-back calls, timed by CUDA events on the current
    stream (no host synchronisation between calls, so the host can queue ahead as in a real pipeline)."""
    import torch

    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(runs):
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / runs


def top_cuda_kernels(call: Callable[[], object], limit: int = 12) -> list[dict]:
    """The ``limit`` CUDA kernels with the most GPU time in one call: name, calls, total GPU ms."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    call()  # outside the profile: lazy work of a first call
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    totals: dict[str, list] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = totals.setdefault(event.name, [0, 0.0])
            entry[0] += 1
            entry[1] += event.device_time_total / 1e3
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:limit]
    return [dict(name=name, calls=calls, gpu_ms=ms) for name, (calls, ms) in ranked]
