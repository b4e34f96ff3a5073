"""Per-block latency table of a SparseViT encoder: predict a pruning configuration's latency without
running it.

Profiling runs the whole encoder at every uniform ratio of ``ratio_choices`` (interleaved rounds, after a
warm-up) with ordinary forward pre/post hooks on every ``stages[i]`` and ``stages[i].blocks[j]``, and keeps
medians of:

* ``blocks_ms[s][b][k]``: block ``b`` of stage ``s`` at ratio ``ratio_choices[k]``;
* ``overhead_ms[s][k]``: stage ``s`` minus its blocks (patch merging, and the window ranking that a stage
  pays once as soon as one of its ratios is > 0) when the stage's largest ratio is ``ratio_choices[k]``;
* ``remainder_ms``: the encoder minus its stages (patch embedding, output norms), which does not depend on
  the ratios.

A configuration is then predicted as ``remainder + sum over stages (overhead at the stage's largest ratio
+ its blocks' entries)``. A block's cost depends only on its own ratio (the kept-window count is
``int(nW * (1 - r))``), so the uniform runs cover every entry.

The table is valid for one machine and setting only: :func:`table_key` names the device, thread count,
input shape, dtype, torch version, encoder architecture and ratio choices, and :func:`load_or_profile`
re-profiles when the cached file's key differs. :func:`measure_interleaved` times whole configurations
(round-robin, shuffled each round) to check the table's predictions against measurement.
"""
from __future__ import annotations

import hashlib
import json
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..utils.atomic_io import atomic_write_json
from ..utils.timing import interleaved_times

__all__ = ['LatencyTable', 'load_or_profile', 'measure_interleaved', 'prediction_check', 'profile_encoder',
           'table_key']

BlockRatios = Sequence[Sequence[float]]


@dataclass
class LatencyTable:
    """Measured per-block latencies (ms) of one encoder at each ratio choice; see the module docstring."""

    key: dict
    ratio_choices: list[float]
    remainder_ms: float
    overhead_ms: list[list[float]]
    blocks_ms: list[list[list[float]]]
    uniform_total_ms: list[float]
    repeats: int

    def _index(self, ratio: float) -> int:
        for k, choice in enumerate(self.ratio_choices):
            if abs(choice - ratio) < 1e-9:
                return k
        raise KeyError(f'ratio {ratio} is not among the latency table\'s ratio choices {self.ratio_choices}')

    def predict(self, block_ratios: BlockRatios) -> float:
        """Predicted encoder latency (ms) of per-block ratios (the backbone's format)."""
        if [len(s) for s in block_ratios] != [len(s) for s in self.blocks_ms]:
            raise ValueError(f'ratios for depths {[len(s) for s in block_ratios]}, the table has depths '
                             f'{[len(s) for s in self.blocks_ms]}')
        total = self.remainder_ms
        for stage, ratios in enumerate(block_ratios):
            total += self.overhead_ms[stage][self._index(max(ratios))]
            total += sum(self.blocks_ms[stage][b][self._index(r)] for b, r in enumerate(ratios))
        return total

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LatencyTable:
        return cls(**data)


def _device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'cuda:{torch.cuda.get_device_name(device)}'
    name = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():  # platform.processor() is often empty or just the ISA on Linux
        for line in cpuinfo.read_text().splitlines():
            if line.startswith('model name'):
                name = line.split(':', 1)[1].strip()
                break
    return f'{device.type}:{name}'


def table_key(encoder: nn.Module, images: torch.Tensor, ratio_choices: Sequence[float]) -> dict:
    """What a latency table depends on. The architecture is a hash of the parameter and buffer names and
    shapes (depths, widths, heads, window and patch size all show there)."""
    shapes = ';'.join(f'{name}:{tuple(t.shape)}' for name, t in encoder.state_dict().items())
    return dict(device=_device_name(images.device), threads=torch.get_num_threads(),
                input_shape=list(images.shape), dtype=str(images.dtype).replace('torch.', ''),
                torch=torch.__version__, encoder=type(encoder).__name__,
                architecture=hashlib.sha256(shapes.encode()).hexdigest()[:16],
                ratio_choices=[float(r) for r in ratio_choices])


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _forward(encoder: nn.Module, images: torch.Tensor) -> float:
    """One forward in ms (synchronised on CUDA)."""
    _sync(images.device)
    start = time.perf_counter()
    encoder(images)
    _sync(images.device)
    return 1e3 * (time.perf_counter() - start)


def profile_encoder(encoder: nn.Module, images: torch.Tensor, ratio_choices: Sequence[float],
                    repeats: int = 3, warmup: int = 1, seed: int = 0) -> LatencyTable:
    """Profile ``encoder`` on ``images`` at every uniform ratio of ``ratio_choices`` (see module docstring).

    The encoder's ratios are restored afterwards.
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    choices = sorted({float(r) for r in ratio_choices})
    stages = list(encoder.stages)
    modules: list[nn.Module] = [*stages, *(block for stage in stages for block in stage.blocks)]
    elapsed: dict[int, float] = {}
    started: dict[int, float] = {}
    device = images.device

    def pre_hook(module: nn.Module, args: tuple) -> None:
        _sync(device)
        started[id(module)] = time.perf_counter()

    def post_hook(module: nn.Module, args: tuple, output: object) -> None:
        _sync(device)
        elapsed[id(module)] = 1e3 * (time.perf_counter() - started[id(module)])

    # per ratio: lists of per-run (total, stage times, block times)
    runs: dict[float, list[tuple[float, list[float], list[list[float]]]]] = {r: [] for r in choices}
    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook))]
    saved = encoder.pruning_ratios
    rng = random.Random(seed)
    try:
        with torch.inference_mode():
            for round_idx in range(warmup + repeats):
                order = choices[:]
                rng.shuffle(order)  # interleaved: slow drift of the machine hits every ratio alike
                for ratio in order:
                    encoder.set_pruning_ratios(ratio)
                    elapsed.clear()
                    total = _forward(encoder, images)
                    if round_idx >= warmup:
                        runs[ratio].append((total, [elapsed[id(s)] for s in stages],
                                            [[elapsed[id(b)] for b in s.blocks] for s in stages]))
    finally:
        for h in handles:
            h.remove()
        encoder.set_pruning_ratios(saved)

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    blocks_ms = [[[med([run[2][s][b] for run in runs[r]]) for r in choices] for b in range(len(stage.blocks))]
                 for s, stage in enumerate(stages)]
    stage_ms = [[med([run[1][s] for run in runs[r]]) for r in choices] for s in range(len(stages))]
    overhead_ms = [[max(0.0, stage_ms[s][k] - sum(blocks_ms[s][b][k] for b in range(len(blocks_ms[s]))))
                    for k in range(len(choices))] for s in range(len(stages))]
    totals = [med([run[0] for run in runs[r]]) for r in choices]
    # the part outside the stages does not depend on the ratios: one median over all runs
    remainder = med([run[0] - sum(run[1]) for r in choices for run in runs[r]])
    return LatencyTable(key=table_key(encoder, images, choices), ratio_choices=choices,
                        remainder_ms=max(0.0, remainder), overhead_ms=overhead_ms, blocks_ms=blocks_ms,
                        uniform_total_ms=totals, repeats=repeats)


def load_or_profile(path: str | Path, encoder: nn.Module, images: torch.Tensor, ratio_choices: Sequence[float],
                    repeats: int = 3, warmup: int = 1, log: Callable[[str], None] = print) -> LatencyTable:
    """The table cached at ``path`` if it was made with the same :func:`table_key`, else a new profile
    (written to ``path`` atomically)."""
    path = Path(path)
    key = table_key(encoder, images, ratio_choices)
    if path.is_file():
        try:
            cached = LatencyTable.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            log(f'latency table {path} is unreadable ({err}); profiling again')
        else:
            if cached.key == key:
                log(f'latency table: reusing {path}')
                return cached
            changed = ', '.join(f'{k} {cached.key.get(k)!r} -> {v!r}' for k, v in key.items()
                                if cached.key.get(k) != v)
            log(f'latency table {path} was made for another setting ({changed}); profiling again')
    log(f'latency table: profiling {len(key["ratio_choices"])} uniform ratios x {repeats} interleaved rounds '
        f'on {key["device"]}, {key["threads"]} threads, input {key["input_shape"]}')
    table = profile_encoder(encoder, images, ratio_choices, repeats, warmup)
    atomic_write_json(path, table.to_json(), indent=1)
    return table


def measure_interleaved(encoder: nn.Module, images: torch.Tensor, configs: Sequence[BlockRatios],
                        repeats: int, warmup: int = 1, seed: int = 0) -> list[list[float]]:
    """Times (ms) of ``repeats`` forwards of each configuration, run round-robin in a shuffled order each
    round so that drift of the machine affects them alike. The encoder's ratios are restored afterwards."""
    def run(config: BlockRatios) -> Callable[[], None]:
        def forward() -> None:
            encoder.set_pruning_ratios(config)
            encoder(images)
        return forward

    saved = encoder.pruning_ratios
    try:
        with torch.inference_mode():
            seconds = interleaved_times({str(i): run(c) for i, c in enumerate(configs)}, repeats, warmup=warmup,
                                        seed=seed, sync=lambda: _sync(images.device))
    finally:
        encoder.set_pruning_ratios(saved)
    return [[1e3 * t for t in seconds[str(i)]] for i in range(len(configs))]


def prediction_check(table: LatencyTable, encoder: nn.Module, images: torch.Tensor,
                     configs: Sequence[BlockRatios], repeats: int = 3, goal: float = 0.10, seed: int = 0) -> dict:
    """Predicted vs measured (interleaved medians) latency of ``configs``: per configuration, and the mean
    and max relative error ``|predicted - measured| / measured``; ``meets_goal`` when the max is <= ``goal``."""
    times = measure_interleaved(encoder, images, configs, repeats, seed=seed)
    rows = []
    for ratios, t in zip(configs, times):
        predicted, measured = table.predict(ratios), float(statistics.median(t))
        rows.append(dict(pruning_ratios=[list(map(float, s)) for s in ratios], predicted_ms=predicted,
                         measured_ms=measured, relative_error=(predicted - measured) / measured))
    errors = [abs(r['relative_error']) for r in rows]
    mean_err, max_err = float(statistics.mean(errors)), max(errors)
    return dict(key=table.key, repeats=repeats, goal=goal, mean_abs_relative_error=mean_err,
                max_abs_relative_error=max_err, meets_goal=max_err <= goal, configs=rows)
