"""Safe loading of mmengine checkpoints on torch >= 2.6.

Why
---
torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load``
without telling it which non-tensor types a checkpoint may hold. Every runner-saved checkpoint
carries numpy values and mmengine's ``HistoryBuffer`` (in ``meta`` and ``message_hub``), so
``load_from``, ``resume``, ``tools/test.py`` and ``init_cfg=dict(type='Pretrained')`` all fail with
``UnpicklingError``. Worse, mmengine's ``http(s)://`` loader goes through
``torch.hub.load_state_dict_from_url``, whose ``weights_only`` still defaults to ``False``: a
downloaded checkpoint could run arbitrary pickled code.

Mechanism
---------
:func:`install_safe_checkpoint_loading` (run when ``projects.sparsevit_bevdet`` is imported; safe
to call again) does two things, both through public extension points:

1. ``torch.serialization.add_safe_globals`` with the allowlist below, so the weights-only
   unpickler can rebuild exactly those types (this also makes a plain ``torch.load`` of a runner
   checkpoint work anywhere in the process).
2. ``mmengine.runner.CheckpointLoader.register_scheme(..., force=True)`` for every scheme mmengine
   ships (local paths, ``http(s)://``, ``torchvision://``/``modelzoo://``,
   ``open-mmlab://``/``openmmlab://``, ``mmcls://``, ``pavi://``, ``s3://``/``petrel://``). Each
   loader passes ``weights_only=True`` explicitly to ``torch.load`` (or, for URLs, to
   ``torch.hub.load_state_dict_from_url``), so neither the hub default nor a user's
   ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` can turn it off, and turns a refusal into
   :class:`CheckpointSecurityError`.

Why the schemes cover every path: in mmengine 0.10.7 all checkpoint reads go through
``mmengine.runner.checkpoint._load_checkpoint`` -> ``CheckpointLoader.load_checkpoint`` -> the
registered scheme loader: ``load_checkpoint`` and ``_load_checkpoint_with_prefix`` (hence
``PretrainedInit``, i.e. ``init_cfg=dict(type='Pretrained')``), ``Runner.load_checkpoint`` (hence
``load_from`` and ``tools/test.py``), ``Runner.resume``, ``CheckpointHook`` and the
``FlexibleRunner`` strategies. mmdet, mmdet3d and mmseg load checkpoints through these mmengine
functions. Code that calls ``torch.load`` itself still gets torch's weights-only default plus the
allowlist, only without the friendlier error.

Allowlist (exactly what mmengine / mmdet / mmdet3d / mmseg runner checkpoints hold beyond what
torch allows by default, found with ``torch.serialization.get_unsafe_globals_in_checkpoint``)
---------------------------------------------------------------------------------------------
- ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``: numpy arrays (``HistoryBuffer``
  histories, array-valued metadata);
- ``numpy.core.multiarray.scalar``, ``numpy.dtype``: numpy scalars and dtypes (``eta``,
  ``best_score`` and other metric values in ``message_hub.runtime_info``);
- the concrete dtype classes ``numpy.dtypes.Float64DType``, ``Int64DType``, ... (one per entry of
  ``numpy.typecodes['All']``): never named in a pickle, but a pickled dtype is rebuilt with
  ``numpy.dtype(...)`` plus a BUILD step, and torch only runs BUILD on allowlisted types;
- ``numpy._core.multiarray._reconstruct``, ``numpy._core.multiarray.scalar``: the names numpy 2
  pickles the same two functions under, so checkpoints saved with numpy 2 load too;
- ``mmengine.logging.history_buffer.HistoryBuffer``: the logged scalars in ``message_hub``;
- ``builtins.getattr``, replaced by a stand-in that only resolves ``HistoryBuffer.min``, ``.max``,
  ``.current`` and ``.mean``: ``HistoryBuffer.__getstate__`` pickles its statistics methods and
  protocol 2 spells ``HistoryBuffer.min`` as ``getattr(HistoryBuffer, 'min')``. A real ``getattr``
  would let a pickle fetch arbitrary attributes (functions that ``HistoryBuffer.statistics`` later
  calls), so any other use is refused.

Everything else (``collections.OrderedDict``/``Counter``, tensors, ``torch.Size``, sets, ...) is
already allowed by torch itself.

Corrupt files
-------------
A truncated or corrupt file makes torch fail deep in its reader (``IndexError: pop from empty
list``, ``EOFError``, ``UnpicklingError``, ``RuntimeError: PytorchStreamReader failed ...``). When a
load fails and the file is structurally broken (checked without unpickling anything), the loaders
raise :class:`CorruptCheckpointError` naming the file, chained from torch's error; a well-formed
file that holds refused globals still raises :class:`CheckpointSecurityError`.

Trusting extra types
--------------------
A checkpoint holding any other global is refused with :class:`CheckpointSecurityError`, which names
the offending globals (``module.qualname``) and the file; nothing of the pickle runs. If you trust
the file, allow the types explicitly, either in code::

    from projects.sparsevit_bevdet.utils import trust_checkpoint_globals
    trust_checkpoint_globals(['my_pkg.my_module.MyType'])

or, without touching code (e.g. for ``tools/test.py``), with a comma-separated environment
variable, read at every load and applying to that load only::

    SPARSEVIT_TRUSTED_GLOBALS=my_pkg.my_module.MyType,other_pkg.Thing python tools/test.py ...

``trust_checkpoint_globals`` is process-wide (and also applies to plain ``torch.load``). Only
module-level names can be trusted; use the names the error reports.
Globals from ``os``, ``sys``, ``posix`` and ``nt`` can never be loaded: torch blocks them outright.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import importlib
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from tempfile import TemporaryDirectory
from typing import IO, Any, Callable, Optional, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import (
    _get_mmengine_home,
    _process_mmcls_checkpoint,
    get_deprecated_model_names,
    get_external_models,
    get_mmcls_models,
    get_torchvision_models,
)

__all__ = [
    'TRUSTED_GLOBALS_ENV',
    'CheckpointSecurityError',
    'CorruptCheckpointError',
    'checkpoint_is_complete',
    'install_safe_checkpoint_loading',
    'safe_torch_load',
    'trust_checkpoint_globals',
]

TRUSTED_GLOBALS_ENV = 'SPARSEVIT_TRUSTED_GLOBALS'

# torch's weights-only unpickler refuses these modules even when a global is allowlisted.
_TORCH_BLOCKED_MODULES = ('os', 'sys', 'posix', 'nt')

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# Names bound to restricted stand-ins: trusting the real object under the same name would make
# torch pick one of the two at random, so it is refused.
_RESTRICTED_NAMES = frozenset({'builtins.getattr'})

SafeGlobal = tuple[Callable[..., Any], str]


class CheckpointSecurityError(pickle.UnpicklingError):
    """A checkpoint holds pickled globals outside the safe-loading allowlist; nothing was run.

    Attributes:
        source: the file or URL that was being loaded.
        offending_globals: the refused globals as ``module.qualname`` (empty when torch refused a
            construct rather than a name).
        torch_message: torch's full error message.
    """

    def __init__(self, source: str, offending_globals: list[str], torch_message: str) -> None:
        self.source = source
        self.offending_globals = offending_globals
        self.torch_message = torch_message
        blocked = [g for g in offending_globals if g.split('.')[0] in _TORCH_BLOCKED_MODULES]
        restricted = [g for g in offending_globals if g in _RESTRICTED_NAMES]
        trustable = [g for g in offending_globals if g not in blocked and g not in restricted]
        if offending_globals:
            message = (f"Refused to load checkpoint '{source}': it holds pickled global(s) "
                       f'{", ".join(offending_globals)} outside the safe-loading allowlist; unpickling '
                       'them could run arbitrary code (nothing was run).')
        else:
            message = (f"Refused to load checkpoint '{source}': torch's weights-only unpickler rejected "
                       'a construct in it (nothing was run).')
        if blocked:
            message += (f' {", ".join(blocked)} can never be loaded: torch blocks the modules '
                        f'{"/".join(_TORCH_BLOCKED_MODULES)} outright. Do not use this file.')
        if restricted:
            message += (f' {", ".join(restricted)} is allowed only as getattr(HistoryBuffer, one of '
                        f'{_HISTORY_BUFFER_STATISTICS}) and cannot be trusted wholesale.')
        if trustable:
            message += (' If you trust this file, allow these types explicitly: call '
                        f'projects.sparsevit_bevdet.utils.trust_checkpoint_globals({trustable!r}) or set '
                        f'the environment variable {TRUSTED_GLOBALS_ENV}={",".join(trustable)}.')
        super().__init__(f'{message}\n(torch: {_torch_reason(torch_message)})')


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or corrupt; raised from torch's low-level read error.

    Attributes:
        source: the file or URL that was being loaded.
    """

    def __init__(self, source: str, error: BaseException) -> None:
        self.source = source
        reason = _torch_reason(str(error))
        detail = f'{type(error).__name__}: {reason}' if reason else type(error).__name__
        super().__init__(f"Cannot load checkpoint '{source}': it is not a readable PyTorch checkpoint "
                         f'(truncated or corrupt; torch: {detail})')


def _torch_reason(torch_message: str) -> str:
    """The unpickler's own reason, without torch's generic advice around it."""
    if 'WeightsUnpickler error:' in torch_message:
        reason = torch_message.split('WeightsUnpickler error:', 1)[1]
    else:
        reason = torch_message.split('\n\n', 1)[-1]
    reason = reason.split('Check the documentation of torch.load', 1)[0]
    return ' '.join(reason.split())


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: resolves only HistoryBuffer statistics."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr was not an allowed global by default '
        f'(only getattr(HistoryBuffer, one of {_HISTORY_BUFFER_STATISTICS}) is allowed, '
        f'got getattr({obj!r}, {name!r})).')


def _numpy_multiarray() -> Any:
    # numpy 2 renamed numpy.core to numpy._core; numpy 1.26 has both, but numpy.core warns on 2.x.
    if int(np.__version__.split('.')[0]) >= 2:
        return importlib.import_module('numpy._core.multiarray')
    return importlib.import_module('numpy.core.multiarray')


def _numpy_dtype_classes() -> list[SafeGlobal]:
    """``numpy.dtypes.*DType``: a pickled dtype is ``numpy.dtype(...)`` followed by a BUILD (its
    ``__setstate__``), and torch only builds instances of allowlisted types."""
    classes = {type(np.dtype(code)) for code in np.typecodes['All']} - {np.dtype}
    return [(cls, f'{cls.__module__}.{cls.__qualname__}') for cls in sorted(classes, key=lambda c: c.__name__)]


def _base_allowlist() -> list[SafeGlobal]:
    """The globals runner-saved checkpoints need, each under the exact name pickles use."""
    multiarray = _numpy_multiarray()
    return [
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (multiarray.scalar, 'numpy._core.multiarray.scalar'),
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
        *_numpy_dtype_classes(),
        (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ]


_trusted: dict[str, SafeGlobal] = {}


def _resolve(name: str) -> Any:
    """Import ``module.qualname`` (longest importable module prefix, then attributes).

    Python 2 names that protocol-2 pickles use (e.g. ``commands.call`` for ``subprocess.call``) are
    mapped the way :mod:`pickle` maps them when loading.
    """
    module_name, _, attr_name = name.rpartition('.')
    if (module_name, attr_name) in _compat_pickle.NAME_MAPPING:
        name = '.'.join(_compat_pickle.NAME_MAPPING[(module_name, attr_name)])
    elif module_name in _compat_pickle.IMPORT_MAPPING:
        name = f'{_compat_pickle.IMPORT_MAPPING[module_name]}.{attr_name}'
    parts = name.split('.')
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                break
            obj = getattr(obj, attr)
        else:
            return obj
    raise ValueError(f'Cannot trust checkpoint global {name!r}: it does not resolve to an importable '
                     "object (expected 'package.module.Name').")


def _to_safe_global(item: Union[str, Callable[..., Any]]) -> SafeGlobal:
    if isinstance(item, str):
        name = item.strip()
        obj = _resolve(name)
    else:
        obj = item
        name = f'{item.__module__}.{item.__qualname__}'
    if name in _RESTRICTED_NAMES:
        raise ValueError(f'{name} is already allowed in a restricted form for HistoryBuffer; '
                         'trusting it wholesale would let a checkpoint fetch arbitrary attributes.')
    if name.split('.')[0] in _TORCH_BLOCKED_MODULES:
        raise ValueError(f'{name} cannot be trusted: torch never unpickles globals from '
                         f'{"/".join(_TORCH_BLOCKED_MODULES)}.')
    return obj, name


def trust_checkpoint_globals(items: Iterable[Union[str, Callable[..., Any]]]) -> list[str]:
    """Allow checkpoints to hold these extra globals (``'module.Name'`` strings or the objects).

    Trust is process-wide and also applies to plain ``torch.load``. Returns the trusted names.
    """
    entries = [_to_safe_global(item) for item in items]
    for entry in entries:
        _trusted[entry[1]] = entry
    torch.serialization.add_safe_globals(entries)
    return [name for _, name in entries]


def _env_globals() -> list[SafeGlobal]:
    value = os.environ.get(TRUSTED_GLOBALS_ENV, '')
    return [_to_safe_global(name) for name in value.split(',') if name.strip()]


def _refresh_allowlist() -> None:
    # Re-added before every load: a caller's `torch.serialization.safe_globals(...)` context
    # removes its entries on exit even when they were allowlisted before. add_safe_globals is a
    # set union, so this is cheap.
    torch.serialization.add_safe_globals(_base_allowlist() + list(_trusted.values()))


_GLOBAL_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
)


def _offending_globals(f: Union[str, os.PathLike, io.IOBase], message: str) -> list[str]:
    """All refused globals: a static scan of the pickle when possible, plus what torch named."""
    found = {m.group(1) for pattern in _GLOBAL_PATTERNS for m in pattern.finditer(message)}
    # torch's message drops the 'builtins.' prefix (GLOBAL exec, not builtins.exec)
    found = {name if '.' in name else f'builtins.{name}' for name in found}
    if isinstance(f, io.IOBase):
        f.seek(0)
    # Legacy (pre-1.6) checkpoints cannot be scanned (ValueError, or RuntimeError for a zip that
    # wraps one); torch's message names the first refused global, which is what we report then.
    with contextlib.suppress(ValueError, RuntimeError):
        found.update(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    # The restricted getattr is allowlisted by name, so the scan cannot see its misuse.
    if 'GLOBAL builtins.getattr' in message:
        found.add('builtins.getattr')
    return sorted(found)


# A legacy (non-zip) checkpoint starts with these pickles: magic number, protocol version, system
# info, the object, its storage keys; raw storage bytes follow.
_LEGACY_PICKLES = 5
_ZIP_MAGIC = b'PK\x03\x04'  # what torch tests to pick its zip reader


def _read_pickle(stream: IO[bytes]) -> None:
    """Walk one pickle's opcodes up to STOP (nothing is run); ValueError if it is malformed."""
    deque(pickletools.genops(stream), maxlen=0)


def _stream_is_corrupt(stream: IO[bytes]) -> bool:
    try:
        if stream.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
            with zipfile.ZipFile(stream) as archive:
                pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
                if archive.testzip() is not None or not pickles:
                    return True
                _read_pickle(io.BytesIO(archive.read(pickles[0])))
            return False
        stream.seek(0)
        for count in range(_LEGACY_PICKLES):
            start = stream.tell()
            if not stream.read(1):  # empty: corrupt; ends after complete pickles (a bare pickle): not
                return count == 0
            stream.seek(start)
            _read_pickle(stream)
    except (zipfile.BadZipFile, EOFError, ValueError):
        return True
    return False


def _is_corrupt(f: Union[str, os.PathLike, io.IOBase]) -> bool:
    """Whether ``f`` is structurally not a torch checkpoint, judged without unpickling.

    Zip format: it must open, pass every member's CRC check and hold a complete ``data.pkl``.
    Legacy format: the pickles it holds must be complete. A file that cannot be opened is not
    judged here (torch's error says why).
    """
    if isinstance(f, io.IOBase):
        f.seek(0)
        return _stream_is_corrupt(f)
    try:
        with open(f, 'rb') as stream:
            return _stream_is_corrupt(stream)
    except OSError:
        return False


def checkpoint_is_complete(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is an existing, structurally complete torch checkpoint (judged without unpickling:
    a file cut short by a killed writer is not)."""
    return osp.isfile(path) and osp.getsize(path) > 0 and not _is_corrupt(path)


@contextlib.contextmanager
def _weights_only_guard(source: str, scan: Union[str, os.PathLike, io.IOBase]) -> Iterator[None]:
    """Allowlist in place around a weights-only load; a failure on a structurally broken file
    becomes CorruptCheckpointError, a refusal CheckpointSecurityError.

    ``scan`` is the file or buffer being read, inspected after a failure.
    """
    _refresh_allowlist()
    # Globals trusted through the environment apply to this load only (read now, so setting or
    # unsetting the variable takes effect at once); the context removes just what it added.
    already_allowed = set(torch.serialization.get_safe_globals())
    from_env = [entry for entry in _env_globals() if entry not in already_allowed]
    try:
        with torch.serialization.safe_globals(from_env):
            yield
    except Exception as err:
        # torch's reader fails on broken files with whatever error the broken bytes lead to
        if _is_corrupt(scan):
            raise CorruptCheckpointError(source, err) from err
        if not isinstance(err, pickle.UnpicklingError):
            raise
        detail = str(err)
        raise CheckpointSecurityError(source, _offending_globals(scan, detail), detail) from None


def safe_torch_load(f: Union[str, os.PathLike, io.IOBase],
                    map_location: Any = None,
                    source: Optional[str] = None) -> Any:
    """``torch.load(f, weights_only=True)`` with the allowlist.

    Raises:
        CheckpointSecurityError: the file holds globals outside the allowlist.
        CorruptCheckpointError: the file is truncated or corrupt.
    """
    with _weights_only_guard(source or str(f), f):
        return torch.load(f, map_location=map_location, weights_only=True)


# --- mmengine scheme loaders ---------------------------------------------------------------------
# Their names start with 'load_from_' because CheckpointLoader logs `name[10:]` as the backend.


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """Local file."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location)


def _load_url(url: str, map_location: Any, model_dir: Optional[str], progress: bool) -> Any:
    # mmengine goes through torch.hub.load_state_dict_from_url, whose weights_only defaults to False.
    cache_dir = model_dir if model_dir is not None else osp.join(torch.hub.get_dir(), 'checkpoints')
    cached_file = osp.join(cache_dir, osp.basename(urlparse(url).path))  # where torch.hub stores it
    with _weights_only_guard(url, cached_file):
        return torch.hub.load_state_dict_from_url(
            url, model_dir=model_dir, map_location=map_location, progress=progress, weights_only=True)


def load_from_safe_http(filename: str,
                        map_location: Any = None,
                        model_dir: Optional[str] = None,
                        progress: bool = os.isatty(0)) -> Any:
    """``http(s)://``; as mmengine's, rank 0 downloads first in distributed runs."""
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = _load_url(filename, map_location, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = _load_url(filename, map_location, model_dir, progress)
    return checkpoint


def load_from_safe_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://name`` (and the deprecated ``modelzoo://name``)."""
    model_name = filename.split('://', 1)[1]
    return load_from_safe_http(get_torchvision_models()[model_name], map_location=map_location)


def load_from_safe_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://name`` / ``openmmlab://name``, resolved through mmengine's model list."""
    model_name = filename.split('://', 1)[1]
    model_name = get_deprecated_model_names().get(model_name, model_name)
    model_url = get_external_models()[model_name]
    if model_url.startswith(('http://', 'https://')):
        return load_from_safe_http(model_url, map_location=map_location)
    return load_from_safe_local(osp.join(_get_mmengine_home(), model_url), map_location)


def load_from_safe_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://name``."""
    checkpoint = load_from_safe_http(get_mmcls_models()[filename[8:]], map_location=map_location)
    return _process_mmcls_checkpoint(checkpoint)


def load_from_safe_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://path`` (needs the ``pavi`` package)."""
    try:
        from pavi import modelcloud
    except ImportError as err:
        raise ImportError('Please install pavi to load checkpoint from modelcloud.') from err
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded_file = osp.join(tmp_dir, model.name)
        model.download(downloaded_file)
        return safe_torch_load(downloaded_file, map_location, source=filename)


def load_from_safe_ceph(filename: str, map_location: Any = None, backend: str = 'petrel') -> Any:
    """``s3://`` / ``petrel://`` through mmengine's file backend."""
    file_backend = get_file_backend(filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return safe_torch_load(buffer, map_location, source=filename)


# Same prefixes as mmengine 0.10.7 registers, so every scheme it knows is replaced.
_SCHEMES: dict[tuple[str, ...], Callable[..., Any]] = {
    ('',): load_from_safe_local,
    ('http://', 'https://'): load_from_safe_http,
    ('modelzoo://', 'torchvision://'): load_from_safe_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_safe_openmmlab,
    ('mmcls://',): load_from_safe_mmcls,
    ('pavi://',): load_from_safe_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_safe_ceph,
}


def install_safe_checkpoint_loading() -> None:
    """Allowlist the safe globals and register the weights-only loaders for every mmengine scheme.

    Idempotent: calling it again re-asserts the same state.
    """
    _refresh_allowlist()
    for prefixes, loader in _SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=list(prefixes), loader=loader, force=True)
