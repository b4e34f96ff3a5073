"""tools/train.py and tools/test.py end to end on the registered toy config, plus their config
handling in-process."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from projects.sparsevit_bevdet.utils.entrypoint import (
    build_runner,
    enable_amp,
    enable_auto_scale_lr,
    init_scope,
    load_config,
    set_resume,
)
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'toy' / 'toy_regression.py'

# The editable install puts `projects` on every interpreter's path, which would hide a tool that
# forgot to add the repo root. Drop its import finder, then run the tool as a script.
WITHOUT_EDITABLE_INSTALL = (
    'import runpy, sys\n'
    "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
)
RUN_SCRIPT = WITHOUT_EDITABLE_INSTALL + "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"


def run_tool(tool: str, *args: object, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python tools/<tool> ARGS`` from ``cwd`` (outside the repo), without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        [sys.executable, '-c', RUN_SCRIPT, str(REPO / 'tools' / tool), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f'{tool} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return proc


def val_metrics(log: str) -> list[float]:
    """``toy/mse`` of every validation the log reports."""
    return [float(m) for m in re.findall(r'Iter\(val\).*?toy/mse: ([0-9.]+)', log)]


@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The toy config trained once by tools/train.py: (work dir, log output)."""
    cwd = tmp_path_factory.mktemp('cwd')
    work_dir = tmp_path_factory.mktemp('toy') / 'work'
    proc = run_tool('train.py', CONFIG, '--work-dir', work_dir, cwd=cwd)
    return work_dir, proc.stdout + proc.stderr


def test_plugin_is_not_importable_without_the_tools(tmp_path: Path) -> None:
    """Control for the runs below: outside the repo, only the tools' sys.path entry finds `projects`."""
    proc = subprocess.run([sys.executable, '-c', WITHOUT_EDITABLE_INSTALL + 'import projects.sparsevit_bevdet'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "No module named 'projects'" in proc.stderr


def test_train_runs_and_writes_checkpoints(trained: tuple[Path, str]) -> None:
    work_dir, log = trained
    assert 'Iter(train) [8/8]' in log
    assert len(val_metrics(log)) == 2  # val_interval=4
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_8.pth')
    checkpoint = torch.load(work_dir / 'iter_8.pth', weights_only=True)
    assert checkpoint['meta']['iter'] == 8
    assert set(checkpoint['state_dict']) >= {'net.0.weight', 'net.1.running_mean', 'net.3.bias'}


def test_test_evaluates_the_checkpoint(trained: tuple[Path, str], tmp_path: Path) -> None:
    work_dir, train_log = trained
    test_dir = tmp_path / 'test'
    proc = run_tool('test.py', CONFIG, work_dir / 'iter_8.pth', '--work-dir', test_dir, cwd=tmp_path)
    assert 'Loads checkpoint by safe_local backend' in proc.stdout
    printed = re.search(r'^test metrics: (\{.*\})$', proc.stdout, re.MULTILINE)
    assert printed, proc.stdout[-2000:]
    metrics = json.loads(printed.group(1))
    assert set(metrics) == {'toy/mse', 'toy/mae'}
    # test split == val split in this config: the same weights give the last validation's figure
    assert metrics['toy/mse'] == pytest.approx(val_metrics(train_log)[-1], abs=1e-4)
    # the runner also records it in <work_dir>/<timestamp>/<timestamp>.json
    records = [json.loads(line) for path in test_dir.glob('*/*.json') for line in path.read_text().splitlines()]
    assert records and records[-1]['toy/mse'] == pytest.approx(metrics['toy/mse'])


def test_resume_continues_from_the_last_checkpoint(trained: tuple[Path, str], tmp_path: Path) -> None:
    work_dir = tmp_path / 'work'
    shutil.copytree(trained[0], work_dir)
    proc = run_tool('train.py', CONFIG, '--work-dir', work_dir, '--resume',
                    '--cfg-options', 'train_cfg.max_iters=12', cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 8' in log
    assert 'Iter(train) [ 9/12]' in log and 'Iter(train) [ 1/12]' not in log
    assert torch.load(work_dir / 'iter_12.pth', weights_only=True)['meta']['iter'] == 12


def test_missing_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_tool('train').parse_args([str(tmp_path / 'nope.py')])
    assert exit_info.value.code == 2
    assert f'config file not found: {tmp_path / "nope.py"}' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_tool('train').parse_args([str(CONFIG), '--resume', str(tmp_path / 'nope.pth')])
    assert f'checkpoint to resume from not found: {tmp_path / "nope.pth"}' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_tool('test').parse_args([str(CONFIG), str(tmp_path / 'nope.pth')])
    assert f'checkpoint not found: {tmp_path / "nope.pth"}' in capsys.readouterr().err
    # URLs and mmengine schemes are left to the checkpoint loaders
    assert load_tool('test').parse_args([str(CONFIG), 'https://host/model.pth']).checkpoint


# --- config handling, in-process ------------------------------------------------------------------

def test_work_dir_priority(tmp_path: Path) -> None:
    assert load_config(str(CONFIG), None, 'none', str(tmp_path)).work_dir == str(tmp_path)
    from_cfg = load_config(str(CONFIG), {'work_dir': 'from_cfg'}, 'none', None)
    assert from_cfg.work_dir == 'from_cfg'
    assert load_config(str(CONFIG), None, 'none', None).work_dir == './work_dirs/toy_regression'


def test_training_switches() -> None:
    cfg = load_config(str(CONFIG), {'train_cfg.max_iters': 3}, 'pytorch', None)
    assert cfg.train_cfg.max_iters == 3 and cfg.launcher == 'pytorch'
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ValueError, match='auto_scale_lr'):
        enable_auto_scale_lr(Config(dict(optim_wrapper=dict())))
    set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    set_resume(cfg, 'some/iter_4.pth')
    assert cfg.resume is True and cfg.load_from == 'some/iter_4.pth'


def test_resume_without_value_means_auto() -> None:
    train = load_tool('train')
    assert train.parse_args([str(CONFIG), '--resume']).resume == 'auto'
    args = train.parse_args([str(CONFIG), '--local-rank', '3', '--auto-scale-lr', '--amp'])
    assert args.local_rank == 3 and args.resume is None and args.auto_scale_lr and args.amp


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmdet3d'])
def test_visualization_switches_follow_the_scope(scope: str) -> None:
    test = load_tool('test')
    cfg = Config(dict(default_scope=scope, default_hooks=dict(visualization=dict(type='X')),
                      visualizer=dict(type='V')))
    args = argparse.Namespace(show=True, show_dir='vis', wait_time=0.5, score_thr=0.3, task='multi-view_det')
    test.trigger_visualization_hook(cfg, args)
    hook = cfg.default_hooks.visualization
    assert hook.draw and hook.show and hook.wait_time == 0.5
    if scope == 'mmseg':
        assert cfg.visualizer.save_dir == 'vis' and 'test_out_dir' not in hook
    else:
        assert hook.test_out_dir == 'vis' and hook.score_thr == 0.3
        assert hook.get('vis_task') == ('multi-view_det' if scope == 'mmdet3d' else None)
    with pytest.raises(RuntimeError, match='VisualizationHook'):
        test.trigger_visualization_hook(Config(dict(default_hooks=dict())), args)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_other_scopes_build_and_train(scope: str, tmp_path: Path) -> None:
    """A config whose default_scope is mmdet or mmseg runs in that scope's registries."""
    cfg = load_config(str(CONFIG), {
        'default_scope': scope,
        'experiment_name': f'toy-{scope}',
        'log_level': 'WARNING',
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        # the toy modules live in mmdet3d's registries: name them with their scope
        'model.type': 'mmdet3d.ToyRegressor',
        'train_dataloader.dataset.type': 'mmdet3d.ToyRegressionDataset',
        'val_dataloader.dataset.type': 'mmdet3d.ToyRegressionDataset',
        'test_dataloader.dataset.type': 'mmdet3d.ToyRegressionDataset',
        'val_evaluator.type': 'mmdet3d.ToyRegressionMetric',
        'test_evaluator.type': 'mmdet3d.ToyRegressionMetric',
    }, 'none', str(tmp_path))
    init_scope(cfg)
    assert DefaultScope.get_current_instance().scope_name == scope
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 1 and (tmp_path / 'iter_1.pth').is_file()
    with pytest.raises(ImportError, match="default_scope 'mmnothing'"):
        init_scope(Config(dict(default_scope='mmnothing')))


def test_mmdet3d_own_tools_run_the_same_config(trained: tuple[Path, str], tmp_path: Path) -> None:
    """mmdet3d's tools/train.py and tools/test.py (shipped in its wheel) with the repo on PYTHONPATH."""
    import mmdet3d

    tools = Path(mmdet3d.__file__).parent / '.mim' / 'tools'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    work_dir = tmp_path / 'work'
    for args in ([tools / 'train.py', CONFIG, '--work-dir', work_dir],
                 [tools / 'test.py', CONFIG, work_dir / 'iter_8.pth', '--work-dir', work_dir]):
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'Loads checkpoint by safe_local backend' in log  # the plugin's loader, via custom_imports
    tested = float(re.findall(r'Iter\(test\).*?toy/mse: ([0-9.]+)', log)[-1])
    assert tested == pytest.approx(val_metrics(trained[1])[-1], abs=1e-4)


def test_runs_in_one_process_keep_their_own_visualizer(tmp_path: Path) -> None:
    """mmdet's and mmseg's runtimes name the visualizer 'visualizer'; a second run in the process (make demo,
    tools/ablate.py) must still write its scalars into its own work dir, not the first run's."""
    work_dirs = [tmp_path / 'first', tmp_path / 'second']
    for i, work_dir in enumerate(work_dirs):
        cfg = load_config(str(CONFIG), {'experiment_name': f'toy-vis-{i}', 'log_level': 'WARNING',
                                        'train_cfg.max_iters': 1, 'train_cfg.val_interval': 1,
                                        'visualizer': dict(type='Visualizer', name='visualizer',
                                                           vis_backends=[dict(type='LocalVisBackend')])},
                          'none', str(work_dir))
        init_scope(cfg)
        build_runner(cfg).train()
    for work_dir in work_dirs:
        assert list(work_dir.glob('*/vis_data/scalars.json')), f'no scalars in {work_dir}'


def test_train_stops_on_a_nonfinite_loss_before_saving_its_weights(tmp_path: Path) -> None:
    """A diverging run fails with the iteration and the loss terms named, not silently on NaN weights."""
    work_dir = tmp_path / 'work'
    proc = run_tool('train.py', CONFIG, '--work-dir', work_dir, '--cfg-options', 'optim_wrapper.optimizer.lr=1e20',
                    cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert 'NonFiniteLossError' in proc.stderr and 'consecutive iterations' in proc.stderr
    failed_at = int(re.search(r'up to iteration (\d+) of 8', proc.stderr).group(1))
    assert failed_at < 8
    # no checkpoint of an iteration at or after the failure holds the broken weights
    assert all(int(p.stem.split('_')[1]) < failed_at for p in work_dir.glob('iter_*.pth'))
