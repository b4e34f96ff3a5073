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

Calibration. The profile's sums are biased: the hooks and per-module synchronisation add time, and the bias
is not a constant fraction (on the synthetic-COCO Swin-T search the table over-predicted the dense encoder by
11 % but sparse configurations by 4-8 %, so picks at "0.75 x dense" re-measured at 0.76-0.77 x).
:func:`calibrate` measures a few whole uniform configurations (the dense encoder, ratio 0, among them) without
hooks, interleaved, and keeps their measured / predicted factors in the table (:class:`LatencyCalibration`);
:meth:`LatencyTable.predict` then scales the profile's sum by the factor interpolated linearly in the
predicted latency between those points (constant beyond them), so the dense prediction is the dense
measurement and a relative budget is relative to the measured dense encoder. The calibration is saved in the
table's JSON with what it was measured on (the table's key, the uniform ratios, both latencies, the rounds) and
the hash of the profile it corrects: a calibration of another profile is refused
(:class:`CalibrationMismatchError`); :func:`load_or_profile` drops it with a log line and
:func:`ensure_calibrated` measures a new one.

CUDA graphs. An encoder with ``cuda_graphs=True`` on CUDA is profiled eagerly (a replayed graph skips the
per-block hooks) and calibrated by replaying it, so the calibrated table predicts replay latency; such a
table's key says ``cuda_graphs`` and is not mixed up with an eager one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..utils.atomic_io import atomic_write_json
from ..utils.timing import interleaved_times

__all__ = ['CalibrationMismatchError', 'LatencyCalibration', 'LatencyTable', 'calibrate', 'calibration_ratios',
           'ensure_calibrated', 'load_or_profile', 'measure_interleaved', 'prediction_check', 'profile_encoder',
           'table_key']

BlockRatios = Sequence[Sequence[float]]
# configurations and timed rounds -> per configuration, the times (ms) of its rounds (as measure_interleaved)
Measure = Callable[[Sequence[BlockRatios], int], list[list[float]]]


class CalibrationMismatchError(ValueError):
    """A latency table's calibration was measured for another profile than the table's."""


def _sha256(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class LatencyCalibration:
    """Whole uniform configurations measured beside the table's predictions of them (see the module docstring).

    ``ratios[i]`` was predicted at ``predicted_ms[i]`` (the profile's sum) and measured at ``measured_ms[i]``
    (median of ``repeats`` interleaved rounds) on the setting ``key``; ``profile_sha256`` names the profile.
    """

    profile_sha256: str
    key: dict
    ratios: list[float]
    predicted_ms: list[float]
    measured_ms: list[float]
    repeats: int

    def __post_init__(self) -> None:
        if not (len(self.ratios) == len(self.predicted_ms) == len(self.measured_ms) >= 1):
            raise ValueError(f'latency calibration: ratios {self.ratios}, predicted_ms {self.predicted_ms} and '
                             f'measured_ms {self.measured_ms} must be lists of one equal length >= 1')
        for name in ('predicted_ms', 'measured_ms'):
            bad = [v for v in getattr(self, name) if not (math.isfinite(v) and v > 0.0)]
            if bad:
                raise ValueError(f'latency calibration: {name} holds {bad}, expected finite numbers > 0')

    @property
    def factors(self) -> list[float]:
        """measured / predicted at each calibrated configuration."""
        return [m / p for p, m in zip(self.predicted_ms, self.measured_ms)]

    def factor(self, predicted_ms: float) -> float:
        """The correction of a profile sum ``predicted_ms``: the factors interpolated linearly in the predicted
        latency between the calibrated configurations, the nearest one's beyond them."""
        points = sorted(zip(self.predicted_ms, self.factors))
        if predicted_ms <= points[0][0]:
            return points[0][1]
        for (p0, f0), (p1, f1) in zip(points, points[1:]):
            if predicted_ms <= p1:
                return f0 + (f1 - f0) * (predicted_ms - p0) / (p1 - p0)
        return points[-1][1]

    def sha256(self) -> str:
        """A digest of the calibration (search states record which one their latencies came from)."""
        return _sha256(asdict(self))


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
    calibration: Optional[LatencyCalibration] = None

    def __post_init__(self) -> None:
        if isinstance(self.calibration, dict):  # read back from JSON
            self.calibration = LatencyCalibration(**self.calibration)
        if self.calibration is not None and self.calibration.profile_sha256 != self.profile_sha256():
            raise CalibrationMismatchError(
                f'the latency table\'s calibration was measured for another profile (profile_sha256 '
                f'{self.calibration.profile_sha256[:16]}..., the table\'s is {self.profile_sha256()[:16]}...): '
                f'its entries changed since; calibrate it again')

    def profile_sha256(self) -> str:
        """A digest of the profile: every field but the calibration."""
        return _sha256({k: v for k, v in asdict(self).items() if k != 'calibration'})

    def uniform(self, ratio: float) -> list[list[float]]:
        """Every block at ``ratio``, in the backbone's per-block format."""
        return [[float(ratio)] * len(stage) for stage in self.blocks_ms]

    def _index(self, ratio: float) -> int:
        for k, choice in enumerate(self.ratio_choices):
            if abs(choice - ratio) < 1e-9:
                return k
        raise KeyError(f'ratio {ratio} is not among the latency table\'s ratio choices {self.ratio_choices}')

    def predict(self, block_ratios: BlockRatios) -> float:
        """Predicted encoder latency (ms) of per-block ratios (the backbone's format): the profile's sum,
        corrected by the calibration if the table has one."""
        total = self.predict_uncalibrated(block_ratios)
        return total if self.calibration is None else total * self.calibration.factor(total)

    def predict_uncalibrated(self, block_ratios: BlockRatios) -> float:
        """The profile's sum for per-block ratios: remainder + stage overheads + block entries."""
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
        """The table of :meth:`to_json`; a calibration of another profile raises :class:`CalibrationMismatchError`."""
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
    key = dict(device=_device_name(images.device), threads=torch.get_num_threads(),
               input_shape=list(images.shape), dtype=str(images.dtype).replace('torch.', ''),
               torch=torch.__version__, encoder=type(encoder).__name__,
               architecture=hashlib.sha256(shapes.encode()).hexdigest()[:16],
               ratio_choices=[float(r) for r in ratio_choices])
    if _replays_graphs(encoder, images):  # calibrated against graph replay: another table than eager's
        key['cuda_graphs'] = True
    return key


def _replays_graphs(encoder: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``encoder(images)`` in inference replays CUDA graphs (``SparseViT(cuda_graphs=True)`` on CUDA)."""
    return bool(getattr(encoder, 'cuda_graphs', False)) and images.is_cuda


@contextlib.contextmanager
def _eager(encoder: nn.Module) -> Iterator[None]:
    """Run ``encoder`` eagerly inside (a replayed graph would skip the per-block timing hooks)."""
    saved = getattr(encoder, 'cuda_graphs', None)
    if saved:
        encoder.cuda_graphs = False
    try:
        yield
    finally:
        if saved:
            encoder.cuda_graphs = saved


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
        # per-block shares from eager forwards; with CUDA graphs the calibration (ensure_calibrated) scales them
        # to what replay measures
        with torch.inference_mode(), _eager(encoder):
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


def _read_table(path: Path, log: Callable[[str], None]) -> LatencyTable:
    """The table in ``path``; a calibration that does not fit it (another profile, impossible values) is dropped
    with a log line naming the file (:func:`ensure_calibrated` measures a new one)."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise TypeError(f'expected a JSON object, got {type(data).__name__}')
    if data.get('calibration') is None:
        return LatencyTable.from_json(data)
    try:
        return LatencyTable.from_json(data)
    except (TypeError, ValueError) as err:
        log(f'latency table {path}: dropping its calibration ({err})')
        return LatencyTable.from_json(dict(data, calibration=None))


def load_or_profile(path: str | Path, encoder: nn.Module, images: torch.Tensor, ratio_choices: Sequence[float],
                    repeats: int = 3, warmup: int = 1, log: Callable[[str], None] = print) -> LatencyTable:
    """The table cached at ``path`` if it was made with the same :func:`table_key` (with its calibration, if it
    has one that fits), else a new profile (written to ``path`` atomically, uncalibrated)."""
    path = Path(path)
    key = table_key(encoder, images, ratio_choices)
    if path.is_file():
        try:
            cached = _read_table(path, log)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
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


def calibration_ratios(ratio_choices: Sequence[float]) -> list[float]:
    """The uniform ratios a table is calibrated at: 0.0 (the dense encoder), the middle and the largest choice."""
    choices = sorted({float(r) for r in ratio_choices})
    if 0.0 not in choices:
        raise ValueError(f'ratio choices {choices} lack 0.0: the dense encoder calibrates the latency table')
    return sorted({0.0, choices[len(choices) // 2], choices[-1]})


def calibrate(table: LatencyTable, measure: Measure, repeats: int,
              ratios: Optional[Sequence[float]] = None) -> LatencyTable:
    """``table`` with a :class:`LatencyCalibration`: the uniform configurations at ``ratios`` (default
    :func:`calibration_ratios`) timed by ``measure`` in ``repeats`` rounds (medians) against their predictions.

    ``measure(configs, repeats)`` returns per configuration its times in ms, as :func:`measure_interleaved`
    (which the search passes, bound to its encoder and input).
    """
    if repeats < 1:
        raise ValueError(f'calibration repeats must be >= 1, got {repeats}')
    ratios = calibration_ratios(table.ratio_choices) if ratios is None else sorted({float(r) for r in ratios})
    configs = [table.uniform(r) for r in ratios]
    times = measure(configs, repeats)
    if len(times) != len(configs) or not all(times):
        raise ValueError(f'latency calibration: the measurement gave {[len(t) for t in times]} times for '
                         f'{len(configs)} configurations (expected {repeats} each)')
    calibration = LatencyCalibration(profile_sha256=table.profile_sha256(), key=table.key, ratios=ratios,
                                     predicted_ms=[table.predict_uncalibrated(c) for c in configs],
                                     measured_ms=[float(statistics.median(t)) for t in times], repeats=repeats)
    return replace(table, calibration=calibration)


def ensure_calibrated(path: str | Path, table: LatencyTable, measure: Measure, repeats: int,
                      log: Callable[[str], None] = print) -> LatencyTable:
    """``table`` if it holds a calibration (it was checked against the profile when read), else ``table``
    calibrated now (:func:`calibrate`) and written to ``path`` atomically, so the next run reuses it."""
    if table.calibration is None:
        ratios = calibration_ratios(table.ratio_choices)
        log(f'latency table: calibrating against uniform ratios {ratios} (dense among them), {repeats} '
            f'interleaved rounds')
        table = calibrate(table, measure, repeats, ratios)
        atomic_write_json(path, table.to_json(), indent=1)
        verb = 'measured'
    else:
        verb = 'reusing the calibration in'
    cal = table.calibration
    log(f'latency table: {verb} {path}: ' + ', '.join(
        f'ratio {r:g} predicted {p:.1f} ms, measured {m:.1f} ms'
        for r, p, m in zip(cal.ratios, cal.predicted_ms, cal.measured_ms)))
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
    """Predicted (calibrated if the table is) vs measured (interleaved medians) latency of ``configs``: per
    configuration, and the mean and max relative error ``|predicted - measured| / measured``; ``meets_goal``
    when the max is <= ``goal``."""
    times = measure_interleaved(encoder, images, configs, repeats, seed=seed)
    rows = []
    for ratios, t in zip(configs, times):
        predicted, measured = table.predict(ratios), float(statistics.median(t))
        rows.append(dict(pruning_ratios=[list(map(float, s)) for s in ratios], predicted_ms=predicted,
                         uncalibrated_ms=table.predict_uncalibrated(ratios), measured_ms=measured,
                         relative_error=(predicted - measured) / measured))
    errors = [abs(r['relative_error']) for r in rows]
    mean_err, max_err = float(statistics.mean(errors)), max(errors)
    return dict(key=table.key, calibrated=table.calibration is not None, repeats=repeats, goal=goal,
                mean_abs_relative_error=mean_err, max_abs_relative_error=max_err, meets_goal=max_err <= goal,
                configs=rows)
