"""Inference through captured CUDA graphs, one per input signature and model setting.

At Swin-T sizes a GPU finishes each kernel of SparseViT faster than the host can launch the next, so
eager latency measures Python and the dispatcher, not the GPU. A captured graph replays every kernel
of a forward with one launch. SparseViT's forward has fixed shapes for a fixed input shape and fixed
ratios and never synchronises with the host, so it can be captured; the window ranking stays
data-dependent inside the graph (``torch.topk`` runs on the device at every replay).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ['GraphedModule']

# graphs kept per module: each holds its own static input, outputs and memory pool
MAX_GRAPHS = 8


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    static_input: Tensor
    static_outputs: list[Tensor]


class GraphedModule:
    """Runs ``forward(x) -> list[Tensor]`` as a replayed CUDA graph.

    A graph is captured the first time a signature is seen: input shape, dtype and device, the
    autocast state, and ``key()`` (e.g. the pruning ratios, so :meth:`SparseViT.set_pruning_ratios`
    leads to a new capture on the next call). At most :data:`MAX_GRAPHS` graphs are kept (least recently
    used dropped). Outputs are copies, so a later replay never overwrites what a caller holds.

    Only for inference: call it with gradients disabled; the caller runs training forwards eagerly.

    Args:
        forward: the eager forward to capture.
        key: extra state the captured graph depends on (hashable once made a tuple by :meth:`signature`).
        warmup: eager runs on a side stream before capture (lazy initialisation, cuBLAS workspaces,
            SparseViT's index caches).
    """

    def __init__(self, forward: Callable[[Tensor], list[Tensor]], key: Callable[[], object] = lambda: None,
                 warmup: int = 2) -> None:
        self.forward = forward
        self.key = key
        self.warmup = warmup
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.captures = 0

    def signature(self, x: Tensor) -> tuple:
        device_type = x.device.type
        autocast = (torch.is_autocast_enabled(device_type),
                    torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None)
        return (tuple(x.shape), x.dtype, x.device, autocast, _hashable(self.key()))

    def __call__(self, x: Tensor) -> list[Tensor]:
        if not x.is_cuda:
            raise ValueError(f'CUDA graphs need a CUDA input, got a tensor on {x.device}')
        if torch.is_grad_enabled():
            raise RuntimeError('GraphedModule replays inference graphs only; call it under torch.no_grad() '
                               'or torch.inference_mode() (training forwards run eagerly)')
        signature = self.signature(x)
        captured = self.graphs.get(signature)
        if captured is None:
            captured = self._capture(x)
            self.graphs[signature] = captured
            if len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(signature)
        captured.static_input.copy_(x)
        captured.graph.replay()
        return [out.clone() for out in captured.static_outputs]

    def _capture(self, x: Tensor) -> _Captured:
        static_input = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.forward(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = list(self.forward(static_input))
        self.captures += 1
        return _Captured(graph, static_input, static_outputs)


def _hashable(value: object) -> object:
    """Lists (e.g. per-stage ratios) as tuples, recursively, so they can key a dict."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value
