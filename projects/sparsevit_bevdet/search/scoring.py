"""How a search scores a candidate: the config's evaluator on the validation split or on an evenly spread
proxy subset of it, through mmengine's ``ValLoop``; and what a score depends on (the checkpoint's hash, the
evaluation set), for the states' fingerprints."""
from __future__ import annotations

import copy
import hashlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..backbones.sparsevit import StageSearchSpace, expand_group_ratios
from .cached_loader import CachedLoader
from .options import SearchError
from .state import GroupRatios

if TYPE_CHECKING:
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner, ValLoop
    from torch import nn

__all__ = ['MetricNotProducedError', 'ValScore', 'check_metric_key', 'encoder_input', 'eval_set_source',
           'file_sha256', 'proxy_indices', 'proxy_loop', 'uniform']


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            digest.update(chunk)
    return digest.hexdigest()


def eval_set_source(ds_cfg: Any) -> dict:
    """Where the validation set is read from, for the state's fingerprint: its annotation file (nuScenes infos,
    COCO json), or for a set without one (mmseg's Cityscapes) its data root and prefixes."""
    root = ds_cfg.get('data_root') or ''
    if ds_cfg.get('ann_file'):
        return dict(ann_file=os.path.abspath(os.path.join(root, ds_cfg.ann_file)))
    return dict(data_root=os.path.abspath(root), data_prefix=dict(ds_cfg.get('data_prefix') or {}))


def proxy_indices(num_samples: int, proxy_samples: int) -> list[int]:
    """``proxy_samples`` dataset indices evenly spread over ``range(num_samples)`` (deterministic)."""
    if proxy_samples >= num_samples:
        raise SearchError(f'<proxy_samples> {proxy_samples} is not fewer than the {num_samples} validation samples; '
                          f'drop it to score on the full split')
    import numpy as np

    return sorted({int(i) for i in np.linspace(0, num_samples - 1, proxy_samples).round()})


def proxy_loop(runner: Runner, cfg: Config, indices: list[int], tokens: Optional[list[str]]) -> ValLoop:
    """A ``ValLoop`` over the validation samples ``indices`` (mmengine's dataset ``indices``) whose metric
    evaluates exactly those samples (``sample_tokens``). With ``tokens=None`` a metric without that option
    evaluates whatever it is given (enough to learn its keys)."""
    from mmdet3d.registry import METRICS
    from mmengine.runner import ValLoop

    loader = copy.deepcopy(cfg.val_dataloader)
    loader.dataset.indices = indices
    evaluator = copy.deepcopy(cfg.val_evaluator)
    for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
        metric_cls = METRICS.get(metric['type'])
        if metric_cls is not None and 'sample_tokens' in inspect.signature(metric_cls).parameters:
            if tokens is not None:
                metric['sample_tokens'] = tokens
        elif tokens is not None:
            raise SearchError(f'<proxy_samples> needs a metric that can evaluate a subset of the split (a '
                              f'sample_tokens option, as EgoFrameNuScenesMetric has); {metric["type"]} has none')
    return ValLoop(runner, loader, evaluator)


class MetricNotProducedError(SearchError):
    """The evaluator does not produce the metric a search was asked to maximise."""


def check_metric_key(runner: Runner, cfg: Config, metric: str, log: Callable[[str], None]) -> None:
    """Refuse a metric the evaluator does not produce (:class:`MetricNotProducedError`), before any work: its
    keys come from evaluating one validation sample (a metric's keys depend on its options, e.g. CocoMetric's
    ``metric`` list)."""
    dataset = runner.val_loop.dataloader.dataset
    info = dataset.get_data_info(0)
    token = info.get('token') if isinstance(info, dict) else None
    log(f'checking that the evaluator produces {metric!r} on one validation sample')
    keys = proxy_loop(runner, cfg, [0], [token] if token is not None else None).run()
    if metric not in keys:
        raise MetricNotProducedError(f'<metric> {metric!r} is not a key the evaluator produces; its keys (from one '
                                     f'validation sample) are {sorted(keys)}. Nothing was searched.')


def encoder_input(inputs: Any) -> torch.Tensor:
    """What the image encoder sees for one validation sample, at the size the pipeline produces: the N cameras
    ``(N, 3, H, W)`` of BEVDet's ``inputs['imgs']`` ``(B, N, 3, H, W)``, or the first image ``(1, 3, H, W)`` of an
    mmdet / mmseg batch ``(B, 3, H, W)``."""
    import torch

    imgs = inputs.get('imgs') if isinstance(inputs, dict) else inputs
    if isinstance(imgs, torch.Tensor) and imgs.dim() == 5:
        return imgs[0]
    if isinstance(imgs, torch.Tensor) and imgs.dim() == 4:
        return imgs[:1]
    raise TypeError(f'the data preprocessor gave inputs of type {type(inputs).__name__}'
                    f'{"" if not isinstance(imgs, torch.Tensor) else f" with shape {tuple(imgs.shape)}"}; the search '
                    f'needs images (B, 3, H, W) or multi-view images inputs["imgs"] (B, N, 3, H, W)')


def uniform(space: Sequence[StageSearchSpace], ratio: float) -> GroupRatios:
    """Every search group at ``ratio``."""
    return tuple((float(ratio),) * len(s.group_blocks) for s in space)


class ValScore:
    """A candidate's score: the encoder set to the candidate's ratios, ``loop`` run, ``metric`` read.

    Args:
        encoder: the detector's SparseViT (``set_pruning_ratios``).
        space: its search space (candidates hold one ratio per group).
        loop: the validation loop to run (full split or a proxy subset).
        metric: the evaluator key returned as the score.
        cache_inputs: keep the loop's preprocessed batches in memory after the first pass
            (:class:`CachedLoader`; the test pipeline is deterministic).
    """

    def __init__(self, encoder: nn.Module, space: Sequence[StageSearchSpace], loop: ValLoop, metric: str,
                 cache_inputs: bool = False) -> None:
        if cache_inputs and not isinstance(loop.dataloader, CachedLoader):
            loop.dataloader = CachedLoader(loop.dataloader)
        self.encoder, self.space, self.loop, self.metric = encoder, list(space), loop, metric

    def __call__(self, candidate: GroupRatios) -> float:
        self.encoder.set_pruning_ratios(expand_group_ratios(self.space, candidate))
        metrics = self.loop.run()
        if self.metric not in metrics:
            raise KeyError(f'metric {self.metric!r} not among the evaluator results: {sorted(metrics)}')
        return float(metrics[self.metric])
