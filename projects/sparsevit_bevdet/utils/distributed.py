"""Multi-process runs without a GPU: gloo instead of NCCL, and DDP without device ids.

mmengine's ``init_dist`` (mmengine 0.10, ``mmengine/dist/utils.py``) calls ``torch.cuda.set_device`` for the
pytorch, slurm and mpi launchers before it creates the process group, whatever the backend, which fails on
CPU-only torch (``module 'torch._C' has no attribute '_cuda_setDevice'``). The Runner only calls it when no
process group exists yet (``Runner.setup_env``), so on a machine without a GPU :func:`setup_distributed`
creates the group itself from the launcher's environment and the config's ``env_cfg.dist_cfg``; mmengine then
finds it initialised and uses it. The Runner also wraps the model as ``DistributedDataParallel(device_ids=
[LOCAL_RANK])``, which torch refuses for a CPU module, so ``model_wrapper_cfg`` gets ``device_ids=None``.

With a GPU nothing changes: mmengine initialises the group (NCCL by default) as usual.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
from typing import Any, Dict

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

__all__ = ['cpu_dist_backend', 'setup_distributed']

CPU_BACKENDS = ('gloo', 'mpi')
DEFAULT_PORT = '29500'  # torch.distributed's default


def cpu_dist_backend(dist_cfg: Dict[str, Any]) -> str:
    """The backend a CPU-only run uses: the configured one if it works without a GPU, gloo for NCCL / unset."""
    backend = dist_cfg.get('backend') or 'nccl'
    if backend == 'nccl':
        return 'gloo'
    if backend not in CPU_BACKENDS:
        raise ValueError(f'env_cfg.dist_cfg.backend={backend!r} needs a GPU; without one use one of {CPU_BACKENDS} '
                         f"(or leave it 'nccl' / unset and gloo is chosen)")
    return backend


def _launcher_env(launcher: str, dist_cfg: Dict[str, Any]) -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from the launcher, as mmengine does."""
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
        if missing:
            raise RuntimeError(f'--launcher pytorch needs the environment torchrun sets; missing {missing}. '
                               f'Start with: python -m torch.distributed.run --nproc_per_node N tools/train.py ...')
    elif launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in os.environ:
            # the first host of the allocation, as mmengine's slurm set-up
            hosts = subprocess.check_output(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
                                            text=True)
            os.environ['MASTER_ADDR'] = hosts.split()[0]
        port = dist_cfg.get('port')
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', DEFAULT_PORT)
    elif launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('--launcher mpi needs MASTER_ADDR in the environment')
        os.environ.setdefault('MASTER_PORT', DEFAULT_PORT)
    else:
        raise ValueError(f'launcher must be one of pytorch, slurm, mpi for a distributed run, got {launcher!r}')


def setup_distributed(cfg: Config) -> None:
    """Prepare ``cfg`` (``launcher`` set) for a multi-process run; call before building the Runner.

    Without CUDA: ``env_cfg.dist_cfg.backend`` becomes gloo (unless it is gloo / mpi already), the process
    group is created here from the launcher's environment (``dist_cfg.timeout`` in seconds is honoured), and
    ``model_wrapper_cfg`` gets ``device_ids=None``. With CUDA, or ``launcher='none'``, ``cfg`` is untouched.

    Raises:
        ValueError: a GPU-only backend or ``sync_bn`` requested on a machine without a GPU.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = cpu_dist_backend(dist_cfg)
    if backend != dist_cfg.get('backend'):
        print_log(f'no GPU: env_cfg.dist_cfg.backend {dist_cfg.get("backend")!r} -> {backend!r}', logger='current',
                  level=logging.WARNING)
    dist_cfg['backend'] = backend
    if cfg.get('sync_bn'):
        raise ValueError(f'sync_bn={cfg.sync_bn!r} (--sync_bn) needs GPUs: SyncBatchNorm has no CPU implementation')

    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    # the Runner passes device_ids=[LOCAL_RANK] as a default argument; DDP accepts only None for CPU modules
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper

    if torch_dist.is_initialized():
        return
    _launcher_env(launcher, dist_cfg)
    kwargs = {k: v for k, v in dist_cfg.items() if k not in ('backend', 'port')}
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)
