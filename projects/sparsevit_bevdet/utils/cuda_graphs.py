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
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

__all__ = ['GraphedModule']

# graphs kept per module: each holds its own static input, outputs and memory pool
MAX_GRAPHS = 8


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    static_inputs: tuple[Tensor, ...]
    static_outputs: list[Tensor]
    output_spec: TreeSpec


class GraphedModule:
    """Runs ``forward(*tensors)`` as a replayed CUDA graph; the outputs may be any nesting of lists, tuples and
    dicts of tensors (e.g. CenterHead's per-task dicts).

    A graph is captured the first time a signature is seen: the inputs' shapes, dtypes and device, the
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

    def __init__(self, forward: Callable[..., Any], key: Callable[[], object] = lambda: None,
                 warmup: int = 2) -> None:
        self.forward = forward
        self.key = key
        self.warmup = warmup
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.captures = 0

    def signature(self, *inputs: Tensor) -> tuple:
        device_type = inputs[0].device.type
        autocast = (torch.is_autocast_enabled(device_type),
                    torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None)
        shapes = tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)
        return (shapes, autocast, _hashable(self.key()))

    def __call__(self, *inputs: Tensor) -> Any:
        if not inputs:
            raise ValueError('GraphedModule needs at least one input tensor')
        for x in inputs:
            if not isinstance(x, Tensor) or not x.is_cuda:
                where = x.device if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f'CUDA graphs need CUDA tensor inputs, got {where}')
        if torch.is_grad_enabled():
            raise RuntimeError('GraphedModule replays inference graphs only; call it under torch.no_grad() '
                               'or torch.inference_mode() (training forwards run eagerly)')
        signature = self.signature(*inputs)
        captured = self.graphs.get(signature)
        if captured is None:
            captured = self._capture(inputs)
            self.graphs[signature] = captured
            if len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(signature)
        for static, x in zip(captured.static_inputs, inputs):
            static.copy_(x)
        captured.graph.replay()
        return tree_unflatten([out.clone() for out in captured.static_outputs], captured.output_spec)

    def _capture(self, inputs: tuple[Tensor, ...]) -> _Captured:
        static_inputs = tuple(x.clone() for x in inputs)
        device = static_inputs[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.forward(*static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs, spec = tree_flatten(self.forward(*static_inputs))
        self.captures += 1
        return _Captured(graph, static_inputs, static_outputs, spec)


def _hashable(value: object) -> object:
    """Lists (e.g. per-stage ratios) as tuples, recursively, so they can key a dict."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value
