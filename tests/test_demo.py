"""``tools/demo.py --quick``: the whole main job (data -> dense -> adapt -> search -> evaluate -> outputs) for a
few iterations per stage on a tiny generated set, then a second run that reuses every finished stage."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from projects.sparsevit_bevdet.utils.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
ROWS = ('dense', 'dense_adapted', 'uniform', 'searched')
ROW_KEYS = {'config', 'checkpoint', 'pruning_ratios', 'mAP', 'NDS', 'encoder_ms', 'detector_ms'}


def run_demo(work_dir: Path) -> str:
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'demo.py'), '--quick', '--threads', '1',
                           '--timing-repeats', '1', '--work-dir', str(work_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f'demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return proc.stdout


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work_dir = tmp_path_factory.mktemp('demo')
    return work_dir, run_demo(work_dir)


def test_quick_demo_writes_the_summary_and_plots(demo: tuple[Path, str]) -> None:
    work_dir, out = demo
    summary = json.loads((work_dir / 'summary.json').read_text())
    assert set(summary) >= set(ROWS) and 'budget' in summary
    for name in ROWS:
        row = summary[name]
        assert set(row) >= ROW_KEYS, name
        assert 0.0 <= row['mAP'] <= 1.0 and 0.0 <= row['NDS'] <= 1.0
        assert row['encoder_ms'] > 0 and row['detector_ms'] > 0
        assert Path(row['checkpoint']).is_file()
        assert len(row['pruning_ratios']) == 4 and [len(s) for s in row['pruning_ratios']] == [2, 2, 6, 2]
    assert all(r == 0.0 for s in summary['dense']['pruning_ratios'] for r in s)
    assert summary['dense']['checkpoint'] != summary['searched']['checkpoint']  # dense vs adapted weights
    assert summary['dense_adapted']['checkpoint'] == summary['searched']['checkpoint']
    assert all(r == 0.0 for s in summary['dense_adapted']['pruning_ratios'] for r in s)
    best = json.loads((work_dir / 'search' / 'best.json').read_text())
    assert summary['searched']['pruning_ratios'] == best['pruning_ratios']
    for name in ('pareto.png', 'predictions.png', 'learning_curve.png'):
        assert (work_dir / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', name
    assert 'searched' in out and 'budget' in out
    assert set(summary['stage_seconds']) == {'data', 'pretrain', 'dense', 'adapt', 'search', 'evaluate'}
    for name in ROWS:  # every configuration's 90 % bootstrap interval over val scenes
        low, high = summary[name]['NDS_interval']
        assert low <= high and summary['bootstrap'][name]['NDS']['value'] == pytest.approx(summary[name]['NDS'])
    for pair in ('searched - dense', 'searched - uniform'):
        entry = summary['bootstrap'][pair]['NDS']
        assert entry['low'] <= entry['high'] and isinstance(entry['resolved'], bool), pair
    assert 'paired bootstrap' in out and 'searched - uniform' in out
    assert all(sec >= 0 for sec in summary['stage_seconds'].values()) and 'stage times:' in out


def test_second_run_reuses_every_stage(demo: tuple[Path, str]) -> None:
    work_dir, _ = demo
    before = (work_dir / 'dense' / 'iter_2.pth').stat().st_mtime_ns
    out = run_demo(work_dir)
    for stage in ('v1.0-trainval exists', 'finished pretrain training', 'finished dense training',
                  'finished adapt training', 'finished search', 'dense: reusing', 'dense_adapted: reusing',
                  'uniform: reusing', 'searched: reusing', 'bootstrap: reusing'):
        assert stage in out, stage
    assert (work_dir / 'dense' / 'iter_2.pth').stat().st_mtime_ns == before


@pytest.fixture(scope='module')
def demo_tool():
    return load_tool('demo')


def test_stage_of_another_configuration_is_moved_aside_not_reused(demo_tool, tmp_path: Path) -> None:
    stage = tmp_path / 'dense'
    key_a, key_b = demo_tool.stage_key('config A'), demo_tool.stage_key('config B')
    assert key_a != key_b and key_a == demo_tool.stage_key('config A')
    demo_tool.claim_stage_dir(stage, key_a)
    (stage / 'iter_450.pth').write_bytes(b'weights of A')
    demo_tool.claim_stage_dir(stage, key_a)  # same fingerprint: kept for reuse / resume
    assert (stage / 'iter_450.pth').read_bytes() == b'weights of A'
    demo_tool.claim_stage_dir(stage, key_b)  # the config changed: A's work must not pass for B's
    assert not (stage / 'iter_450.pth').exists()
    assert json.loads((stage / demo_tool.STAGE_FILE).read_text()) == {'key': key_b}
    stale = [p for p in tmp_path.iterdir() if p.name.startswith('dense.stale-')]
    assert len(stale) == 1 and (stale[0] / 'iter_450.pth').read_bytes() == b'weights of A'


def test_stage_without_fingerprint_is_not_trusted(demo_tool, tmp_path: Path) -> None:
    stage = tmp_path / 'adapt'
    stage.mkdir()
    (stage / 'iter_150.pth').write_bytes(b'from an older demo')
    demo_tool.claim_stage_dir(stage, demo_tool.stage_key('current'))
    assert not (stage / 'iter_150.pth').exists()
    assert len(list(tmp_path.glob('adapt.stale-*'))) == 1
