"""Safe (weights_only) checkpoint loading on torch >= 2.6: runner checkpoints load through every
mmengine path, malicious pickles are refused without running, and explicit trust works."""
from __future__ import annotations

import argparse
import datetime
import functools
import http.server
import os
import pickletools
import random
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import Sequential
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import projects.sparsevit_bevdet  # noqa: F401  (installs safe loading, registers the toy modules)
from projects.sparsevit_bevdet.testing import ToyRegressor
from projects.sparsevit_bevdet.testing.scope import restored_default_scope
from projects.sparsevit_bevdet.utils import (
    TRUSTED_GLOBALS_ENV,
    CheckpointSecurityError,
    install_safe_checkpoint_loading,
    safe_checkpoint,
    trust_checkpoint_globals,
)


def toy_runner(work_dir: Path, name: str, max_iters: int = 1, **kwargs) -> Runner:
    """A runner on the registered toy task: one train iteration, validation, a checkpoint per iter."""
    dataloader = dict(batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                      collate_fn=dict(type='default_collate'),
                      dataset=dict(type='ToyRegressionDataset', num_samples=16))
    return Runner(
        model=dict(type='ToyRegressor'),
        work_dir=str(work_dir),
        experiment_name=name,
        default_scope='mmdet3d',
        train_dataloader=dataloader,
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False, milestones=[1]),
        val_dataloader=dataloader,
        val_cfg=dict(),
        val_evaluator=dict(type='ToyRegressionMetric'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        log_level='WARNING',
        **kwargs)


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by an mmengine Runner after one training iteration."""
    work_dir = tmp_path_factory.mktemp('runner')
    with restored_default_scope():
        toy_runner(work_dir, 'safe-ckpt-source').train()
    checkpoint = work_dir / 'iter_1.pth'
    assert checkpoint.is_file()
    return checkpoint


def pickle_globals(checkpoint: Path) -> set[str]:
    """Every GLOBAL opcode in a torch.save zip checkpoint (static, nothing is unpickled)."""
    with zipfile.ZipFile(checkpoint) as archive:
        name = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
        data = archive.read(name)
    return {arg.replace(' ', '.') for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL'}


def state_dicts_equal(module: torch.nn.Module, state_dict: dict) -> bool:
    own = module.state_dict()
    return own.keys() == state_dict.keys() and all(torch.equal(own[k], state_dict[k]) for k in own)


class RunsCommand:
    """Unpickling this runs ``os.system(command)`` under a plain ``pickle.load``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class ExecsCode:
    """Unpickling this runs ``exec(code)``: builtins is not one of torch's blocked modules."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture
def restore_trust(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo process-wide trust granted by a test."""
    before = torch.serialization.get_safe_globals()
    monkeypatch.setattr(safe_checkpoint, '_trusted', {})
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(before)


# --- (a) runner checkpoints load through every mmengine path -------------------------------------

def test_runner_checkpoint_exercises_the_allowlist(runner_checkpoint: Path) -> None:
    names = pickle_globals(runner_checkpoint)
    # What makes a plain weights_only load fail: numpy values and HistoryBuffer in the message hub.
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names
    assert {'numpy.core.multiarray._reconstruct', 'numpy.ndarray', 'numpy.dtype'} <= names
    assert '__builtin__.getattr' in names  # protocol 2 spells HistoryBuffer.min this way
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(runner_checkpoint)) == []


def test_install_is_idempotent_and_replaces_every_scheme() -> None:
    install_safe_checkpoint_loading()
    install_safe_checkpoint_loading()
    for prefix in ('', 'http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                   'openmmlab://', 'mmcls://', 'pavi://', r'(\S+\:)?s3://', r'(\S+\:)?petrel://'):
        assert CheckpointLoader._schemes[prefix].__module__ == safe_checkpoint.__name__, prefix
    allowed = [g for g in torch.serialization.get_safe_globals()
               if isinstance(g, tuple) and g[1] == 'builtins.getattr']
    assert len(allowed) == 1


def test_load_checkpoint_into_model(runner_checkpoint: Path) -> None:
    model = ToyRegressor()
    checkpoint = load_checkpoint(model, str(runner_checkpoint), map_location='cpu', strict=True)
    assert state_dicts_equal(model, checkpoint['state_dict'])
    assert checkpoint['meta']['iter'] == 1
    assert checkpoint['meta']['dataset_meta']['classes'] == ('target',)
    loss_history = checkpoint['message_hub']['log_scalars']['train/loss_mse']
    assert isinstance(loss_history, HistoryBuffer)
    assert loss_history.statistics('current') == loss_history.current()


def test_runner_load_from(runner_checkpoint: Path, tmp_path: Path) -> None:
    runner = toy_runner(tmp_path, 'safe-ckpt-load-from', load_from=str(runner_checkpoint))
    metrics = runner.val()
    expected = torch.load(runner_checkpoint, weights_only=True)['state_dict']
    assert state_dicts_equal(runner.model, expected)
    assert metrics['toy/mse'] >= 0


def test_runner_resume(runner_checkpoint: Path, tmp_path: Path) -> None:
    runner = toy_runner(tmp_path, 'safe-ckpt-resume', max_iters=2, load_from=str(runner_checkpoint),
                        resume=True)
    runner.train()
    assert runner.iter == 2
    # resumed at iteration 1: only the second iteration ran here
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == ['iter_2.pth']
    # the message hub came back from the checkpoint: one logged loss from before, one from now
    assert len(runner.message_hub.get_scalar('train/loss_mse').data[0]) == 2


def test_pretrained_init_cfg(runner_checkpoint: Path) -> None:
    expected = torch.load(runner_checkpoint, weights_only=True)['state_dict']
    model = ToyRegressor(init_cfg=dict(type='Pretrained', checkpoint=str(runner_checkpoint)))
    model.init_weights()
    assert state_dicts_equal(model, expected)
    # with a prefix, mmengine goes through _load_checkpoint_with_prefix
    net = Sequential(*ToyRegressor().net,
                     init_cfg=dict(type='Pretrained', checkpoint=str(runner_checkpoint), prefix='net.'))
    net.init_weights()
    assert state_dicts_equal(net, {k[len('net.'):]: v for k, v in expected.items()})


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder; torch hub downloads go to a temporary TORCH_HOME."""
    root = tmp_path / 'served'
    root.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', root
    server.shutdown()
    server.server_close()


def test_http_checkpoints_load_weights_only(http_root: tuple[str, Path], runner_checkpoint: Path,
                                            tmp_path: Path) -> None:
    url, root = http_root
    (root / 'good.pth').write_bytes(runner_checkpoint.read_bytes())
    checkpoint = _load_checkpoint(f'{url}/good.pth', map_location='cpu')
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss_mse'], HistoryBuffer)

    # mmengine's own http loader goes through torch.hub with weights_only=False and would run this
    marker = tmp_path / 'pwned-http'
    torch.save({'state_dict': {}, 'meta': RunsCommand(f'touch {marker}')}, root / 'evil.pth')
    with pytest.raises(CheckpointSecurityError, match=r'system') as error:
        _load_checkpoint(f'{url}/evil.pth', map_location='cpu')
    assert error.value.source == f'{url}/evil.pth'
    assert not marker.exists()


# --- (b) a pickle that would run a command is refused and the command does not run --------------

def test_command_in_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': ToyRegressor().state_dict(), 'meta': {'x': RunsCommand(f'touch {marker}')}},
               path)
    # even the override that switches torch's default to weights_only=False does not apply
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(CheckpointSecurityError) as error:
        load_checkpoint(ToyRegressor(), str(path))
    message = str(error.value)
    system = f'{os.system.__module__}.system'  # posix.system on Linux
    assert error.value.offending_globals == [system]
    assert system in message and str(path) in message and 'never be loaded' in message
    with pytest.raises(CheckpointSecurityError):
        ToyRegressor(init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    with pytest.raises(CheckpointSecurityError):
        toy_runner(tmp_path / 'run', 'safe-ckpt-evil', load_from=str(path)).val()
    assert not marker.exists()


def test_exec_in_pickle_is_refused_with_how_to_trust(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': ExecsCode(f'open({str(marker)!r}, "w").close()')}, path)
    with pytest.raises(CheckpointSecurityError) as error:
        _load_checkpoint(str(path))
    message = str(error.value)
    assert error.value.offending_globals == ['builtins.exec']
    assert "trust_checkpoint_globals(['builtins.exec'])" in message
    assert f'{TRUSTED_GLOBALS_ENV}=builtins.exec' in message and str(path) in message
    assert not marker.exists()


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path: Path) -> None:
    class FetchesInit:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'getattr.pth'
    torch.save({'meta': FetchesInit()}, path)
    with pytest.raises(CheckpointSecurityError, match="cannot be trusted wholesale"):
        _load_checkpoint(str(path))
    with pytest.raises(ValueError, match='restricted form'):
        trust_checkpoint_globals(['builtins.getattr'])
    with pytest.raises(ValueError, match='never unpickles'):
        trust_checkpoint_globals(['os.system'])
    with pytest.raises(ValueError, match='does not resolve'):
        trust_checkpoint_globals(['no_such_package.Thing'])


# --- (c) trusting a type explicitly ---------------------------------------------------------------

def test_trust_by_call(tmp_path: Path, restore_trust: None) -> None:
    path = tmp_path / 'namespace.pth'
    torch.save({'meta': {'args': argparse.Namespace(lr=0.1)}}, path)
    with pytest.raises(CheckpointSecurityError, match=r'argparse\.Namespace'):
        _load_checkpoint(str(path))
    assert trust_checkpoint_globals(['argparse.Namespace']) == ['argparse.Namespace']
    assert _load_checkpoint(str(path))['meta']['args'] == argparse.Namespace(lr=0.1)


def test_trust_by_environment_applies_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / 'date.pth'
    torch.save({'meta': {'day': datetime.date(2024, 2, 29)}}, path)
    with pytest.raises(CheckpointSecurityError, match=r'datetime\.date'):
        _load_checkpoint(str(path))
    monkeypatch.setenv(TRUSTED_GLOBALS_ENV, ' fractions.Fraction , datetime.date')
    assert _load_checkpoint(str(path))['meta']['day'] == datetime.date(2024, 2, 29)
    monkeypatch.delenv(TRUSTED_GLOBALS_ENV)
    with pytest.raises(CheckpointSecurityError):
        _load_checkpoint(str(path))


# --- (d) truncated or corrupt files ---------------------------------------------------------------

@pytest.mark.parametrize('damage', ['truncated', 'random bytes'])
def test_corrupt_checkpoint_names_the_file(runner_checkpoint: Path, tmp_path: Path, damage: str) -> None:
    data = runner_checkpoint.read_bytes()
    path = tmp_path / 'broken.pth'
    path.write_bytes(data[:len(data) // 2] if damage == 'truncated' else random.Random(0).randbytes(len(data)))
    for load in (lambda: load_checkpoint(ToyRegressor(), str(path)),
                 lambda: CheckpointLoader.load_checkpoint(str(path))):
        with pytest.raises(safe_checkpoint.CorruptCheckpointError) as error:
            load()
        assert f"'{path}': it is not a readable PyTorch checkpoint (truncated or corrupt" in str(error.value)
        assert error.value.__cause__ is not None  # torch's own error, for the details
        assert not isinstance(error.value, CheckpointSecurityError)


def test_other_load_errors_of_a_sound_file_pass_through(runner_checkpoint: Path) -> None:
    with pytest.raises(RuntimeError, match='no_such_device') as error:
        _load_checkpoint(str(runner_checkpoint), map_location='no_such_device')
    assert not isinstance(error.value, safe_checkpoint.CorruptCheckpointError)
