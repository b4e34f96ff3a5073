"""Keep a validation loader's batches in memory, so that a search scoring many candidates on the same
samples decodes and resizes each sample's images once, not once per candidate.

The test pipeline is deterministic (no random augmentation at test time), so a cached batch is the batch
the loader would give again. The memory cost is every cached sample's preprocessed images (for the CPU demo:
6 x 3 x 96 x 264 float32, 1.8 MB per sample); on a real validation split, cache a proxy subset only.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any, Optional

__all__ = ['CachedLoader']


class CachedLoader:
    """Iterable over ``loader``'s batches: the first complete pass reads ``loader``, later passes replay it.

    Each replayed batch gets fresh copies of its ``data_samples`` (the model writes its predictions into
    them), while the ``inputs`` tensors are shared: mmengine's data preprocessors build new tensors from them
    rather than changing them in place. A pass that stops early caches nothing. ``dataset`` and every other
    attribute are the loader's (``ValLoop.run`` reads ``dataset`` to size the evaluation).
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.dataset = getattr(loader, 'dataset', None)
        self._batches: Optional[list[Any]] = None

    def __getattr__(self, name: str) -> Any:
        # the wrapped loader's other attributes (collate_fn, batch_size, ...), so code written for a
        # DataLoader keeps working
        if name == 'loader':
            raise AttributeError(name)
        return getattr(self.loader, name)

    @property
    def cached(self) -> bool:
        """Whether a complete pass is held in memory."""
        return self._batches is not None

    def __len__(self) -> int:
        return len(self._batches) if self._batches is not None else len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self._batches is not None:
            for batch in self._batches:
                yield _fresh(batch)
            return
        batches = []
        for batch in self.loader:
            batches.append(batch)
            yield _fresh(batch)
        self._batches = batches


def _fresh(batch: Any) -> Any:
    """``batch`` with its own copies of the data samples and the inputs container (tensors shared)."""
    if isinstance(batch, dict):
        return {key: copy.deepcopy(value) if key == 'data_samples' else _fresh_inputs(value)
                for key, value in batch.items()}
    return copy.deepcopy(batch)


def _fresh_inputs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _fresh_inputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh_inputs(v) for v in value]
    return value
