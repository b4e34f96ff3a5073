"""Atomic file writes: write to a temporary file in the target's folder, then ``os.replace``.

An interrupted run therefore leaves either the previous complete file or no file, never a
half-written one that a later run could mistake for complete. The temporary name starts with a dot
and ends in ``.tmp`` so that a crash leaves only obviously stale debris.

Temporary files are removed on a Python exception and also on SIGTERM: while one is open, a SIGTERM
handler (installed once, from the main thread, only where SIGTERM still has its default action) removes the
process's pending temporary files (:func:`remove_on_sigterm`) and then lets the default action end the
process, so its exit status stays "killed by SIGTERM". Only SIGKILL (or a power loss) leaves a ``.tmp``.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once at import, not per write (threads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

__all__ = [
    'atomic_open',
    'atomic_replace_many',
    'atomic_save_figure',
    'atomic_write_bytes',
    'atomic_write_json',
    'atomic_write_pickle',
    'atomic_write_text',
    'forget_on_sigterm',
    'remove_on_sigterm',
]


# path -> pid of the process that registered it: a forked child inherits the dict but must not remove its
# parent's files
_ON_SIGTERM: dict[str, int] = {}
_handler_installed = False


def _remove_pending_and_die(signum: int, frame: Any) -> None:
    for path, pid in list(_ON_SIGTERM.items()):
        if pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(path)
    # the default action: the process ends as killed by SIGTERM (exit status 143 / -15)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_handler() -> None:
    global _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    # a handler someone else installed (or SIG_IGN) decides itself; exceptions it raises still clean up
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _remove_pending_and_die)
    _handler_installed = True


def remove_on_sigterm(path: PathLike) -> None:
    """Remove ``path`` if this process is ended by SIGTERM before :func:`forget_on_sigterm` is called."""
    _install_sigterm_handler()
    _ON_SIGTERM[os.fspath(path)] = os.getpid()


def forget_on_sigterm(path: PathLike) -> None:
    _ON_SIGTERM.pop(os.fspath(path), None)


@contextlib.contextmanager
def _staged(path: Path, mode: str, fsync: bool, stack: contextlib.ExitStack) -> Iterator[tuple[IO, str]]:
    """A complete temporary file next to ``path`` (not yet renamed); ``stack`` removes it unless renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    remove_on_sigterm(tmp)
    stack.callback(forget_on_sigterm, tmp)
    stack.callback(_unlink_if_left, tmp)
    kwargs = {'encoding': 'utf-8'} if mode == 'w' else {}
    with os.fdopen(fd, mode, **kwargs) as f:
        yield f, tmp
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    # mkstemp creates 0600 files; give the result the usual permissions of a new file.
    os.chmod(tmp, 0o666 & ~_UMASK)


def _unlink_if_left(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = 'wb', fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit move it onto ``path``.

    Args:
        path: final destination. Its parent folder is created if missing.
        mode: ``'wb'`` or ``'w'`` (text, UTF-8).
        fsync: flush the data to disk before the rename, so that a power loss cannot leave
            the renamed file empty. Bulk writers of cheap-to-regenerate files may skip it.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open supports modes "w" and "wb", got {mode!r}')
    with contextlib.ExitStack() as stack:
        with _staged(Path(path), mode, fsync, stack) as (f, tmp):
            yield f
        os.replace(tmp, path)


def atomic_replace_many(contents: dict[PathLike, bytes], fsync: bool = True) -> None:
    """Write several files so that none is replaced unless all were written: every temporary file is
    complete on disk before the first rename (the renames themselves take microseconds)."""
    with contextlib.ExitStack() as stack:
        staged = []
        for path, data in contents.items():
            with _staged(Path(path), 'wb', fsync, stack) as (f, tmp):
                f.write(data)
            staged.append((path, tmp))
        for path, tmp in staged:
            os.replace(tmp, path)


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, 'wb', fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, fsync: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, 'w', fsync=fsync) as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = None, fsync: bool = True) -> None:
    """Serialise ``obj`` as strict JSON (NaN/inf rejected) and write it atomically.

    Serialising before opening the file means an unserialisable object leaves nothing behind.
    """
    text = json.dumps(obj, indent=indent, allow_nan=False)
    atomic_write_text(path, text, fsync=fsync)


def atomic_write_pickle(path: PathLike, obj: Any, fsync: bool = True) -> None:
    """Pickle ``obj`` and write it atomically."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), fsync=fsync)


def atomic_save_figure(fig: Any, path: PathLike, dpi: int = 120) -> None:
    """Write a matplotlib figure as PNG atomically, then close it (frees pyplot's reference)."""
    import matplotlib.pyplot as plt

    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=dpi)
    plt.close(fig)
