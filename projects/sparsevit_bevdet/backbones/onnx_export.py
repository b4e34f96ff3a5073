"""ONNX export of an image encoder at fixed pruning ratios, and running it in onnxruntime.

SparseViT's forward has static shapes: for the input shape and ratios at export time the kept-window
count of every block is a constant, while which windows are kept is computed in the graph from each
input (scores and ONNX ``TopK``), so the exported model prunes data-dependently like the PyTorch one.

Needs the PyPI packages ``onnx``, ``onnxscript`` (torch's exporter) and ``onnxruntime``, pinned in
``requirements/stack.txt`` and installed by ``tools/install.sh``.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ['export_onnx', 'max_abs_errors', 'onnxruntime_session', 'run_onnxruntime']


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f'ONNX export needs the package {module!r} (pinned in requirements/stack.txt, '
                          f'installed by tools/install.sh): {err}') from err


def export_onnx(encoder: nn.Module, images: Tensor, output_names: Optional[Sequence[str]] = None) -> bytes:
    """Export ``encoder`` in eval mode at its current ratios for inputs of ``images``' shape and dtype.

    Args:
        encoder: the image encoder (a :class:`SparseViT` or any module ``(N, C, H, W) -> list of maps``).
        images: ``(N, C, H, W)`` example input; it fixes the shape, its values do not matter.
        output_names: names of the graph outputs (default ``output_0`` ...).

    Returns:
        The serialised ONNX model (weights included).
    """
    _require('onnx')
    _require('onnxscript')
    encoder.eval()
    with torch.no_grad():
        program = torch.onnx.export(encoder, (images,), dynamo=True, input_names=['images'],
                                    output_names=list(output_names) if output_names else None, verbose=False)
    return program.model_proto.SerializeToString()


def onnxruntime_session(model: Union[bytes, str], threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session of a serialised model or a model file; ``threads`` intra-op threads."""
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def run_onnxruntime(session: Any, images: Tensor) -> list[np.ndarray]:
    """Run the session's single input on ``images`` ``(N, C, H, W)``; returns the outputs in graph order."""
    return session.run(None, {session.get_inputs()[0].name: images.detach().cpu().numpy()})


def max_abs_errors(onnx_outputs: Sequence[np.ndarray], torch_outputs: Sequence[Tensor]) -> list[float]:
    """Per output: ``max |onnx - torch|``; raises ValueError when the counts or shapes differ."""
    if len(onnx_outputs) != len(torch_outputs):
        raise ValueError(f'{len(onnx_outputs)} ONNX outputs vs {len(torch_outputs)} PyTorch outputs')
    errors = []
    for i, (ours, ref) in enumerate(zip(onnx_outputs, torch_outputs)):
        ref = ref.detach().cpu().float().numpy()
        if ours.shape != ref.shape:
            raise ValueError(f'output {i}: ONNX shape {ours.shape} vs PyTorch shape {ref.shape}')
        errors.append(float(np.abs(ours.astype(np.float32) - ref).max()))
    return errors
