"""Multi-process runs without a GPU: the set-up (in process, fast), and two-process training and testing on CPU
(gloo, torchrun) of a tiny BEVDet on the small synthetic nuScenes (marked slow).

One training run of 2 iterations, a resumed run to 4, and a distributed test of the last checkpoint, all through
tools/train.py and tools/test.py with ``--launcher pytorch``. Checked: gloo is chosen without a GPU; both ranks
train every iteration at the same sampled pruning ratios (SparsityAdaptationHook), the sequence a fresh hook
draws, also after the resume; DDP trains at the densest and sparsest configurations without an unused-parameter
error and leaves identical parameters on both ranks; the test writes one merged nuScenes submission covering
every validation sample, scored by the devkit.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mmengine
import pytest
from mmengine.config import Config

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.engine import SparsityAdaptationHook
from projects.sparsevit_bevdet.testing.configs import small_demo_config
from projects.sparsevit_bevdet.utils.distributed import cpu_dist_backend, setup_distributed

REPO = Path(__file__).resolve().parents[1]
NPROC = 2
# each launch takes about a minute on 2 idle cores; a busy machine may need more (environment variable)
LAUNCH_TIMEOUT_S = float(os.environ.get('SPARSEVIT_DIST_TEST_TIMEOUT_S', 300))
# seed 8 draws the sparsest configuration at iterations 0 and 2 and the densest at 1: each run trains the sparsest
# one and then another iteration, whose forward is where DDP reports parameters left without a gradient
ADAPT = dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.4, 0.8], seed=8, sandwich_prob=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun(tool: str, *args: object, cwd: Path) -> str:
    """``python -m torch.distributed.run --nproc_per_node 2 tools/<tool> ARGS --launcher pytorch``; the log.

    The launcher and its workers run in their own process group, killed as a whole on a timeout (killing only
    the launcher would leave the workers running)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')  # CPU even where a GPU exists
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(NPROC),
           '--master_addr', '127.0.0.1', '--master_port', str(free_port()), str(REPO / 'tools' / tool),
           *map(str, args), '--launcher', 'pytorch']
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f'{tool} ran longer than {LAUNCH_TIMEOUT_S} s:\n{log[-6000:]}')
    assert proc.returncode == 0, f'{tool} failed:\n{log[-6000:]}'
    return log


def read_rank_logs(work_dir: Path) -> list[list[dict]]:
    return [[json.loads(line) for line in (work_dir / f'ratios_rank{r}.jsonl').read_text().splitlines()]
            for r in range(NPROC)]


@pytest.fixture(scope='module')
def runs(synthetic_nuscenes, tmp_path_factory):
    """Train 2 iterations, resume to 4, test iter_4.pth: (work dir, results dir, config, the three logs)."""
    tmp = tmp_path_factory.mktemp('dist')
    results = tmp / 'results'
    cfg = small_demo_config(synthetic_nuscenes.root, synthetic_nuscenes.image_size, results)
    cfg.custom_imports = dict(imports=['projects.sparsevit_bevdet', 'projects.sparsevit_bevdet.testing.distributed'],
                              allow_failed_imports=False)
    cfg.custom_hooks = [ADAPT, dict(type='RankRatioLogHook')]
    cfg.model.test_cfg.pts.pre_max_size = 50  # an untrained head: keep the CPU rotated NMS short
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=1, num_workers=0, persistent_workers=False)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # no validation inside training
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    config = tmp / 'dist_bevdet.py'
    cfg.dump(config)
    work = tmp / 'work'
    first = torchrun('train.py', config, '--work-dir', work, cwd=tmp)
    resumed = torchrun('train.py', config, '--work-dir', work, '--resume', '--cfg-options', 'train_cfg.max_iters=4',
                       cwd=tmp)
    tested = torchrun('test.py', config, work / 'iter_4.pth', '--work-dir', tmp / 'test', cwd=tmp)
    return work, results, Config.fromfile(config), (first, resumed, tested)


@pytest.mark.slow
def test_gloo_is_chosen_without_a_gpu(runs):
    for log in runs[3]:
        assert "backend': 'gloo'" in log or "backend='gloo'" in log
        assert 'Distributed training: True' in log


@pytest.mark.slow
def test_both_ranks_train_the_same_sampled_ratios_every_iteration(runs):
    work, _, cfg, (_, resumed, _) = runs
    rank0, rank1 = read_rank_logs(work)
    assert rank0 == rank1  # same ratios at every iteration, same parameters after each run
    iterations = [r for r in rank0 if 'iter' in r]
    assert [r['iter'] for r in iterations] == [0, 1, 2, 3]  # the resumed run went on at iteration 2
    # the sequence a fresh hook draws from (seed, iteration): resuming needs no stored sampler state
    space = SparseViT(**{k: v for k, v in cfg.model.img_backbone.items() if k != 'type'}).search_space()
    hook = SparsityAdaptationHook(**{k: v for k, v in ADAPT.items() if k != 'type'})
    assert [r['ratios'] for r in iterations] == [hook.sample(space, i) for i in range(4)]
    flat = [sorted({x for stage in r['ratios'] for x in stage}) for r in iterations]
    assert [0.0] in flat and [0.8] in flat  # dense and sparsest both trained: DDP found every parameter used
    digests = [r for r in rank0 if 'params_sha256' in r]
    assert [d['after_train_iter'] for d in digests] == [2, 4]
    assert 'Iter(train) [4/4]' in resumed and 'Iter(train) [3/4]' in resumed and 'Iter(train) [1/4]' not in resumed
    assert 'resumed' in resumed.lower()
    assert (work / 'iter_2.pth').is_file() and (work / 'iter_4.pth').is_file()


@pytest.mark.slow
def test_distributed_test_writes_one_merged_submission_scored_by_the_devkit(runs, synthetic_nuscenes):
    _, results, _, (_, _, tested) = runs
    submissions = sorted(results.rglob('results_nusc.json'))
    assert len(submissions) == 1
    submission = json.loads(submissions[0].read_text())
    val_tokens = {info['token'] for info in mmengine.load(synthetic_nuscenes.infos['val'])['data_list']}
    line = next(line for line in tested.splitlines() if line.startswith('test metrics: '))
    metrics = json.loads(line[len('test metrics: '):])
    assert 0.0 <= metrics['NuScenes/mAP'] <= 1.0 and 0.0 <= metrics['NuScenes/NDS'] <= 1.0
    per_rank = int(re.search(r'Iter\(test\) \[\d+/(\d+)\]', tested).group(1))
    assert per_rank == -(-len(val_tokens) // NPROC)  # each rank tested its half of the samples ...
    assert set(submission['results']) == val_tokens  # ... and the submission holds all of them, once


# -- the set-up, in process (fast) --------------------------------------------------------------------------
def test_cpu_backend_choice():
    assert cpu_dist_backend({}) == 'gloo' and cpu_dist_backend(dict(backend='nccl')) == 'gloo'
    assert cpu_dist_backend(dict(backend='gloo')) == 'gloo' and cpu_dist_backend(dict(backend='mpi')) == 'mpi'
    with pytest.raises(ValueError, match=re.escape("env_cfg.dist_cfg.backend='hccl' needs a GPU")):
        cpu_dist_backend(dict(backend='hccl'))


def test_setup_creates_a_gloo_group_and_cpu_ddp_settings(monkeypatch):
    import torch
    import torch.distributed as dist

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match=r"missing \['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        setup_distributed(cfg)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    assert not dist.is_initialized()
    try:
        setup_distributed(cfg)
        assert dist.is_initialized() and dist.get_backend() == 'gloo' and dist.get_world_size() == 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                         find_unused_parameters=False, device_ids=None)
    with pytest.raises(ValueError, match='SyncBatchNorm has no CPU implementation'):
        setup_distributed(Config(dict(launcher='pytorch', sync_bn='torch')))


def test_setup_leaves_single_process_and_gpu_runs_alone(monkeypatch):
    import torch

    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg.launcher = 'pytorch'
    setup_distributed(cfg)  # mmengine initialises NCCL itself
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
