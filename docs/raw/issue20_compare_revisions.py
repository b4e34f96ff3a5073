"""Issue 20: SparseViT before the rework (git dc2ae65) against the working tree, in one process.

Prints the operators dispatched per forward (``utils/op_count``; mmdet's Swin, old static path, new path,
dense and 60 %) and the CPU latency of 6 x 3 x 256 x 704 at 2 threads, interleaved (medians of 7 rounds after
one warm-up). Run from the repository root::

    .venv/bin/python docs/raw/issue20_compare_revisions.py
"""
from __future__ import annotations

import importlib.util
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmdet.models.backbones import SwinTransformer

import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin)
from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.utils.op_count import count_dispatched_ops

OLD_REVISION = 'dc2ae65'


def load_old_module():
    source = subprocess.run(['git', 'show', f'{OLD_REVISION}:projects/sparsevit_bevdet/backbones/sparsevit.py'],
                            capture_output=True, text=True, check=True).stdout
    path = Path('/tmp/old_sparsevit.py')
    path.write_text(source)
    spec = importlib.util.spec_from_file_location('projects.sparsevit_bevdet.backbones.old_sparsevit', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        model(x)  # caches first
    return sum(count_dispatched_ops(lambda: model(x)).values())


def runner(model: torch.nn.Module, ratio: float, x: torch.Tensor, static: bool | None = None) -> Callable[[], None]:
    def call() -> None:
        model.set_pruning_ratios(ratio)
        if static is not None:
            model.static_shapes = static
        with torch.inference_mode():
            model(x)
    return call


def main() -> None:
    old = load_old_module()
    torch.set_num_threads(2)
    for shape, out_indices in (((1, 3, 672, 672), (0, 1, 2, 3)), ((1, 3, 256, 704), (2, 3))):
        x = torch.randn(shape)
        swin = SwinTransformer(drop_path_rate=0.0, out_indices=out_indices)
        swin.eval()
        new = SparseViT(arch='tiny', drop_path_rate=0.0, out_indices=out_indices).eval()
        prev = old.SparseViT(arch='tiny', drop_path_rate=0.0, out_indices=out_indices, static_shapes=True).eval()
        row = {'mmdet': ops(swin, x)}
        for ratio in (0.0, 0.6):
            new.set_pruning_ratios(ratio)
            prev.set_pruning_ratios(ratio)
            row[f'new r{ratio}'], row[f'old static r{ratio}'] = ops(new, x), ops(prev, x)
        print('ops', shape, row, flush=True)

    torch.manual_seed(0)
    new = SparseViT(arch='tiny', drop_path_rate=0.0, out_indices=(2, 3)).eval()
    prev = old.SparseViT(arch='tiny', drop_path_rate=0.0, out_indices=(2, 3)).eval()
    prev.load_state_dict(new.state_dict())
    x = torch.randn(6, 3, 256, 704)
    variants = {'new dense': runner(new, 0.0, x), 'new 60%': runner(new, 0.6, x),
                'old dense': runner(prev, 0.0, x, False), 'old dynamic 60%': runner(prev, 0.6, x, False),
                'old static 60%': runner(prev, 0.6, x, True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(0)
    for round_idx in range(8):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            variants[name]()
            if round_idx:
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f'{name:18s} {1e3 * statistics.median(seconds):8.1f} ms')


if __name__ == '__main__':
    main()
