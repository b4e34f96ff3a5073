"""One process at a time per work dir: a lock file that names its holder.

Two processes resuming the same work dir (``tools/demo.py``, ``tools/search.py``) would both append to the
same state and checkpoints. :class:`WorkDirLock` holds an exclusive ``fcntl.flock`` on ``<work_dir>/.lock``
for as long as the process runs, and writes the holder into the file (pid, host, start time, command). A
second process is refused with :class:`WorkDirLockedError` naming the holder. The kernel releases a flock
when its process dies, even by SIGKILL, so a lock file left behind by a dead process is taken over, with a
message naming the dead holder. A clean exit, an exception and SIGTERM remove the file.

The same process may take the same lock again (re-entrant); flock is per open file, so without this a
process would refuse itself.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional

from .atomic_io import forget_on_sigterm, remove_on_sigterm

__all__ = ['LOCK_NAME', 'WorkDirLock', 'WorkDirLockedError']

LOCK_NAME = '.lock'
# path -> (fd, depth) of the locks this process holds
_HELD: dict[str, tuple[int, int]] = {}


class WorkDirLockedError(RuntimeError):
    """Another live process holds the work dir's lock."""


def _describe(holder: dict) -> str:
    what = f" ({holder['what']})" if holder.get('what') else ''
    return (f"process {holder.get('pid')}{what} on host {holder.get('host')}, started {holder.get('started')}"
            f"{', running ' + repr(holder['command']) if holder.get('command') else ''}")


def _read_holder(fd: int) -> dict:
    raw = os.pread(fd, 1 << 16, 0)
    try:
        holder = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class WorkDirLock:
    """Exclusive lock of ``work_dir`` for this process (a context manager).

    Args:
        work_dir: the folder to lock (created if missing).
        what: what the holder does, for the message of a refused process (e.g. ``'tools/search.py'``).
        log: where the takeover of a dead holder's lock is reported.
    """

    def __init__(self, work_dir: str | os.PathLike, what: str = '', log: Callable[[str], None] = print) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.what = what
        self.log = log

    def acquire(self) -> None:
        key = str(self.path.resolve())
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkDirLockedError(
                    f'{self.path.parent} is in use by {_describe(holder) if holder else "another process"} '
                    f'(lock file {self.path}). Two processes resuming one work dir would corrupt its state: wait for '
                    'it to finish, stop it, or choose another work dir.') from None
            # the previous holder may have removed the file between our open and our flock: lock the file
            # that is at the path now
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous:
            state = 'no longer running' if not (previous.get('host') == socket.gethostname()
                                                 and _pid_alive(previous.get('pid'))) else 'not holding it'
            self.log(f'taking over the lock {self.path} left by {_describe(previous)} ({state})')
        holder = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=time.strftime('%Y-%m-%d %H:%M:%S %z'), what=self.what,
                      command=' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else '')
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode('utf-8'), 0)
        remove_on_sigterm(self.path)
        _HELD[key] = (fd, 1)

    def release(self) -> None:
        key = str(self.path.resolve())
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
            return
        del _HELD[key]
        forget_on_sigterm(self.path)
        # unlink while still holding the flock; a process that opened the old file re-checks the inode
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(fd)

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()
