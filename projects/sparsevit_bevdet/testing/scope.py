"""Keep mmengine's process-wide default scope from leaking between runs (tests, notebooks)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mmengine.registry import DefaultScope


@contextlib.contextmanager
def restored_default_scope() -> Iterator[None]:
    """Runners and ``init_default_scope`` make their scope the process-wide default; undo that on exit."""
    saved = DefaultScope._instance_dict.copy()
    try:
        yield
    finally:
        DefaultScope._instance_dict = saved
