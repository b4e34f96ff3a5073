"""One search shared by many workers through an Optuna study (``tools/search.py --storage URL --study-name NAME``).

Each score of a candidate on an evaluation set is one trial of the study: the canonical ratios (``ratios``,
JSON) and the evaluation set (``scored_on``) are user attributes, the score is the value. Workers started
with the same storage and study name share the search:

* **A candidate is scored once.** A worker claims a candidate by creating a RUNNING trial for it. The
  storages serialise trial creation (the RDB storage locks the study's row, SQLite the whole file; the
  journal appends to one log), so when two workers claim a candidate at once the later one sees the
  earlier claim and withdraws (its trial is failed with ``lost_claim_to``). A candidate RUNNING in another
  worker is never started.
* **A killed worker's trial is retried.** While a trial runs, its worker records a heartbeat every
  ``heartbeat_interval`` seconds (Optuna's RDB heartbeat; Optuna's journal storage has none, so here a
  journal heartbeat is a trial system attribute holding the wall-clock time, and the machines that share
  a journal file need synchronised clocks). A waiting worker fails the trials whose last heartbeat is
  older than ``grace_period`` (``optuna.storages.fail_stale_trials``). A candidate with no RUNNING or
  COMPLETE trial left is claimed again by the next worker that needs it (``retry_of`` names the failed
  trials).
* **Every worker replays the searches.** :class:`SharedEvolutionarySearch` and :class:`SharedRandomSearch`
  are the file-based searches. Their random draws depend only on the seed, the latency predictions and
  the scores, so every worker replays them from the start, reads the scores from the study and scores a
  population's missing candidates together with the other workers. A generation is built once the whole
  previous one is scored, from every worker's results. All workers follow the same populations, and the
  result is the one a single process gets with the same seed.
* **One fingerprint and one latency table.** The worker that creates the study stores its fingerprint
  (checkpoint, metric, evaluation set, budget, latency-table key, search seeds and sizes) and its latency
  table as study user attributes. A worker with another fingerprint is refused. Every worker predicts
  latencies with the stored table, so all of them draw the same candidates within the same budget.

Storage URLs: :data:`STORAGE_FORMS`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import optuna
import sqlalchemy.exc
from optuna.exceptions import (
    DuplicatedStudyError,
    ExperimentalWarning,
    StorageInternalError,
    UpdateFinishedTrialError,
)
from optuna.storages import JournalStorage, RDBStorage, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials uses; not exported
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial

from ..utils.atomic_io import atomic_write_json
from .evolution import Evaluation, EvolutionarySearch, Log, RandomSearch, _BudgetedSearch
from .state import GroupRatios, StateMismatchError, canonical, fingerprint_diffs

__all__ = ['STORAGE_FORMS', 'SharedEvolutionarySearch', 'SharedRandomSearch', 'SharedScores', 'SharedStudy',
           'open_storage', 'storage_kind']

STORAGE_FORMS = (
    'sqlite:///PATH.db (a SQLite file: the workers of one machine; sqlite:////ABS/PATH.db for an absolute path)',
    'postgresql://USER:PASSWORD@HOST[:PORT]/DB or mysql://USER:PASSWORD@HOST[:PORT]/DB (a database server: '
    'workers on many machines; a SQLAlchemy driver suffix such as postgresql+psycopg2:// is allowed)',
    'journal://PATH.log (an Optuna journal file on a filesystem that the machines share, e.g. NFS; '
    'journal:///ABS/PATH.log for an absolute path)',
)
_RDB_URL = re.compile(r'(sqlite|postgresql|mysql)(\+\w+)?://')
_FINGERPRINT, _TABLE = 'fingerprint', 'latency_table'  # study user attributes
_SCORED_ON, _RATIOS = 'scored_on', 'ratios'  # trial user attributes that identify an evaluation
_HEARTBEAT = 'sparsevit_heartbeat'  # journal trials' last heartbeat (system attribute, seconds since the epoch)
# the creator of a study writes its fingerprint right after creating it; a longer wait means it died in between
_CREATION_WAIT_S = 300.0
_SCHEMA_TRIES = 5


def _file_path(url: str) -> Optional[str]:
    """The file of a SQLite or journal URL ('' if it names none), None for a database server."""
    scheme, _, rest = url.partition('://')
    if scheme.startswith('sqlite'):
        return rest[1:].split('?', 1)[0] if rest.startswith('/') else ''
    return rest if scheme == 'journal' else None


def storage_kind(url: str) -> str:
    """``'sqlite'``, ``'postgresql'``, ``'mysql'`` or ``'journal'``; a ValueError naming ``url`` and the
    accepted forms for anything else (an in-memory SQLite database cannot be shared)."""
    match = _RDB_URL.match(url)
    kind = match.group(1) if match else 'journal' if url.startswith('journal://') else None
    path = _file_path(url)
    if kind is None or path == '' or path == ':memory:':
        raise ValueError(f'unsupported --storage {url!r}; accepted forms: ' + '; '.join(STORAGE_FORMS))
    return kind


class _HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat its RDB storage has: a trial's last beat is a system
    attribute holding the wall-clock time; a trial without one counts from its start."""

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int) -> None:
        super().__init__(backend)
        self._heartbeat_interval, self._grace_period = heartbeat_interval, grace_period

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - t.system_attrs.get(_HEARTBEAT, t.datetime_start.timestamp()) > self._grace_period]

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None  # no Optuna retry callback: a candidate left without a live trial is claimed again


RDBOrJournal = Union[RDBStorage, _HeartbeatJournalStorage]


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBOrJournal:
    """The Optuna storage of ``url`` (one of :data:`STORAGE_FORMS`) with heartbeats enabled."""
    kind = storage_kind(url)
    path = _file_path(url)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if kind == 'journal':
        return _HeartbeatJournalStorage(JournalFileBackend(path), heartbeat_interval, grace_period)
    # SQLite's default 5 s wait for the write lock is short for several workers writing at once
    engine_kwargs = {'connect_args': {'timeout': 60}} if kind == 'sqlite' else {}

    def rdb_storage() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', ExperimentalWarning)  # heartbeats are "experimental" in Optuna
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period)

    for attempt in range(1, _SCHEMA_TRIES):
        try:
            return rdb_storage()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, StorageInternalError):
            # workers that start together on a new database race on its schema (Optuna creates the tables and
            # stamps their version without a lock); the loser finds the schema complete on a later try
            time.sleep(0.5 * attempt)
    return rdb_storage()  # the last try raises what it meets


def _worker() -> str:
    return f'{socket.gethostname()}:{os.getpid()}'


def _ratios_key(candidate: GroupRatios) -> str:
    return json.dumps([list(stage) for stage in candidate])


class _Heartbeat:
    """Records a trial's heartbeat at once and then every ``interval`` seconds until the ``with`` ends."""

    def __init__(self, storage: BaseHeartbeat, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f'heartbeat-{trial_id}', daemon=True)

    def __enter__(self) -> None:
        # at once: on the RDB storage a trial that never beat is never found stale
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except UpdateFinishedTrialError:  # another worker failed the trial as stale: nothing to keep alive
                return


class SharedStudy:
    """One search's Optuna study: created by the first worker, joined by the others.

    Args:
        storage: the storage URL, one of :data:`STORAGE_FORMS`.
        study_name: workers with the same storage and study name run one search.
        heartbeat_interval: seconds between two heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a trial's worker counts as dead and the
            trial is retried; it must exceed any pause of a live worker.
        poll_interval: seconds between two looks at the study while other workers score what this one needs.
    """

    def __init__(self, storage: str, study_name: str, heartbeat_interval: int = 30, grace_period: int = 120,
                 poll_interval: float = 5.0) -> None:
        if grace_period <= heartbeat_interval:
            raise ValueError(f'grace_period ({grace_period} s) must exceed heartbeat_interval '
                             f'({heartbeat_interval} s), or live workers\' trials are retried')
        self.name = study_name
        self.storage = open_storage(storage, heartbeat_interval, grace_period)
        self.heartbeat_interval, self.poll_interval = heartbeat_interval, poll_interval
        self._study: Optional[tuple[optuna.Study, int]] = None  # the study and its id, once joined

    def _joined(self) -> tuple[optuna.Study, int]:
        if self._study is None:
            raise RuntimeError(f'join study {self.name!r} first (SharedStudy.join)')
        return self._study

    def copy_latency_table(self, path: str | Path) -> bool:
        """Write the study's latency table to ``path`` if the study has one (a worker that joins a study
        then loads it instead of profiling its own); returns whether it did."""
        try:
            study_id = self.storage.get_study_id_from_name(self.name)
        except KeyError:
            return False
        table = self.storage.get_study_user_attrs(study_id).get(_TABLE)
        if table is not None:
            atomic_write_json(path, table, indent=1)
        return table is not None

    def join(self, fingerprint: dict, latency_table: dict) -> dict:
        """Create the study with ``fingerprint`` and ``latency_table``, or join it if it exists with the same
        fingerprint (another one raises :class:`StateMismatchError`). Returns the study's latency table, the
        one every worker must predict latencies with."""
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.name, direction='maximize')
        except DuplicatedStudyError:
            study = optuna.load_study(study_name=self.name, storage=self.storage)
            deadline = time.monotonic() + _CREATION_WAIT_S
            while _FINGERPRINT not in study.user_attrs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'study {self.name!r} has no fingerprint {_CREATION_WAIT_S:.0f} s after it '
                                       f'was found: the worker that created it died before writing it. Delete '
                                       f'it (optuna delete-study --storage URL --study-name {self.name}) and '
                                       f'start again') from None
                time.sleep(0.2)
            diffs = fingerprint_diffs(study.user_attrs[_FINGERPRINT], fingerprint, saved_in='the study')
            if diffs:
                raise StateMismatchError(
                    f'study {self.name!r} was made by a different search, refusing to join it (' + '; '.join(diffs)
                    + f'). Choose another --study-name, or delete the study to start over: optuna delete-study '
                      f'--storage URL --study-name {self.name}') from None
        else:
            study.set_user_attr(_TABLE, latency_table)
            study.set_user_attr(_FINGERPRINT, fingerprint)  # last: joining workers wait for it
        self._study = study, self.storage.get_study_id_from_name(self.name)
        return study.user_attrs[_TABLE]

    def scores(self, scored_on: str, score_fn: Callable[[GroupRatios], float]) -> SharedScores:
        """The scores of evaluation set ``scored_on`` (e.g. ``'proxy'``, ``'full'``), made by ``score_fn``."""
        self._joined()
        return SharedScores(self, scored_on, score_fn)

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the study, by number."""
        return sorted(self.storage.get_all_trials(self._joined()[1], deepcopy=False), key=lambda t: t.number)

    def new_trial(self, state: TrialState, user_attrs: dict, value: Optional[float] = None) -> tuple[int, int]:
        """A new trial with its user attributes set in the same write; returns its id and number."""
        trial_id = self.storage.create_new_trial(
            self._joined()[1], template_trial=create_trial(state=state, value=value, user_attrs=user_attrs))
        return trial_id, self.storage.get_trial_number_from_id(trial_id)

    def fail_stale_trials(self) -> None:
        """Fail the RUNNING trials whose heartbeat is older than the grace period (their workers are dead)."""
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', ExperimentalWarning)
            fail_stale_trials(self._joined()[0])


class SharedScores:
    """``score_fn`` of candidates on one evaluation set, kept in the study: each candidate is scored by the
    worker that claims it first, once for all workers. Used like :class:`ScoreStore` (call, ``in``, ``len``,
    ``scores``), plus :meth:`score_all`, with which the workers split a batch."""

    def __init__(self, study: SharedStudy, scored_on: str, score_fn: Callable[[GroupRatios], float]) -> None:
        self.study, self.scored_on, self.score_fn = study, scored_on, score_fn
        self._complete: dict[GroupRatios, float] = {}  # a complete trial never changes: cached once read

    @property
    def scores(self) -> dict[GroupRatios, float]:
        """Every score of this set in the study, whichever worker made it."""
        self._read()
        return dict(self._complete)

    def __contains__(self, candidate: GroupRatios) -> bool:
        if candidate not in self._complete:
            self._read()
        return candidate in self._complete

    def __len__(self) -> int:
        return len(self.scores)

    def __call__(self, candidate: GroupRatios) -> float:
        return self.score_all([candidate], f'{self.scored_on} set')[0]

    def _read(self) -> dict[GroupRatios, list[FrozenTrial]]:
        """This set's trials by candidate (in number order); caches the completed scores."""
        trials: dict[GroupRatios, list[FrozenTrial]] = {}
        for t in self.study.trials():
            if t.user_attrs.get(_SCORED_ON) == self.scored_on:
                trials.setdefault(canonical(json.loads(t.user_attrs[_RATIOS])), []).append(t)
        for candidate, ts in trials.items():
            done = [t for t in ts if t.state == TrialState.COMPLETE]
            if done:
                self._complete.setdefault(candidate, float(done[0].value))
        return trials

    def score_all(self, candidates: Sequence[GroupRatios], where: str, log: Log = print) -> list[float]:
        """The scores of ``candidates``: read from the study, or scored here one claim at a time (the study is
        read again after each), waiting for those that other workers are scoring."""
        waiting_for = 0
        while True:
            missing = [c for c in dict.fromkeys(candidates) if c not in self._complete]
            if missing:
                self.study.fail_stale_trials()
                trials = self._read()
                missing = [c for c in missing if c not in self._complete]
            if not missing:
                return [self._complete[c] for c in candidates]
            free = [c for c in missing if not any(t.state == TrialState.RUNNING for t in trials.get(c, ()))]
            if free:
                c = free[0]
                self._claim_and_score(c, trials.get(c, []),
                                      f'{where}, candidate {candidates.index(c) + 1}/{len(candidates)}', log)
                continue
            if len(missing) != waiting_for:
                log(f'{where}: waiting for {len(missing)} candidate(s) that other workers are scoring')
                waiting_for = len(missing)
            time.sleep(self.study.poll_interval)

    def _claim_and_score(self, candidate: GroupRatios, earlier: list[FrozenTrial], where: str, log: Log) -> None:
        """Claim ``candidate`` and score it, unless another worker's claim came first."""
        attrs: dict[str, Any] = {_SCORED_ON: self.scored_on, _RATIOS: _ratios_key(candidate),
                                 'requested_by': where, 'worker': _worker()}
        failed = [t.number for t in earlier if t.state == TrialState.FAIL and 'lost_claim_to' not in t.user_attrs]
        if failed:
            attrs['retry_of'] = failed
        storage = self.study.storage
        trial_id, number = self.study.new_trial(TrialState.RUNNING, attrs)
        with _Heartbeat(storage, trial_id, self.study.heartbeat_interval):
            live = (t.number for t in self._read().get(candidate, ())
                    if t.state in (TrialState.RUNNING, TrialState.COMPLETE))
            first = min(live, default=None)
            if first != number:
                storage.set_trial_user_attr(trial_id, 'lost_claim_to', first)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
                return
            start = time.perf_counter()
            try:
                score = float(self.score_fn(candidate))
                if not math.isfinite(score):
                    raise ValueError(f'{where}: the score of {list(candidate)} is {score}')
            except BaseException:
                # frees the candidate for the other workers now rather than after the grace period
                with contextlib.suppress(UpdateFinishedTrialError):
                    storage.set_trial_state_values(trial_id, TrialState.FAIL)
                raise
            try:
                storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [score])
            except UpdateFinishedTrialError:
                # this worker paused longer than the grace period and another one failed the trial as stale:
                # keep the score in a new trial (a retry, if one started, adds an equal one)
                log(f'{where}: trial {number} was failed as stale while it ran (a pause longer than the grace '
                    f'period?); recording its score in a new trial')
                self.study.new_trial(TrialState.COMPLETE, dict(attrs, recorded_after_lapse=number), value=score)
        self._complete.setdefault(candidate, score)
        log(f'{where}: score {score:.4f}, {time.perf_counter() - start:.1f} s (trial {number} of study '
            f'{self.study.name!r})')


def _score_in_study(search: _BudgetedSearch, candidates: Sequence[GroupRatios], where: str) -> list[Evaluation]:
    """``search``'s ``_score_many`` through its :class:`SharedScores`: the workers split the candidates."""
    scores = search.score_fn
    assert isinstance(scores, SharedScores)  # checked at construction
    for candidate, score in zip(candidates, scores.score_all(candidates, where, log=search.log)):
        if candidate not in search.evaluations:
            search.evaluations[candidate] = Evaluation(candidate, score, search.latency(candidate), search.generation)
    return [search.evaluations[c] for c in candidates]


def _check_shared(search: _BudgetedSearch) -> None:
    if not isinstance(search.score_fn, SharedScores):
        raise TypeError(f'{type(search).__name__} needs a SharedScores score_fn, got {type(search.score_fn)}')
    if search.state_file is not None:
        raise ValueError(f'{type(search).__name__} keeps its state in the study; got state_file={search.state_file}')


class SharedEvolutionarySearch(EvolutionarySearch):
    """:class:`EvolutionarySearch` that every worker of a study replays; ``score_fn`` is a
    :class:`SharedScores`, the other arguments are :class:`EvolutionarySearch`'s without ``state_file``."""

    def __init__(self, space: Sequence, score_fn: SharedScores, *args: Any, **kwargs: Any) -> None:
        super().__init__(space, score_fn, *args, **kwargs)
        _check_shared(self)

    def _score_many(self, candidates: Sequence[GroupRatios], where: str) -> list[Evaluation]:
        return _score_in_study(self, candidates, where)


class SharedRandomSearch(RandomSearch):
    """:class:`RandomSearch` that every worker of a study replays; arguments as
    :class:`SharedEvolutionarySearch`'s."""

    def __init__(self, space: Sequence, score_fn: SharedScores, *args: Any, **kwargs: Any) -> None:
        super().__init__(space, score_fn, *args, **kwargs)
        _check_shared(self)

    def _score_many(self, candidates: Sequence[GroupRatios], where: str) -> list[Evaluation]:
        return _score_in_study(self, candidates, where)
