"""Checkpoints of a training run that appear whole, and a run's completion judged from them.

mmengine's ``CheckpointHook`` writes ``iter_N.pth`` with a plain ``open(..., 'wb')`` and then names it in
``<work_dir>/last_checkpoint``. A run killed during the write leaves a truncated ``iter_N.pth`` that looks
finished. Here:

* :class:`AtomicLocalBackend` is mmengine's local file backend with ``put`` / ``put_text`` through
  :mod:`.atomic_io` (temporary file, then rename); :func:`use_atomic_checkpoints` selects it in a config's
  ``default_hooks.checkpoint.backend_args``, the hook's own route to its files, so checkpoints appear whole or
  not at all (a SIGTERM also removes the temporary file; a SIGKILL leaves a ``.iter_N.pth.*.tmp``);
* :func:`training_finished`: a run is finished only when ``last_checkpoint`` names its final checkpoint and
  that file is a structurally complete checkpoint (``last_checkpoint`` is written after the checkpoint);
* :func:`resume_checkpoint`: what to resume from: the newest complete ``iter_*.pth`` / ``epoch_*.pth``; broken
  files are moved aside, never resumed from;
* :func:`remove_stale_temp_files`: the ``.tmp`` debris of killed writers (call it only while holding the work
  dir's lock, :mod:`.workdir_lock`, so no live writer owns them);
* :func:`prepare_training_run`: all of the above for one run (what ``tools/demo.py`` does per training stage).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from mmengine.fileio import LocalBackend, register_backend

from .atomic_io import atomic_write_bytes
from .safe_checkpoint import checkpoint_is_complete

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'prepare_training_run', 'remove_stale_temp_files',
           'resume_checkpoint', 'training_finished', 'use_atomic_checkpoints']

ATOMIC_BACKEND = 'atomic_local'
_RUN_CHECKPOINT = re.compile(r'^(iter|epoch)_(\d+)\.pth$')
Log = Callable[[str], None]


@register_backend(ATOMIC_BACKEND, force=True)
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes go to a temporary file renamed into place."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(filepath, obj.encode(encoding))


def use_atomic_checkpoints(cfg: Any) -> None:
    """Make the config's ``CheckpointHook`` write through :class:`AtomicLocalBackend` (local work dirs only:
    a hook already given another backend keeps it)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is None:
        return
    if hook.get('file_client_args') is not None:
        return
    backend = (hook.get('backend_args') or {}).get('backend', 'local')
    if backend in ('local', ATOMIC_BACKEND):
        hook['backend_args'] = dict(hook.get('backend_args') or {}, backend=ATOMIC_BACKEND)


def _named_by_last_checkpoint(work_dir: Path) -> Optional[Path]:
    record = work_dir / 'last_checkpoint'
    if not record.is_file():
        return None
    name = record.read_text(errors='replace').strip()
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else work_dir / path


def training_finished(work_dir: Path, final: Path) -> bool:
    """Whether ``last_checkpoint`` names ``final`` and ``final`` is a complete checkpoint."""
    named = _named_by_last_checkpoint(work_dir)
    return (named is not None and named.is_file() and named.resolve() == final.resolve()
            and checkpoint_is_complete(final))


def _move_aside(path: Path, log: Log) -> None:
    target = path.with_name(f'{path.name}.broken-{time.strftime("%Y%m%d_%H%M%S")}')
    path.rename(target)
    log(f'{path} is not a complete checkpoint (a run killed while writing it?): moved it to {target}')


def resume_checkpoint(work_dir: Path, log: Log = print) -> Optional[Path]:
    """The newest complete ``iter_*.pth`` / ``epoch_*.pth`` of the run in ``work_dir`` (None: start afresh).
    Broken checkpoint files met on the way are renamed to ``<name>.broken-<time>``, never resumed from."""
    def number(path: Path) -> int:
        return int(_RUN_CHECKPOINT.match(path.name).group(2))

    for path in sorted((p for p in work_dir.iterdir() if _RUN_CHECKPOINT.match(p.name)), key=number, reverse=True):
        if checkpoint_is_complete(path):
            return path
        _move_aside(path, log)
    return None


def prepare_training_run(cfg: Any, work_dir: Path, final: Path, log: Log = print) -> bool:
    """Set up ``cfg`` to train in ``work_dir`` safely: atomic checkpoints, temporary debris removed, resumed from
    the newest complete checkpoint. Returns True (and changes nothing else) when the run already finished.
    Call it while holding the work dir's lock."""
    if work_dir.is_dir():
        remove_stale_temp_files(work_dir, log)
        if training_finished(work_dir, final):
            return True
        start = resume_checkpoint(work_dir, log)
        if start is not None:
            cfg.resume = True
            cfg.load_from = str(start)  # mmengine resumes from load_from when it is set
            log(f'resuming the training in {work_dir} from {start.name}, its newest complete checkpoint')
    use_atomic_checkpoints(cfg)
    return False


def remove_stale_temp_files(work_dir: Path, log: Log = print) -> list[Path]:
    """Remove the ``.<name>.<random>.tmp`` files that killed atomic writers left in ``work_dir``."""
    stale = sorted(p for p in work_dir.glob('.*.tmp') if p.is_file())
    for path in stale:
        path.unlink()
    if stale:
        log(f'removed {len(stale)} temporary file(s) of an interrupted write in {work_dir}: '
            f'{", ".join(p.name for p in stale[:3])}{" ..." if len(stale) > 3 else ""}')
    return stale
