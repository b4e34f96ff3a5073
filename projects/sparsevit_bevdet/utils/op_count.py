"""Count the ATen operators a call dispatches (the host-side cost of an eager forward on a GPU).

On a GPU that finishes each kernel faster than the host launches the next, eager latency follows the
number of operators, not the FLOPs. Views and allocations launch no kernel and are not counted.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['count_dispatched_ops']

# operators that allocate or alias without launching a kernel (views are recognised by their schema)
_NO_KERNEL = {'detach', 'alias', 'empty', 'empty_strided', 'new_empty', 'new_empty_strided', 'lift_fresh',
              '_unsafe_view', 'unbind', 'split', 'split_with_sizes', 'chunk'}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in _NO_KERNEL:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_dispatched_ops(call: Callable[[], object]) -> Counter[str]:
    """Operators ``call()`` dispatches below autograd, by name, views and allocations excluded.

    Run it once before counting so that lazily built caches are not counted.
    """
    with torch.no_grad(), _OpCounter() as counter:
        call()
    return counter.counts
