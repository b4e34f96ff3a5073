"""Atomic file writes: write to a temporary file in the target's folder, then ``os.replace``.

An interrupted run therefore leaves either the previous complete file or no file, never a
half-written one that a later run could mistake for complete. The temporary name starts with a dot
and ends in ``.tmp`` so that a crash leaves only obviously stale debris.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
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
    'atomic_save_figure',
    'atomic_write_bytes',
    'atomic_write_json',
    'atomic_write_pickle',
    'atomic_write_text',
]


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        kwargs = {'encoding': 'utf-8'} if mode == 'w' else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions of a new file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
