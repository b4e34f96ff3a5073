"""``tools/ablate.py``: the five ablations of issue 19 end to end in their ``--quick`` form (a few iterations on
tiny generated data), their outputs (table rows, JSON fields, the plot), reuse of cached rows and stages on a
rerun, the refusal of bad options, and the matched-latency helpers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from projects.sparsevit_bevdet.utils.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
PNG = b'\x89PNG\r\n\x1a\n'
QUICK = ['--quick', '--threads', '1', '--timing-repeats', '1']


@pytest.fixture(scope='module')
def ablate():
    return load_tool('ablate')


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work dir for the COCO ablations, so they share the dense / adapt stages as a user's runs do."""
    return tmp_path_factory.mktemp('ablate_coco')


def run(ablate, name: str, work_dir: Path, *extra: str) -> dict:
    result = ablate.main([name, *QUICK, '--work-dir', str(work_dir), *extra])
    out = work_dir / name
    assert json.loads((out / 'results.json').read_text()) == json.loads(json.dumps(result))
    assert (out / 'plot.png').read_bytes()[:8] == PNG
    table = (out / 'table.md').read_text()
    assert table.startswith(f'## {name}') and table.count('\n|') >= len(result['rows'])
    assert result['ablation'] == name and result['quick'] and result['machine']['threads'] == 1
    assert result['command'].startswith(f'tools/ablate.py {name}')
    return result


def check_latency_rows(result: dict, metrics: tuple[str, ...]) -> None:
    for row in result['rows']:
        assert row['encoder_ms'] > 0 and row['encoder_q1_ms'] <= row['encoder_q3_ms']
        assert Path(row['checkpoint']).is_file()
        for metric in metrics:
            assert -1.0 <= row[metric] <= 1.0, (row['config'], metric)
    assert result['rows'][0]['x_dense'] == pytest.approx(1.0)


def test_help_lists_the_five_ablations() -> None:
    out = subprocess.run([sys.executable, str(REPO / 'tools' / 'ablate.py'), '--help'], cwd=REPO,
                         capture_output=True, text=True, timeout=60).stdout
    for name in ('window-vs-token', 'resolution', 'width', 'uniform', 'search'):
        assert name in out
    sub = subprocess.run([sys.executable, str(REPO / 'tools' / 'ablate.py'), 'width', '--help'], cwd=REPO,
                         capture_output=True, text=True, timeout=60).stdout
    assert 'Default CPU budget' in sub and '--widths' in sub


@pytest.mark.parametrize('argv, message', [
    (['width', '--widths', '1.5'], '--widths must be in (0, 1)'),
    (['window-vs-token', '--ratios', '0'], '--ratios must be in (0, 1)'),
    (['search', '--seeds', '0'], '--seeds must be >= 1'),
    (['search', '--parents', '9', '--population', '4'], '--parents (9) must not exceed --population (4)'),
    (['uniform', '--demo-work-dir', 'x'], '--demo-work-dir is for --task nuscenes'),
    (['uniform', '--budgets', '4.5'], '--budgets must be in (0, 4.0]'),
    (['resolution', '--finetune-iters', '-1'], '--finetune-iters must be >= 0'),
    (['bogus'], 'invalid choice'),
])
def test_bad_options_are_refused_by_name(ablate, capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        ablate.parse_args(argv)
    assert message in capsys.readouterr().err


def test_interpolation_and_width_helpers(ablate) -> None:
    from projects.sparsevit_bevdet.engine.ablation import interpolate, markdown_table

    curve = [(10.0, 0.5), (6.0, 0.3), (8.0, 0.45)]
    assert interpolate(curve, 7.0) == pytest.approx(0.375)
    assert interpolate(curve, 10.0) == pytest.approx(0.5)
    assert interpolate(curve, 5.9) is None and interpolate(curve, 10.1) is None  # no extrapolation
    assert ablate.scaled_width(96, (3, 6, 12, 24), 0.6) == 57 and ablate.scaled_width(96, (3, 6, 12, 24), 0.4) == 39
    assert ablate.scaled_width(32, (1, 2, 4, 8), 0.01) == 1
    assert markdown_table(['a', 'b'], [[None, 0.123456]]).splitlines()[-1] == '| - | 0.1235 |'


def test_window_vs_token_quick_and_resume(ablate, coco_dir: Path) -> None:
    result = run(ablate, 'window-vs-token', coco_dir)
    methods = [r['method'] for r in result['rows']]
    assert methods == ['window (SparseViT)'] * 5 + ['token (DynamicTokenSwin)'] * 5
    assert [r['ratio'] for r in result['rows'][:5]] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert {r['model'] for r in result['rows']} == {'adapt', 'token'}
    check_latency_rows(result, ('coco/bbox_mAP',))
    assert result['metric'] == 'coco/bbox_mAP' and result['cache']['computed'] == 11  # 10 rows + 1 timing
    assert len(result['matched']) == 10 and all('reference_score' in m for m in result['matched'])
    for entry in result['matched']:  # the difference is the row's score minus the other curve's, where defined
        if entry['reference_score'] is not None:
            assert entry['delta'] == pytest.approx(entry['score'] - entry['reference_score'])
    assert 'interpolated' in ' '.join(result['notes'])
    for stage in ('dense', 'adapt', 'token'):
        assert (coco_dir / stage / 'iter_2.pth').is_file()
    import torch
    state = torch.load(coco_dir / 'token' / 'iter_2.pth', weights_only=True)['state_dict']
    assert any('predictor' in k for k in state) and state['backbone.patch_embed.projection.weight'].shape[0] == 96

    # a rerun reuses every row, the timing and the trained stages
    rows = sorted((coco_dir / 'rows').iterdir())
    stamps = [p.stat().st_mtime_ns for p in rows]
    again = run(ablate, 'window-vs-token', coco_dir)
    assert again['cache'] == dict(reused=11, computed=0)
    assert [p.stat().st_mtime_ns for p in rows] == stamps
    assert [r['encoder_ms'] for r in again['rows']] == [r['encoder_ms'] for r in result['rows']]


def test_resolution_quick(ablate, coco_dir: Path) -> None:
    result = run(ablate, 'resolution', coco_dir, '--ratios', '0.4', '0.8')
    configs = [r['config'] for r in result['rows']]
    assert configs == ['SparseViT (full input) r=0.0', 'SparseViT (full input) r=0.4', 'SparseViT (full input) r=0.8',
                       'dense x1.0 input', 'dense x0.875 input', 'dense x0.75 input']
    check_latency_rows(result, ('coco/bbox_mAP',))
    assert [m['config'] for m in result['matched']] == configs[3:]
    assert 'evaluated only' in result['notes'][0]
    # the SparseViT rows at ratio 0 / 0.4 / 0.8 are those window-vs-token scored, when it ran in this work dir
    assert result['cache']['reused'] >= (3 if (coco_dir / 'window-vs-token').is_dir() else 0)


@pytest.mark.slow
def test_width_quick(ablate, coco_dir: Path) -> None:
    import torch

    result = run(ablate, 'width', coco_dir, '--ratios', '0.6', '--widths', '0.6', '0.4')
    assert [r['config'] for r in result['rows']][2:] == ['dense x1.0 width', 'dense x0.6 width', 'dense x0.4 width']
    check_latency_rows(result, ('coco/bbox_mAP',))
    for scale, width in (('0.6', 57), ('0.4', 39)):
        state = torch.load(coco_dir / f'width-{scale}' / 'iter_2.pth', weights_only=True)['state_dict']
        assert state['backbone.patch_embed.projection.weight'].shape[0] == width
        assert state['neck.lateral_convs.3.conv.weight'].shape[1] == 8 * width


@pytest.mark.slow
def test_uniform_quick(ablate, coco_dir: Path) -> None:
    # a budget no configuration fits is skipped with a note; the feasible one still makes the comparison
    result = run(ablate, 'uniform', coco_dir, '--ratios', '0.4', '0.8', '--population', '2', '--parents', '1',
                 '--generations', '1', '--budgets', '0.05', '2.0')
    searched = [r for r in result['rows'] if r['method'] == 'searched (evolution)']
    assert len(searched) == 1 and searched[0]['budget'] == 2.0 and isinstance(searched[0]['meets_budget'], bool)
    assert any(note.startswith('Budget 0.05 x dense: no configuration') for note in result['notes'])
    assert [len(s) for s in searched[0]['pruning_ratios']] == [2, 2, 6, 2]
    check_latency_rows(result, ('coco/bbox_mAP',))
    assert (coco_dir / 'uniform' / 'search-2.0' / 'best.json').is_file()
    assert len(result['matched']) == 1


@pytest.mark.slow
def test_search_quick(ablate, coco_dir: Path) -> None:
    result = run(ablate, 'search', coco_dir, '--seeds', '2', '--population', '2', '--parents', '1',
                 '--generations', '2')
    assert [r['evaluations'] for r in result['rows']] == [2, 4]
    for row in result['rows']:
        for method in ('evolution', 'random'):
            assert row[f'{method}_min'] <= row[f'{method}_mean'] <= row[f'{method}_max']
    assert result['rows'][1]['evolution_mean'] >= result['rows'][0]['evolution_mean']  # best so far
    assert [f['seed'] for f in result['matched']] == [0, 1]
    again = run(ablate, 'search', coco_dir, '--seeds', '2', '--population', '2', '--parents', '1',
                '--generations', '2')
    assert again['cache']['computed'] == 0 and again['rows'] == result['rows']


@pytest.mark.slow
def test_nuscenes_quick_and_demo_checkpoints_reused(ablate, tmp_path: Path) -> None:
    first = tmp_path / 'first'
    result = run(ablate, 'window-vs-token', first, '--task', 'nuscenes', '--ratios', '0.6')
    assert result['metrics'] == ['NuScenes/NDS', 'NuScenes/mAP'] and len(result['rows']) == 4
    check_latency_rows(result, ('NuScenes/NDS', 'NuScenes/mAP'))
    # a second work dir takes the first one's finished dense / adapt stages as a demo's
    second = tmp_path / 'second'
    result = run(ablate, 'resolution', second, '--task', 'nuscenes', '--ratios', '0.6', '--scales', '0.75',
                 '--data-root', str(first / 'data'), '--demo-work-dir', str(first))
    assert {r['checkpoint'] for r in result['rows']} == {str(first / 'adapt' / 'iter_2.pth'),
                                                         str(first / 'dense' / 'iter_2.pth')}
    assert not (second / 'dense').exists() and not (second / 'adapt').exists()
    check_latency_rows(result, ('NuScenes/NDS', 'NuScenes/mAP'))
