"""What a search is asked to do (:class:`SearchOptions`), and the errors that refuse a search (:class:`SearchError`).

The options are those of ``tools/search.py`` (one field per command-line option, same defaults), so a script,
``tools/demo.py`` and ``tools/search.py`` describe a search alike. Errors name an option through a spelling the
caller chooses: the field name by default (``latency_ratio``), the command-line flag in ``tools/search.py``
(``--latency-ratio``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .evolution import DEFAULT_RATIO_CHOICES

__all__ = ['DEFAULT_UNIFORM_RATIOS', 'SearchError', 'SearchOptions', 'cli_flag']

DEFAULT_UNIFORM_RATIOS = (0.2, 0.4, 0.6, 0.8)
Spelling = Callable[[str], str]  # an option's field name -> how the caller names it


def cli_flag(field_name: str) -> str:
    """``latency_ratio`` -> ``--latency-ratio`` (the spelling of ``tools/search.py``)."""
    return '--' + field_name.replace('_', '-')


class SearchError(ValueError):
    """A search refused, before or instead of doing its work.

    The message names options as ``<field>``; :meth:`message` spells them the caller's way, ``str()`` gives
    the field names.
    """

    def __init__(self, template: str) -> None:
        super().__init__(template)
        self.template = template

    def message(self, spell: Spelling = str) -> str:
        return re.sub(r'<([a-z_]+)>', lambda m: spell(m.group(1)), self.template)

    def __str__(self) -> str:
        return self.message()


@dataclass(frozen=True)
class SearchOptions:
    """One search: the budget, the evolution's sizes, scoring, timing and where the state lives.

    Exactly one of ``latency_ratio`` (a fraction of the dense encoder's measured latency) and
    ``latency_budget_ms`` is given. ``None`` defaults are resolved by :meth:`checked`: ``uniform_ratios``
    to those of 0.2 0.4 0.6 0.8 among ``ratio_choices``, ``random_seed`` to ``seed + 1``; and by
    :func:`~.runner.run_search`: ``work_dir`` to ``work_dirs/search_<config name>``, ``latency_table`` (the
    table's file, which searches of one encoder on one machine may share) to ``<work_dir>/latency_table.json``.
    See ``tools/search.py --help`` for each option.
    """

    latency_ratio: Optional[float] = None
    latency_budget_ms: Optional[float] = None
    metric: str = 'NuScenes/NDS'
    population: int = 10
    parents: int = 5
    generations: int = 4
    mutation_prob: float = 0.2
    ratio_choices: Sequence[float] = DEFAULT_RATIO_CHOICES
    proxy_samples: Optional[int] = None
    rescore_top: int = 3
    uniform_ratios: Optional[Sequence[float]] = None
    cache_inputs: bool = False
    seed: int = 0
    random_seed: Optional[int] = None
    table_repeats: int = 3
    calibration_repeats: int = 5
    check_samples: int = 8
    check_repeats: int = 3
    final_repeats: int = 15
    threads: Optional[int] = None
    work_dir: Optional[Union[str, Path]] = None
    latency_table: Optional[Union[str, Path]] = None
    storage: Optional[str] = None
    study_name: Optional[str] = None
    heartbeat_interval: int = 30
    grace_period: int = 120
    allow_partial_load: bool = False

    @classmethod
    def from_namespace(cls, args: Any) -> SearchOptions:
        """The options of an ``argparse.Namespace`` (or any object) with one attribute per field."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def to_json(self) -> dict:
        """The options as JSON values (e.g. for a fingerprint of the search a caller asked for)."""
        out = asdict(self)
        for name in ('work_dir', 'latency_table'):
            out[name] = None if out[name] is None else str(out[name])
        for name in ('ratio_choices', 'uniform_ratios'):
            out[name] = None if out[name] is None else [float(r) for r in out[name]]
        return out

    def checked(self) -> SearchOptions:
        """These options with the ``None`` defaults resolved; :class:`SearchError` for an option that cannot
        be right (a budget that is not a finite number > 0, uniform ratios outside the ratio choices, counts
        below 1, a storage without a study name or of an unsupported kind, a heartbeat not shorter than the
        grace period)."""
        if (self.latency_ratio is None) == (self.latency_budget_ms is None):
            raise SearchError('give one of <latency_ratio> and <latency_budget_ms>')
        for name in ('latency_ratio', 'latency_budget_ms'):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise SearchError(f'<{name}> must be a finite number > 0, got {value}')
        uniform = self.uniform_ratios
        if uniform is None:
            uniform = [r for r in DEFAULT_UNIFORM_RATIOS if r in self.ratio_choices]
        not_choices = [r for r in uniform if r not in self.ratio_choices]
        if not_choices:
            raise SearchError(f'<uniform_ratios> {not_choices} are not among <ratio_choices> '
                              f'{list(self.ratio_choices)} (the latency table covers only those)')
        for name in ('proxy_samples', 'rescore_top', 'table_repeats', 'calibration_repeats', 'check_repeats',
                     'final_repeats'):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SearchError(f'<{name}> must be >= 1, got {value}')
        if (self.storage is None) != (self.study_name is None):
            raise SearchError('<storage> and <study_name> go together')
        if self.storage is not None:
            from .shared_study import storage_kind

            try:
                storage_kind(self.storage)
            except ValueError as err:
                raise SearchError(str(err)) from None
            if not 0 < self.heartbeat_interval < self.grace_period:
                raise SearchError(f'need 0 < <heartbeat_interval> < <grace_period>, got {self.heartbeat_interval} '
                                  f'and {self.grace_period}')
        return replace(self, uniform_ratios=list(uniform),
                       random_seed=self.seed + 1 if self.random_seed is None else self.random_seed)
