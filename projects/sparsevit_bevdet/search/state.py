"""Search state files: what a state was made for (its fingerprint), and scores kept across interrupted runs.

A state file is only valid for the search that wrote it. Each records a *fingerprint* (e.g. checkpoint hash,
metric, evaluation set, budget, ratio choices); :func:`check_fingerprint` refuses to resume from a state with
another one and names every field that differs. :class:`ScoreStore` caches the scores of one evaluation set
in a JSON file written atomically after every new score, so no finished evaluation is ever repeated.
:func:`read_state` checks a file's shape (fields, types, ratios as lists of numbers) and names the file,
field and value of the first thing that is not what a search writes (:class:`StateFormatError`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from ..utils.atomic_io import atomic_write_json

__all__ = [
    'EVALUATION_FIELDS',
    'RATIOS',
    'SCORE_FIELDS',
    'GroupRatios',
    'ScoreStore',
    'StateFormatError',
    'StateMismatchError',
    'canonical',
    'check_fingerprint',
    'check_state_shape',
    'fingerprint_diffs',
    'read_state',
]

GroupRatios = tuple[tuple[float, ...], ...]


def canonical(groups: Sequence[Sequence[float]]) -> GroupRatios:
    """One ratio per search group as a hashable tuple, sorted within each stage (as SparseViT needs)."""
    return tuple(tuple(sorted(float(r) for r in stage)) for stage in groups)


class StateMismatchError(ValueError):
    """A state file was written by a search with another fingerprint."""


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so that saved and current compare."""
    return json.loads(json.dumps(value))


def fingerprint_diffs(saved: Optional[dict], current: dict, saved_in: str = 'the state') -> list[str]:
    """One ``'field: <saved> in <saved_in>, <current> now'`` line per field whose values differ."""
    saved, current = _plain(saved or {}), _plain(current)
    return [f'{field}: {saved.get(field)!r} in {saved_in}, {current.get(field)!r} now'
            for field in [*current, *(f for f in saved if f not in current)]
            if saved.get(field) != current.get(field)]


def check_fingerprint(path: str | Path, saved: Optional[dict], current: dict) -> None:
    """Raise :class:`StateMismatchError` naming each field whose saved value differs from the current one."""
    diffs = fingerprint_diffs(saved, current)
    if diffs:
        raise StateMismatchError(f'{path} was written by a different search, refusing to resume it ('
                                 + '; '.join(diffs) + f'). Choose another --work-dir or delete {path} to start over.')


class StateFormatError(ValueError):
    """A state file is valid JSON but not shaped as a search writes it."""


# Field kinds of the shapes below: a Python type, RATIOS (one list of ratios per stage), or a nested shape
# (a dict: an object with those fields; a one-element list: a list of such items).
RATIOS = 'ratios'
SCORE_FIELDS: dict = dict(fingerprint=dict, scores=[dict(ratios=RATIOS, score=float)])
EVALUATION_FIELDS: dict = dict(ratios=RATIOS, score=float, latency=float, generation=int)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _expected(kind: Any) -> str:
    if kind is RATIOS:
        return 'one list of ratios per stage, e.g. [[0.2], [0.0], [0.1, 0.3, 0.3], [0.0]]'
    if isinstance(kind, dict):
        return f'an object with fields {", ".join(kind)}'
    if isinstance(kind, list):
        return f'a list of {_expected(kind[0])}'
    return {float: 'a finite number', int: 'an integer', dict: 'an object', str: 'a string'}.get(kind, kind.__name__)


def _check(path: Path, where: str, value: Any, kind: Any) -> None:
    if kind is RATIOS:
        ok = isinstance(value, list) and all(isinstance(s, list) and all(_is_number(r) for r in s) for s in value)
    elif isinstance(kind, dict):
        ok = isinstance(value, Mapping)
    elif isinstance(kind, list):
        ok = isinstance(value, list)
    elif kind is float:
        ok = _is_number(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise StateFormatError(f'{path}: {where} is {json.dumps(value)[:80]}, expected {_expected(kind)}; it was not '
                               f'written by this search (delete it to start over)')
    if isinstance(kind, dict):
        for name, sub in kind.items():
            if name not in value:
                raise StateFormatError(f'{path}: {where} has no field {name!r} (expected {_expected(kind)}); it was '
                                       f'not written by this search (delete it to start over)')
            _check(path, f'{where}.{name}' if where != 'the file' else f'field {name!r}', value[name], sub)
    elif isinstance(kind, list):
        for i, item in enumerate(value):
            _check(path, f'{where}[{i}]', item, kind[0])


def read_state(path: Path, shape: Optional[dict] = None) -> Optional[dict]:
    """The JSON object in ``path``, None if there is no file; a corrupt file, or one not of ``shape`` (a dict of
    field kinds, see :data:`SCORE_FIELDS`), is an error naming the file, field and value."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: corrupt search state ({err}); delete it to start over') from err
    check_state_shape(path, state, shape or {})
    return state


def check_state_shape(path: Path, state: Any, shape: dict) -> None:
    """Raise :class:`StateFormatError` naming the field and value where ``state`` is not of ``shape``."""
    _check(path, 'the file', state, shape)


class ScoreStore:
    """Cached ``score_fn`` of candidates on one evaluation set, persisted in ``path`` after every new score.

    Args:
        path: the JSON file.
        score_fn: candidate -> score; called once per candidate ever (across runs).
        fingerprint: what the scores depend on (checkpoint, metric, evaluation set); a file with another
            fingerprint is refused.
    """

    def __init__(self, path: str | Path, score_fn: Callable[[GroupRatios], float], fingerprint: dict) -> None:
        self.path, self.score_fn, self.fingerprint = Path(path), score_fn, fingerprint
        self.scores: dict[GroupRatios, float] = {}
        state = read_state(self.path, SCORE_FIELDS)
        if state is not None:
            check_fingerprint(self.path, state.get('fingerprint'), fingerprint)
            self.scores = {canonical(item['ratios']): item['score'] for item in state['scores']}

    def __contains__(self, candidate: GroupRatios) -> bool:
        return candidate in self.scores

    def __len__(self) -> int:
        return len(self.scores)

    def __call__(self, candidate: GroupRatios) -> float:
        if candidate not in self.scores:
            self.scores[candidate] = float(self.score_fn(candidate))
            atomic_write_json(self.path, dict(fingerprint=self.fingerprint, scores=[
                dict(ratios=[list(s) for s in c], score=v) for c, v in self.scores.items()]), indent=1)
        return self.scores[candidate]
