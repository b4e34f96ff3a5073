"""Pieces of ``tools/ablate.py`` that are not tied to one ablation: cached evaluation rows, interleaved
encoder timing, accuracy at matched latency, tables and progress.

- :class:`RowCache`: one JSON file per evaluated row under a fingerprint of what the row depends on (the
  checkpoint's stage, the ratios, the input size, ...); a rerun reuses it, a changed dependency re-evaluates;
- :func:`time_encoders`: median milliseconds of several (encoder, ratios, images) variants timed round-robin
  in one process (:func:`~projects.sparsevit_bevdet.utils.timing.interleaved_times`);
- :func:`interpolate`: a method's accuracy at a latency, linearly interpolated between its two measured
  configurations around it (``None`` outside its measured range: no extrapolation);
- :func:`markdown_table`, :class:`Progress`.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ['Progress', 'RowCache', 'fingerprint', 'interpolate', 'markdown_table', 'time_encoders']


def fingerprint(key: Any) -> str:
    """A short hash of a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RowCache:
    """Results stored one file per key in ``root`` (``<name>-<fingerprint>.json``, written atomically)."""

    def __init__(self, root: Path, log: Callable[[str], None] = print) -> None:
        self.root, self.log = Path(root), log
        self.reused = 0
        self.computed = 0

    def path(self, name: str, key: Any) -> Path:
        safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)
        return self.root / f'{safe}-{fingerprint(key)}.json'

    def get(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key``, else ``compute()`` stored and returned."""
        from ..utils.atomic_io import atomic_write_json

        key = json.loads(json.dumps(key, default=str))  # as it reads back
        path = self.path(name, key)
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get('key') == key:
                self.reused += 1
                self.log(f'{name}: reusing {path.name}')
                return record['value']
        value = compute()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, dict(name=name, key=key, value=value), indent=1)
        self.computed += 1
        return value


class Progress:
    """``[i/n] message (elapsed, eta)`` lines on stdout."""

    def __init__(self, total: int, title: str) -> None:
        self.total, self.title, self.done = max(total, 1), title, 0
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        eta = f', eta {elapsed / self.done * (self.total - self.done):.0f} s' if self.done else ''
        self.done += 1
        print(f'[{self.title} {self.done}/{self.total}] {message} ({elapsed:.0f} s elapsed{eta})', flush=True)


def time_encoders(variants: Mapping[str, tuple[Any, Any, Any]], repeats: int, seed: int = 0) -> dict[str, dict]:
    """Median and quartiles (ms) of each variant ``name -> (encoder, ratios, images)``: every variant runs once
    per round in a shuffled order (after one warm-up round), the encoder's ratios set in the timed call as the
    search's latency table measures them. Each encoder's ratios are restored afterwards."""
    import torch

    from ..utils.timing import interleaved_times

    def call(encoder: Any, ratios: Any, images: Any) -> Callable[[], None]:
        def forward() -> None:
            encoder.set_pruning_ratios(ratios)
            encoder(images)
        return forward

    saved = {id(enc): (enc, enc.pruning_ratios) for enc, _, _ in variants.values()}
    rounds = [0]

    def on_round() -> None:
        rounds[0] += 1
        sys.stdout.write(f'\rtiming {len(variants)} variants interleaved: round {rounds[0]}/{repeats + 1}')
        sys.stdout.flush()

    try:
        with torch.inference_mode():
            seconds = interleaved_times({n: call(*v) for n, v in variants.items()}, repeats, warmup=1, seed=seed,
                                        on_round=on_round)
    finally:
        for encoder, ratios in saved.values():
            encoder.set_pruning_ratios(ratios)
    print(flush=True)
    out = {}
    for name, times in seconds.items():
        ms = sorted(1e3 * t for t in times)
        quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        out[name] = dict(median_ms=statistics.median(ms), q1_ms=quartiles[0], q3_ms=quartiles[2], repeats=len(ms))
    return out


def interpolate(curve: Sequence[tuple[float, float]], latency: float) -> Optional[float]:
    """Accuracy at ``latency`` on the piecewise-linear curve through ``(latency, accuracy)`` points sorted by
    latency; ``None`` outside the points' latency range (no extrapolation)."""
    points = sorted(curve)
    if not points or latency < points[0][0] or latency > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= latency <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (latency - x0) / (x1 - x0)
    return points[0][1]  # a single point, at exactly its latency


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats with 4 significant decimals, ``None`` as a dash."""
    def cell(value: Any) -> str:
        if value is None:
            return '-'
        if isinstance(value, float):
            return f'{value:.4f}' if abs(value) < 10 else f'{value:.1f}'
        return str(value)

    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)
