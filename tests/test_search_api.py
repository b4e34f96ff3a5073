"""The search as a library (``projects.sparsevit_bevdet.search.run_search``): options checked with errors naming
the option as the caller spells it, tools/search.py's defaults are the library's, and one prebuilt runner
searched twice with a shared, calibrated latency table whose dense prediction is the measured dense encoder."""
from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from projects.sparsevit_bevdet.search import (
    SearchError,
    SearchOptions,
    SearchReport,
    build_search_runner,
    cli_flag,
    run_search,
)
from projects.sparsevit_bevdet.testing.configs import DEMO_CONFIG, small_search_cfg
from projects.sparsevit_bevdet.utils.tool_loader import load_tool


def test_options_checked_with_the_callers_spelling():
    options = SearchOptions(latency_ratio=0.5, seed=4).checked()
    assert options.random_seed == 5 and options.uniform_ratios == [0.2, 0.4, 0.6, 0.8]
    assert SearchOptions(latency_budget_ms=3.0, ratio_choices=(0.0, 0.4)).checked().uniform_ratios == [0.4]
    with pytest.raises(SearchError) as err:
        SearchOptions(latency_ratio=float('nan')).checked()
    assert str(err.value) == 'latency_ratio must be a finite number > 0, got nan'
    assert err.value.message(cli_flag) == '--latency-ratio must be a finite number > 0, got nan'
    for options, message in [
        (SearchOptions(), 'give one of latency_ratio and latency_budget_ms'),
        (SearchOptions(latency_ratio=0.5, latency_budget_ms=3.0), 'give one of latency_ratio and latency_budget_ms'),
        (SearchOptions(latency_ratio=0.5, ratio_choices=(0.0, 0.5), uniform_ratios=(0.3,)),
         'uniform_ratios [0.3] are not among ratio_choices [0.0, 0.5]'),
        (SearchOptions(latency_ratio=0.5, calibration_repeats=0), 'calibration_repeats must be >= 1, got 0'),
        (SearchOptions(latency_ratio=0.5, storage='sqlite:///x.db'), 'storage and study_name go together'),
    ]:
        with pytest.raises(SearchError, match=re.escape(message)):
            options.checked()


def test_tool_defaults_are_the_library_defaults(search_checkpoint, capsys):
    tool = load_tool('search')
    args = tool.parse_args([str(DEMO_CONFIG), str(search_checkpoint), '--latency-ratio', '0.5'])
    assert SearchOptions.from_namespace(args).to_json() == SearchOptions(latency_ratio=0.5).checked().to_json()
    # the defaults --help names in brackets are SearchOptions'
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split('options:', 1)[1].split())
    defaults = SearchOptions()
    named = 0
    for f in fields(SearchOptions):
        if not isinstance(getattr(defaults, f.name), (int, float)) or isinstance(getattr(defaults, f.name), bool):
            continue
        match = re.search(rf'{cli_flag(f.name)} {f.name.upper()} [^\[]*\[([^\]]+)\]', text)
        if match is not None:
            named += 1
            assert float(match.group(1)) == getattr(defaults, f.name), f.name
    assert named >= 10


@pytest.mark.slow
def test_one_runner_searched_twice_with_a_shared_calibrated_table(synthetic_nuscenes, search_checkpoint, tmp_path):
    cfg = small_search_cfg(synthetic_nuscenes, tmp_path)
    runner = build_search_runner(cfg, str(search_checkpoint), tmp_path / 'runner')
    table_file = tmp_path / 'latency_table.json'
    options = SearchOptions(latency_ratio=3.0, population=2, parents=2, generations=1, ratio_choices=(0.0, 0.4, 0.8),
                            uniform_ratios=(), table_repeats=1, calibration_repeats=1, check_samples=0,
                            final_repeats=1, work_dir=tmp_path / 'a', latency_table=table_file)
    first = run_search(cfg, search_checkpoint, options, runner=runner)
    assert isinstance(first, SearchReport) and first.best_json == tmp_path / 'a' / 'best.json'
    assert json.loads(first.best_json.read_text()) == first.record
    assert len(first.evolution.history) == len(first.random.history) == first.record['evolution']['evaluations']
    assert first.full_scores[tuple(tuple(s) for s in first.record['group_ratios'])] == first.record['score']

    # the relative budget is a fraction of the calibrated dense prediction, which is the measured dense encoder
    saved = json.loads(table_file.read_text())
    calibration = saved['calibration']
    assert calibration['ratios'] == [0.0, 0.4, 0.8] and calibration['key'] == saved['key']
    budget = first.record['budget']
    assert budget['dense_predicted_ms'] == pytest.approx(calibration['measured_ms'][0])
    assert budget['dense_uncalibrated_ms'] == pytest.approx(calibration['predicted_ms'][0])
    assert first.record['latency_budget_ms'] == pytest.approx(3.0 * budget['dense_predicted_ms'])
    assert first.record['latency_table']['calibration']['measured_ms'] == calibration['measured_ms']
    state = json.loads((tmp_path / 'a' / 'search_state.json').read_text())
    assert state['fingerprint']['latency_calibration'] == first.table.calibration.sha256()[:16]

    # the same runner, another seed and work dir: the table (and its calibration) is reused, not measured again
    second = run_search(cfg, search_checkpoint, replace(options, seed=1, work_dir=tmp_path / 'b'), runner=runner)
    assert second.table == first.table and json.loads(table_file.read_text()) == saved
    assert second.record['random']['seed'] == 2 and (tmp_path / 'b' / 'best.json').is_file()
    assert not (tmp_path / 'b' / 'latency_table.json').exists()

    # a runner built for other weights is refused before any work
    other = tmp_path / 'other.pth'
    other.write_bytes(Path(search_checkpoint).read_bytes())
    with pytest.raises(SearchError, match='the runner was built for checkpoint'):
        run_search(cfg, other, replace(options, work_dir=tmp_path / 'c'), runner=runner)
    assert not (tmp_path / 'c').exists()
