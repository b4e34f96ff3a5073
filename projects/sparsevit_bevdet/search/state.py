"""Search state files: what a state was made for (its fingerprint), and scores kept across interrupted runs.

A state file is only valid for the search that wrote it. Each records a *fingerprint* (e.g. checkpoint hash,
metric, evaluation set, budget, ratio choices); :func:`check_fingerprint` refuses to resume from a state with
another one and names every field that differs. :class:`ScoreStore` caches the scores of one evaluation set
in a JSON file written atomically after every new score, so no finished evaluation is ever repeated.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from ..utils.atomic_io import atomic_write_json

__all__ = ['GroupRatios', 'ScoreStore', 'StateMismatchError', 'canonical', 'check_fingerprint', 'fingerprint_diffs',
           'read_state']

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


def read_state(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, None if there is no file; a corrupt file is an error."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: corrupt search state ({err}); delete it to start over') from err


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
        state = read_state(self.path)
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
