"""A tiny regression task to exercise the entry points, checkpoints and evaluation in seconds on CPU.

``configs/toy/toy_regression.py`` uses these; they are registered in mmdet3d's registries so the
config runs under ``default_scope='mmdet3d'`` like the real ones.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmdet3d.registry import DATASETS, METRICS, MODELS
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset


@DATASETS.register_module()
class ToyRegressionDataset(Dataset):
    """Samples ``y = x @ w + b + noise`` with ``x ~ N(0, I)``; ``w`` and ``b`` come from ``task_seed``.

    Args:
        num_samples: number of samples.
        in_channels: dimension of ``x``.
        noise: standard deviation of the additive noise on ``y``.
        task_seed: seed of the (shared) linear map, so train and val draw from the same task.
        seed: seed of the samples themselves (use different ones for train and val).
        metainfo: extra entries merged into :attr:`METAINFO`.
    """

    METAINFO: dict = dict(classes=('target',), task='toy_regression')

    def __init__(self,
                 num_samples: int = 64,
                 in_channels: int = 4,
                 noise: float = 0.01,
                 task_seed: int = 0,
                 seed: int = 0,
                 metainfo: Optional[dict] = None) -> None:
        task = torch.Generator().manual_seed(task_seed)
        weight = torch.randn(in_channels, 1, generator=task)
        bias = torch.randn(1, generator=task)
        samples = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(num_samples, in_channels, generator=samples)
        self.targets = self.inputs @ weight + bias + noise * torch.randn(num_samples, 1, generator=samples)
        self._metainfo = {**self.METAINFO, **(metainfo or {})}

    @property
    def metainfo(self) -> dict:
        """Saved by the runner into checkpoints as ``meta['dataset_meta']``."""
        return dict(self._metainfo)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.inputs[index], data_samples=self.targets[index])


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """Two-layer MLP with a BatchNorm (so checkpoints hold buffers, not only parameters)."""

    def __init__(self,
                 in_channels: int = 4,
                 hidden_channels: int = 16,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden_channels),
            nn.BatchNorm1d(hidden_channels),
            nn.ReLU(),
            nn.Linear(hidden_channels, 1),
        )

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[torch.Tensor] = None,
                mode: str = 'tensor') -> Union[torch.Tensor, dict, list]:
        """``mode`` is mmengine's: 'loss' -> dict of losses, 'predict' -> per-sample dicts, 'tensor'."""
        preds = self.net(inputs)
        if mode == 'tensor':
            return preds
        if data_samples is None:
            raise ValueError(f"mode='{mode}' needs data_samples (the regression targets)")
        if mode == 'loss':
            return dict(loss_mse=F.mse_loss(preds, data_samples))
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(preds.detach(), data_samples)]
        raise ValueError(f"Invalid mode '{mode}': expected 'loss', 'predict' or 'tensor'")


@METRICS.register_module()
class ToyRegressionMetric(BaseMetric):
    """Mean squared error and mean absolute error over the whole split (reported as ``toy/mse``...)."""

    default_prefix: Optional[str] = 'toy'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            error = (sample['pred'] - sample['target']).float().cpu().numpy()
            self.results.append(error)

    def compute_metrics(self, results: list) -> dict:
        errors = np.concatenate(results)
        return dict(mse=float(np.mean(errors ** 2)), mae=float(np.mean(np.abs(errors))))
