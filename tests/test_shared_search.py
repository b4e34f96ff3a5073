"""A search that several workers share through one Optuna study (search/shared_study.py): two worker
processes on one SQLite file, a worker SIGKILLed mid-evaluation (SQLite and journal file) and restarted
while the search still runs, a study of another search refused, storage URLs checked, and
tools/search.py --storage end to end on the small synthetic set.

The worker processes run projects/sparsevit_bevdet/testing/shared_search_worker.py: the real shared
searches on SparseViT-T's search space with a cheap deterministic score (plus a sleep) and a toy latency
table, so the runs take seconds; ``reference()`` is the same search in one process with the file-based
classes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from projects.sparsevit_bevdet.search import StateMismatchError
from projects.sparsevit_bevdet.search.shared_study import SharedStudy, open_storage, storage_kind
from projects.sparsevit_bevdet.testing import shared_search_worker as toy
from projects.sparsevit_bevdet.testing.configs import DEMO_CONFIG, small_search_cfg
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
WORKER = [sys.executable, '-m', 'projects.sparsevit_bevdet.testing.shared_search_worker']
OUT_ARG = len(WORKER) + 2  # the worker's result file among its arguments
# a broken protocol fails the test after this long instead of hanging the suite; no speed is asserted
SAFETY_S = 900


def start_worker(storage: str, out: Path, *extra: str) -> subprocess.Popen:
    with open(out.with_suffix('.log'), 'w') as log:
        return subprocess.Popen([*WORKER, storage, 'toy', str(out), *extra], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


def worker_log(proc: subprocess.Popen) -> str:
    return Path(proc.args[OUT_ARG]).with_suffix('.log').read_text()[-4000:]


def finish(proc: subprocess.Popen) -> dict:
    """The worker's result, once it exited cleanly."""
    assert proc.wait(timeout=SAFETY_S) == 0, worker_log(proc)
    return json.loads(Path(proc.args[OUT_ARG]).read_text())


def wait_until(condition: Callable[[], bool], workers: Sequence[subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not condition():
        for proc in workers:
            if proc.poll() is not None:
                pytest.fail(f'a worker exited ({proc.returncode}) before {what}:\n{worker_log(proc)}')
        if time.monotonic() > deadline:
            pytest.fail(f'still no {what} after {SAFETY_S} s')
        time.sleep(0.2)


def trials(storage: optuna.storages.BaseStorage, study_name: str = 'toy') -> list[FrozenTrial]:
    """The study's trials by number; none before a worker created the study."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def of_worker(ts: list[FrozenTrial], pid: int, state: TrialState) -> list[FrozenTrial]:
    return [t for t in ts if t.user_attrs['worker'].endswith(f':{pid}') and t.state == state]


def events(path: Path) -> tuple[Counter, Counter, set[int]]:
    """(starts, ends) per candidate (its ratios as JSON) and the pids that evaluated anything."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    count = {kind: Counter(json.dumps(e['ratios']) for e in lines if e['event'] == kind) for kind in ('start', 'end')}
    return count['start'], count['end'], {e['pid'] for e in lines}


def scored_candidates(result: dict) -> set[str]:
    return {json.dumps(e['ratios']) for e in result['evolution'] + result['random']}


def complete_per_candidate(ts: list[FrozenTrial]) -> Counter:
    return Counter(t.user_attrs['ratios'] for t in ts if t.state == TrialState.COMPLETE)


@pytest.mark.slow
def test_two_workers_run_one_search(tmp_path):
    storage = f'sqlite:///{tmp_path}/study.db'
    log = tmp_path / 'events.jsonl'
    # a long grace period: no worker may take the other's trial for dead in this test
    options = ['--eval-seconds', '0.3', '--events', str(log), '--heartbeat-interval', '1', '--grace-period', '60']
    workers = [start_worker(storage, tmp_path / f'worker{i}.json', *options) for i in range(2)]
    results = [finish(w) for w in workers]

    # both follow the populations a single process follows, and report the same result
    reference = toy.reference()
    assert results[0] == results[1] == reference
    # the full number of evaluations: 6 in generation 1, 3 children in generation 2, 3 in the final population
    assert len(reference['evolution']) == len(reference['random']) == 12
    scored = scored_candidates(reference)
    starts, ends, pids = events(log)
    assert set(starts) == scored and set(starts.values()) == {1}  # every candidate evaluated, none twice
    assert ends == starts and pids <= {w.pid for w in workers}
    ts = trials(open_storage(storage, 1, 60))
    assert complete_per_candidate(ts) == Counter({c: 1 for c in scored})
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    # a trial that is not complete can only be a claim withdrawn for an earlier one of the same candidate
    assert all('lost_claim_to' in t.user_attrs for t in ts if t.state == TrialState.FAIL)
    print(f'evaluations per worker: {Counter(t.user_attrs["worker"] for t in ts if t.state == TrialState.COMPLETE)}')


def kill_a_worker_mid_evaluation(storage: str, tmp_path: Path, options: list[str], b_eval_seconds: str
                                  ) -> tuple[subprocess.Popen, subprocess.Popen, FrozenTrial]:
    """Worker A, whose evaluations never end, is SIGKILLed in the middle of its first one once worker B (each
    evaluation ``b_eval_seconds``) completed one. Returns (A, B, A's trial left RUNNING)."""
    reader = open_storage(storage, 1, 2)
    a = start_worker(storage, tmp_path / 'a.json', '--eval-seconds', '3600', *options)
    wait_until(lambda: bool(of_worker(trials(reader), a.pid, TrialState.RUNNING)), [a], 'evaluation started by A')
    b = start_worker(storage, tmp_path / 'b.json', '--eval-seconds', b_eval_seconds, *options)
    wait_until(lambda: bool(of_worker(trials(reader), b.pid, TrialState.COMPLETE)), [a, b], 'evaluation by B')
    [killed] = of_worker(trials(reader), a.pid, TrialState.RUNNING)
    os.kill(a.pid, signal.SIGKILL)
    assert a.wait(timeout=SAFETY_S) == -signal.SIGKILL
    return a, b, killed


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['sqlite', 'journal'])
def test_killed_worker_loses_nothing(tmp_path, kind):
    storage = f'sqlite:///{tmp_path}/study.db' if kind == 'sqlite' else f'journal://{tmp_path}/study.log'
    reader = open_storage(storage, 1, 2)
    log = tmp_path / 'events.jsonl'
    options = ['--events', str(log), '--heartbeat-interval', '1', '--grace-period', '2']
    a, b, killed = kill_a_worker_mid_evaluation(storage, tmp_path, options, '0.2')
    result = finish(b)  # B takes the killed trial for dead once its heartbeat is 2 s old, and retries it
    restarted = start_worker(storage, tmp_path / 'a2.json', '--eval-seconds', '0.2', *options)
    assert finish(restarted) == result == toy.reference()

    ts = trials(reader)
    assert ts[killed.number].state == TrialState.FAIL
    retry = [t for t in ts if t.user_attrs['ratios'] == killed.user_attrs['ratios'] and t.state == TrialState.COMPLETE]
    assert len(retry) == 1 and retry[0].user_attrs['retry_of'] == [killed.number]
    assert retry[0].user_attrs['worker'].endswith(f':{b.pid}')
    scored = scored_candidates(result)
    assert complete_per_candidate(ts) == Counter({c: 1 for c in scored})  # every candidate scored once
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    # the killed evaluation was started again by B; every other one started once; the restarted worker
    # found the search complete and evaluated nothing
    starts, ends, pids = events(log)
    assert starts == Counter({c: 1 for c in scored}) + Counter({killed.user_attrs['ratios']: 1})
    assert ends == Counter({c: 1 for c in scored})
    assert pids == {a.pid, b.pid}


@pytest.mark.slow
def test_restarted_worker_rejoins_a_running_search(tmp_path):
    storage = f'sqlite:///{tmp_path}/study.db'
    reader = open_storage(storage, 1, 2)
    log = tmp_path / 'events.jsonl'
    options = ['--events', str(log), '--heartbeat-interval', '1', '--grace-period', '2']
    # B is slow (1 s per evaluation, about 20 evaluations): the search is still running when A comes back
    a, b, killed = kill_a_worker_mid_evaluation(storage, tmp_path, options, '1')
    restarted = start_worker(storage, tmp_path / 'a2.json', '--eval-seconds', '0.1', *options)
    wait_until(lambda: bool(of_worker(trials(reader), restarted.pid, TrialState.COMPLETE)), [b, restarted],
               'evaluation by the restarted worker')
    assert b.poll() is None  # the restarted worker evaluated while B was still searching
    assert finish(restarted) == finish(b) == toy.reference()

    ts = trials(reader)
    assert ts[killed.number].state == TrialState.FAIL
    retry = [t for t in ts if t.user_attrs['ratios'] == killed.user_attrs['ratios'] and t.state == TrialState.COMPLETE]
    assert len(retry) == 1 and retry[0].user_attrs['retry_of'] == [killed.number]
    scored = scored_candidates(toy.reference())
    assert complete_per_candidate(ts) == Counter({c: 1 for c in scored})  # nothing lost, nothing counted twice
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    starts, ends, pids = events(log)
    assert starts == Counter({c: 1 for c in scored}) + Counter({killed.user_attrs['ratios']: 1})
    assert ends == Counter({c: 1 for c in scored})
    assert pids == {a.pid, b.pid, restarted.pid}
    completed_by = Counter(t.user_attrs['worker'].rsplit(':', 1)[1] for t in ts if t.state == TrialState.COMPLETE)
    assert completed_by[str(b.pid)] >= 1 and completed_by[str(restarted.pid)] >= 1


def test_study_of_another_search_is_refused(tmp_path):
    storage = f'sqlite:///{tmp_path}/study.db'
    assert SharedStudy(storage, 'toy', 1, 2).join(toy.fingerprint(0), toy.TOY_TABLE) == toy.TOY_TABLE
    other_table = dict(toy.TOY_TABLE, remainder_ms=5.0)
    with pytest.raises(StateMismatchError) as err:
        SharedStudy(storage, 'toy', 1, 2).join(dict(toy.fingerprint(0), budget_fraction=0.5), other_table)
    message = str(err.value)
    assert "study 'toy' was made by a different search" in message
    assert 'budget_fraction: 0.6 in the study, 0.5 now' in message and 'objective' not in message
    assert '--study-name' in message and 'optuna delete-study' in message
    with pytest.raises(StateMismatchError, match=r"search: \{.*'seed': 0\} in the study, \{.*'seed': 1\} now"):
        SharedStudy(storage, 'toy', 1, 2).join(toy.fingerprint(1), toy.TOY_TABLE)
    # the same search joins, and predicts with the study's latency table, not its own
    assert SharedStudy(storage, 'toy', 1, 2).join(toy.fingerprint(0), other_table) == toy.TOY_TABLE
    # another study in the same storage is another search
    assert SharedStudy(storage, 'toy-b', 1, 2).join(dict(toy.fingerprint(0), budget_fraction=0.5),
                                                    other_table) == other_table


@pytest.mark.parametrize('url', ['study.db', 'sqlite://study.db', 'sqlite:///', 'sqlite:///:memory:',
                                 'redis://localhost:6379', 'journal://', 'file:///tmp/study.log'])
def test_unsupported_storage_is_refused(url):
    with pytest.raises(ValueError) as err:
        storage_kind(url)
    message = str(err.value)
    assert f'unsupported --storage {url!r}' in message
    for form in ('sqlite:///PATH.db', 'postgresql://', 'mysql://', 'journal://PATH.log'):
        assert form in message


def test_storage_forms():
    assert storage_kind('sqlite:///work_dirs/search.db') == 'sqlite'
    assert storage_kind('sqlite:////abs/search.db') == 'sqlite'
    assert storage_kind('postgresql+psycopg2://user:secret@db.example:5432/search') == 'postgresql'
    assert storage_kind('mysql://user:secret@db.example/search') == 'mysql'
    assert storage_kind('journal:///nfs/search.log') == 'journal'
    with pytest.raises(ValueError, match='must exceed heartbeat_interval'):
        SharedStudy('sqlite:///unused.db', 'toy', heartbeat_interval=5, grace_period=5)


# ----------------------------------------------------------------------------------------------------
# tools/search.py --storage on the small synthetic nuScenes (helpers as in tests/test_search_tool.py)

SMALL_SEARCH = ['--population', '2', '--parents', '2', '--generations', '1', '--mutation-prob', '0.5',
                '--ratio-choices', '0.0', '0.4', '0.8', '--table-repeats', '1', '--check-samples', '0',
                '--check-repeats', '1', '--final-repeats', '1', '--uniform-ratios']



@pytest.fixture
def checkpoint(search_checkpoint: Path) -> Path:
    return search_checkpoint


@pytest.fixture(scope='module')
def tool():
    return load_tool('search')



def test_search_cli_storage_arguments(tool, checkpoint, capsys):
    base = [str(DEMO_CONFIG), str(checkpoint), '--latency-ratio', '0.5']
    with pytest.raises(SystemExit):
        tool.parse_args([*base, '--storage', 'sqlite:///x.db'])
    assert '--storage and --study-name go together' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([*base, '--storage', 'redis://host', '--study-name', 's'])
    assert "unsupported --storage 'redis://host'; accepted forms: sqlite:///PATH.db" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([*base, '--storage', 'sqlite:///x.db', '--study-name', 's', '--grace-period', '10',
                         '--heartbeat-interval', '10'])
    assert 'need 0 < --heartbeat-interval < --grace-period' in capsys.readouterr().err


@pytest.mark.slow
def test_search_tool_with_storage(tool, synthetic_nuscenes, checkpoint, tmp_path):
    storage = f'sqlite:///{tmp_path}/search.db'
    work = tmp_path / 'search'

    def run(*extra: str) -> dict:
        args = tool.parse_args([str(DEMO_CONFIG), str(checkpoint), *SMALL_SEARCH, '--work-dir', str(work),
                                '--storage', storage, '--study-name', 'demo', '--heartbeat-interval', '1',
                                '--grace-period', '60', *extra])
        return tool.run_search(small_search_cfg(synthetic_nuscenes, tmp_path), str(checkpoint), args)

    best = run('--latency-budget-ms', '1e6', '--proxy-samples', '3', '--rescore-top', '1')
    assert best['study'] == 'demo' and best['meets_budget'] is True
    history = json.loads((work / 'search_history.json').read_text())
    assert len(history['evolution']) == len(history['random']) == best['evolution']['evaluations'] == 2
    # the state lives in the study, not in the work dir's files
    assert not [p.name for p in work.iterdir() if p.name.endswith('_state.json') or p.name.startswith('scores_')]
    ts = trials(open_storage(storage, 1, 60), 'demo')
    assert all(t.state == TrialState.COMPLETE for t in ts)
    by_set = Counter(t.user_attrs['scored_on'] for t in ts)
    proxy = {json.dumps(e['ratios']) for e in history['evolution'] + history['random']}
    assert by_set['proxy'] == len(proxy)  # each searched candidate scored once on the proxy set
    full = {t.user_attrs['ratios']: t.value for t in ts if t.user_attrs['scored_on'] == 'full'}
    assert by_set['full'] == len(full) == len(history['full_split'])  # re-scored finalists and uniform 0.0
    assert best['score'] == full[json.dumps(best['group_ratios'])]
    assert best['uniform']['score'] == full[json.dumps([[0.0]] * 2 + [[0.0] * 3] + [[0.0]])]
    table = json.loads((work / 'latency_table.json').read_text())
    assert optuna.load_study(study_name='demo', storage=storage).user_attrs['latency_table'] == table

    # run again: everything is found in the study, nothing is scored twice
    assert run('--latency-budget-ms', '1e6', '--proxy-samples', '3', '--rescore-top', '1')['group_ratios'] == \
        best['group_ratios']
    assert len(trials(open_storage(storage, 1, 60), 'demo')) == len(ts)
    # another budget: refused, naming the field
    with pytest.raises(StateMismatchError, match=r"budget: \{'latency_ratio': None, 'latency_budget_ms': 1000000\.0\} "
                                                 r"in the study, \{'latency_ratio': 0\.5, 'latency_budget_ms': None\}"):
        run('--latency-ratio', '0.5', '--proxy-samples', '3')
