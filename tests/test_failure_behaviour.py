"""Issue 18: nothing runs on the wrong weights, nothing is left half-done, every bad file gets a clear error.

Every bad file is made here by the test; the tools run on the toy config or the small synthetic nuScenes."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from projects.sparsevit_bevdet.search import EvolutionarySearch, ScoreStore
from projects.sparsevit_bevdet.search.state import StateFormatError
from projects.sparsevit_bevdet.testing.configs import DEMO_CONFIG, small_search_cfg
from projects.sparsevit_bevdet.utils.checkpoint_fit import CheckpointMismatchError
from projects.sparsevit_bevdet.utils.run_checkpoints import (
    AtomicLocalBackend,
    prepare_training_run,
    training_finished,
)
from projects.sparsevit_bevdet.utils.searched_ratios import read_pruning_ratios
from projects.sparsevit_bevdet.utils.tool_loader import load_tool
from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock, WorkDirLockedError

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / 'configs' / 'toy' / 'toy_regression.py'


# ----------------------------------------------------------------------------------------------------
# 1. wrong weights are refused


def toy_state_dict(hidden: int = 16) -> dict:
    from mmdet3d.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return MODELS.build(dict(type='ToyRegressor', in_channels=4, hidden_channels=hidden)).state_dict()


@pytest.fixture
def toy_checkpoints(tmp_path: Path) -> SimpleNamespace:
    good = toy_state_dict()
    files = dict(
        good=good,
        other_shape=toy_state_dict(hidden=8),
        prefixed={f'model.{k}': v for k, v in good.items()},
        other_model={'encoder.conv.weight': torch.zeros(3, 3), 'head.fc.bias': torch.zeros(2)},
    )
    for name, state in files.items():
        torch.save({'state_dict': state, 'meta': {}}, tmp_path / f'{name}.pth')
    return SimpleNamespace(**{name: tmp_path / f'{name}.pth' for name in files})


def run_test_tool(checkpoint: Path, work_dir: Path, *extra: str) -> dict:
    return load_tool('test').main([str(TOY_CONFIG), str(checkpoint), '--work-dir', str(work_dir), *extra])


@pytest.mark.parametrize('case, expected', [
    ('other_shape', ['7 with another shape', 'net.0.weight [8, 4] vs model [16, 4]']),
    ('prefixed', ['8 of the model\'s 8 keys missing', '9 of its 9 keys unexpected', "extra prefix 'model.'"]),
    ('other_model', ['8 of the model\'s 8 keys missing', '2 of its 2 keys unexpected', 'None of its weights']),
])
def test_test_tool_refuses_weights_that_do_not_fit(toy_checkpoints, tmp_path, case, expected):
    checkpoint = getattr(toy_checkpoints, case)
    with pytest.raises(CheckpointMismatchError) as err:
        run_test_tool(checkpoint, tmp_path / 'work')
    message = str(err.value)
    assert str(checkpoint) in message and '--allow-partial-load' in message
    for part in expected:
        assert part in message
    # nothing was evaluated: no metrics were logged
    logs = list((tmp_path / 'work').rglob('*.log'))
    assert not any('toy/mse' in log.read_text() for log in logs)


def test_test_tool_partial_load_is_explicit_and_good_weights_load(toy_checkpoints, tmp_path):
    assert 'toy/mse' in run_test_tool(toy_checkpoints.good, tmp_path / 'good')
    assert 'toy/mse' in run_test_tool(toy_checkpoints.other_shape, tmp_path / 'partial', '--allow-partial-load')


def test_search_refuses_weights_that_do_not_fit_before_any_work(synthetic_nuscenes, search_checkpoint, tmp_path):
    state = torch.load(search_checkpoint, weights_only=True)['state_dict']
    qkv = next(k for k in state if k.endswith('qkv.weight'))
    state[qkv] = torch.zeros(state[qkv].shape[0] + 3, state[qkv].shape[1])
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, bad)
    tool = load_tool('search')
    work = tmp_path / 'search'
    args = tool.parse_args([str(DEMO_CONFIG), str(bad), '--latency-ratio', '0.5', '--work-dir', str(work)])
    with pytest.raises(CheckpointMismatchError, match=f'1 with another shape \\({qkv}'):
        tool.run_search(small_search_cfg(synthetic_nuscenes, tmp_path), str(bad), args)
    assert not (work / 'latency_table.json').exists() and not (work / 'best.json').exists()


# ----------------------------------------------------------------------------------------------------
# options that cannot be right are refused before any work


@pytest.mark.parametrize('option, value', [('--latency-ratio', 'nan'), ('--latency-ratio', 'inf'),
                                           ('--latency-budget-ms', '-3'), ('--latency-budget-ms', 'nan')])
def test_search_refuses_budgets_that_cannot_be_right(search_checkpoint, capsys, option, value):
    with pytest.raises(SystemExit):
        load_tool('search').parse_args([str(DEMO_CONFIG), str(search_checkpoint), option, value])
    assert f'{option} must be a finite number > 0, got {float(value)}' in capsys.readouterr().err


def test_search_refuses_a_metric_the_evaluator_does_not_produce(synthetic_nuscenes, search_checkpoint, tmp_path):
    tool = load_tool('search')
    work = tmp_path / 'search'
    args = tool.parse_args([str(DEMO_CONFIG), str(search_checkpoint), '--latency-ratio', '0.5', '--work-dir', str(work),
                            '--metric', 'NuScenes/NSD'])
    with pytest.raises(SystemExit) as err:
        tool.run_search(small_search_cfg(synthetic_nuscenes, tmp_path), str(search_checkpoint), args)
    assert "--metric 'NuScenes/NSD' is not a key the evaluator produces" in str(err.value)
    assert "'NuScenes/NDS'" in str(err.value)
    # refused before the latency table was profiled or any state written
    assert not [p.name for p in work.iterdir() if p.suffix == '.json']


def test_a_state_without_evaluations_does_not_refuse_the_corrected_command(tmp_path):
    from projects.sparsevit_bevdet.testing.shared_search_worker import CHOICES, SPACE, TOY_TABLE, toy_latency, toy_score

    state = tmp_path / 'search_state.json'

    def run(metric: str, score=toy_score) -> EvolutionarySearch:
        return EvolutionarySearch(SPACE, score, lambda c: toy_latency(TOY_TABLE, c), 100.0, CHOICES,
                                  population_size=2, num_parents=1, generations=1, state_file=state,
                                  fingerprint=dict(metric=metric))

    def fails(candidate):
        raise KeyError('metric not among the evaluator results')

    with pytest.raises(KeyError):
        run('wrong', fails).run(log=lambda m: None)
    assert json.loads(state.read_text())['evaluations'] == []  # the population was saved, nothing scored
    messages: list[str] = []
    result = run('right').run(log=messages.append)
    assert result.best is not None
    assert any('holds no evaluation: starting afresh' in m for m in messages)


# ----------------------------------------------------------------------------------------------------
# search state, score and ratio files of the wrong shape


@pytest.mark.parametrize('content, named', [
    ({'fingerprint': {}, 'scores': [{'ratios': 'x', 'score': 1.0}]}, "field 'scores'[0].ratios is \"x\""),
    ({'fingerprint': {}, 'scores': [{'ratios': [[0.1]]}]}, "field 'scores'[0] has no field 'score'"),
    ({'fingerprint': {}, 'scores': {}}, "field 'scores' is {}, expected a list"),
    ([1, 2], 'the file is [1, 2], expected an object'),
])
def test_score_file_of_the_wrong_shape_names_the_field(tmp_path, content, named):
    path = tmp_path / 'scores_full.json'
    path.write_text(json.dumps(content))
    with pytest.raises(StateFormatError) as err:
        ScoreStore(path, lambda c: 0.0, {})
    assert str(path) in str(err.value) and named in str(err.value)


def test_search_state_of_the_wrong_shape_names_the_field(tmp_path):
    from projects.sparsevit_bevdet.testing.shared_search_worker import CHOICES, SPACE

    path = tmp_path / 'search_state.json'
    path.write_text(json.dumps(dict(fingerprint={}, generation='one', evaluations=[], latencies=[], rng={},
                                    population=[])))
    search = EvolutionarySearch(SPACE, lambda c: 0.0, lambda c: 0.0, 1.0, CHOICES, state_file=path)
    with pytest.raises(StateFormatError, match="field 'generation' is \"one\", expected an integer"):
        search.run(log=lambda m: None)


@pytest.mark.parametrize('text, named', [
    ('{"pruning_ratios": [[0.1, 0.2], [0.', 'not valid JSON'),
    ('{"pruning_ratios": [[0.1, "a"], [0.0]]}', "field 'pruning_ratios': stage 0 is [0.1, \"a\"]"),
    ('{"pruning_ratios": {"a": 1}}', 'is neither a number nor a non-empty list of stages'),
    ('{"score": 1}', "no 'pruning_ratios' key"),
    ('', 'not valid JSON'),
])
def test_pruning_ratio_files_truncated_or_malformed(tmp_path, text, named):
    path = tmp_path / 'best.json'
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_pruning_ratios(str(path))
    assert str(path) in str(err.value) and named in str(err.value)
    assert read_pruning_ratios('[[0.1, 0.2], [0.3]]') == [[0.1, 0.2], [0.3]]


# ----------------------------------------------------------------------------------------------------
# weight files for tools/convert_swin_weights.py


@pytest.mark.parametrize('content, named', [
    (b'', 'is empty (0 bytes)'),
    (b'not a checkpoint at all', 'not a readable PyTorch checkpoint'),
    ('truncated', 'not a readable PyTorch checkpoint'),
])
def test_convert_swin_weights_refuses_empty_or_corrupt_files(tmp_path, content, named):
    src = tmp_path / 'swin.pth'
    if content == 'truncated':
        torch.save({'model': {'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4)}}, src)
        src.write_bytes(src.read_bytes()[:200])
    else:
        src.write_bytes(content)
    with pytest.raises(SystemExit) as err:
        load_tool('convert_swin_weights').main([str(src), str(tmp_path / 'out.pth'), '--format', 'official'])
    assert str(src) in str(err.value) and named in str(err.value)
    assert not (tmp_path / 'out.pth').exists()


# ----------------------------------------------------------------------------------------------------
# nuScenes tables, images and point files


def first_record(root: Path, table: str, version: str = 'v1.0-mini') -> tuple[Path, list]:
    path = root / version / f'{table}.json'
    return path, json.loads(path.read_text())


@pytest.mark.parametrize('table, field, value, named', [
    ('sample_annotation', 'size', None, 'has no field "size" (expected a list of 3 numbers)'),
    ('sample_annotation', 'translation', [1.0, 2.0], 'field "translation" is [1.0, 2.0], expected a list of 3 numbers'),
    ('ego_pose', 'rotation', None, 'has no field "rotation"'),
    ('sample_data', 'filename', 7, 'field "filename" is 7, expected a string'),
])
def test_table_record_lacking_a_field_names_table_record_and_field(nuscenes_copy, table, field, value, named):
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import load_nuscenes

    path, records = first_record(nuscenes_copy, table)
    if value is None:
        del records[0][field]
    else:
        records[0][field] = value
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError) as err:
        load_nuscenes(nuscenes_copy, 'v1.0-mini')
    assert f'{path}: record {records[0]["token"]}' in str(err.value) and named in str(err.value)


def key_frame_file(root: Path, channel: str, scene: str = 'scene-0103') -> Path:
    """A key-frame file of ``channel`` in a val scene of the synthetic set."""
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import load_nuscenes

    nusc = load_nuscenes(root, 'v1.0-mini')
    scene_rec = next(s for s in nusc.scene if s['name'] == scene)
    sample = nusc.get('sample', scene_rec['first_sample_token'])
    return root / nusc.get('sample_data', sample['data'][channel])['filename']


def test_converter_replaces_no_pkl_unless_every_split_converts(nuscenes_copy):
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos

    image = key_frame_file(nuscenes_copy, 'CAM_FRONT')  # of the val split, converted after train
    image.write_bytes(b'\xff\xd8 not really a jpeg')
    old = {split: nuscenes_copy / f'nuscenes_infos_{split}.pkl' for split in ('train', 'val')}
    before = {split: path.read_bytes() for split, path in old.items()}
    with pytest.raises(ValueError, match=re.escape(f'camera image {image} cannot be read as an image')):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', nuscenes_copy)
    assert {split: path.read_bytes() for split, path in old.items()} == before
    assert not list(nuscenes_copy.glob('.*.tmp'))


def test_converter_checks_lidar_size_and_jpeg_end(nuscenes_copy):
    from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos

    lidar = key_frame_file(nuscenes_copy, 'LIDAR_TOP')
    lidar.write_bytes(lidar.read_bytes()[:-3])
    with pytest.raises(ValueError, match='which is not a whole, non-zero number of points of 5 float32 values'):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', nuscenes_copy / 'out')
    lidar.write_bytes(lidar.read_bytes()[:-17])  # whole points again
    image = key_frame_file(nuscenes_copy, 'CAM_BACK')
    image.write_bytes(image.read_bytes()[:-300])
    with pytest.raises(ValueError, match=re.escape(f'camera image {image} is a JPEG without its end-of-image marker')):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', nuscenes_copy / 'out')


def test_dataset_names_an_undecodable_image_and_a_bad_point_file(nuscenes_copy, synthetic_nuscenes, tmp_path):
    """Files broken after conversion are named where they are read."""
    from mmdet3d.registry import DATASETS

    cfg = small_search_cfg(SimpleNamespace(root=nuscenes_copy, image_size=synthetic_nuscenes.image_size), tmp_path)
    ds_cfg = cfg.train_dataloader.dataset  # its pipeline reads the images and the points
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        dataset = DATASETS.build(ds_cfg)
    info = dataset.get_data_info(0)
    image = Path(info['images']['CAM_FRONT_LEFT']['img_path'])
    original = image.read_bytes()
    image.write_bytes(b'garbage, no image')
    with pytest.raises(ValueError, match=re.escape(f'camera image {image} (CAM_FRONT_LEFT, sample {info["token"]}')
                       + '.*cannot be decoded'):
        dataset[0]
    image.write_bytes(original)
    lidar = Path(info['lidar_points']['lidar_path'])
    lidar.write_bytes(lidar.read_bytes()[:-8])
    with pytest.raises(ValueError, match=re.escape(f'LiDAR point file {lidar} has ') + '.* bytes'):
        dataset[0]


# ----------------------------------------------------------------------------------------------------
# SIGTERM, atomic checkpoints, work-dir locks


def run_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_removes_the_temporary_file_of_an_atomic_write(tmp_path):
    proc = run_python("""
        import sys, time
        from projects.sparsevit_bevdet.utils.atomic_io import atomic_open
        with atomic_open(sys.argv[1], 'w') as f:
            f.write('half')
            print('writing', flush=True)
            time.sleep(60)
        """, str(tmp_path / 'out.json'))
    assert proc.stdout.readline().strip() == 'writing'
    assert len(list(tmp_path.glob('.out.json.*.tmp'))) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # still ends as killed by SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_work_dir_lock_refuses_a_second_process_and_takes_over_a_dead_ones(tmp_path):
    holder = run_python("""
        import sys, time
        from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock
        WorkDirLock(sys.argv[1], 'test holder').acquire()
        print('locked', flush=True)
        time.sleep(60)
        """, str(tmp_path))
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(WorkDirLockedError) as err:
        WorkDirLock(tmp_path).acquire()
    assert f'process {holder.pid} (test holder) on host {socket.gethostname()}' in str(err.value)
    holder.kill()  # SIGKILL: the lock file stays, the flock goes
    holder.wait(timeout=60)
    messages: list[str] = []
    with WorkDirLock(tmp_path, log=messages.append):
        with WorkDirLock(tmp_path):  # the same process may lock again
            pass
        assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
    assert len(messages) == 1 and f'left by process {holder.pid}' in messages[0] and 'no longer running' in messages[0]
    assert not (tmp_path / '.lock').exists()


def test_two_searches_in_one_work_dir(synthetic_nuscenes, search_checkpoint, tmp_path):
    work = tmp_path / 'search'
    tool = load_tool('search')
    args = tool.parse_args([str(DEMO_CONFIG), str(search_checkpoint), '--latency-ratio', '0.5',
                            '--work-dir', str(work)])
    holder = run_python("""
        import sys, time
        from projects.sparsevit_bevdet.utils.workdir_lock import WorkDirLock
        WorkDirLock(sys.argv[1], 'tools/search.py').acquire()
        print('locked', flush=True)
        time.sleep(60)
        """, str(work))
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkDirLockedError, match=f'in use by process {holder.pid}'):
            tool.run_search(small_search_cfg(synthetic_nuscenes, tmp_path), str(search_checkpoint), args)
    finally:
        holder.kill()
        holder.wait(timeout=60)


def toy_run_cfg(work_dir: Path) -> Config:
    cfg = Config.fromfile(str(TOY_CONFIG))
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.val_interval = 100
    return cfg


def test_a_run_killed_while_writing_its_final_checkpoint_recovers(tmp_path):
    """What tools/demo.py's training stages do: the final checkpoint cut short by a kill is not taken for a finished
    run; the rerun resumes from the newest complete checkpoint and writes a complete one, atomically."""
    from mmengine.runner import Runner

    import projects.sparsevit_bevdet  # noqa: F401

    work = tmp_path / 'dense'
    final = work / 'iter_8.pth'
    cfg = toy_run_cfg(work)
    assert not prepare_training_run(cfg, work, final)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        Runner.from_cfg(cfg).train()
    assert training_finished(work, final)
    # as a kill in the middle of writing iter_8.pth left it before this fix (mmengine names a checkpoint in
    # last_checkpoint only after writing it)
    final.write_bytes(final.read_bytes()[:1000])
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    (work / '.iter_8.pth.abc.tmp').write_bytes(b'debris of a SIGKILL')
    assert not training_finished(work, final)
    messages: list[str] = []
    cfg = toy_run_cfg(work)
    assert not prepare_training_run(cfg, work, final, log=messages.append)
    assert cfg.resume and cfg.load_from == str(work / 'iter_4.pth')
    assert not final.exists() and len(list(work.glob('iter_8.pth.broken-*'))) == 1
    assert not list(work.glob('.*.tmp'))
    assert any('removed 1 temporary file' in m for m in messages)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        Runner.from_cfg(cfg).train()
    assert training_finished(work, final)
    assert prepare_training_run(toy_run_cfg(work), work, final)


def test_atomic_backend_never_shows_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_4.pth'
    target.write_bytes(b'previous')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        AtomicLocalBackend().put(b'new checkpoint', target)
    assert target.read_bytes() == b'previous' and list(tmp_path.iterdir()) == [target]


def test_real_checkpoint_loads_strictly(tmp_path, synthetic_nuscenes):
    """A checkpoint written by a training run of the SparseViT detector fits it exactly (buffers such as the
    relative position index included)."""
    from mmdet3d.registry import MODELS

    from projects.sparsevit_bevdet.utils.checkpoint_fit import check_state_dict_fits

    cfg = small_search_cfg(synthetic_nuscenes, tmp_path)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
        other = MODELS.build(cfg.model)
    path = tmp_path / 'iter_2.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'iter': np.int64(2)}}, path)
    loaded = torch.load(path, weights_only=True)
    assert check_state_dict_fits(other, loaded['state_dict'], str(path)).fits
