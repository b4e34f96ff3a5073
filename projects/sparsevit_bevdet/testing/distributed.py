"""A hook for multi-process tests: what each rank trained with, written to one file per rank.

``<work_dir>/ratios_rank<r>.jsonl`` gets one line per training iteration, ``{"iter": i, "ratios": [[...], ...]}``
(the image encoder's pruning ratios as the iteration's forward sees them), and one line after training,
``{"after_train_iter": n, "params_sha256": "..."}`` (a digest of every parameter: DDP keeps them identical on
all ranks). Import this module through the config's ``custom_imports`` to register the hook.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mmdet3d.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..engine import find_image_encoder

__all__ = ['RankRatioLogHook']


@HOOKS.register_module()
class RankRatioLogHook(Hook):
    """Appends each training iteration's pruning ratios and, after training, a parameter digest per rank."""

    priority = 'LOW'  # after SparsityAdaptationHook (NORMAL) has set the iteration's ratios

    def _write(self, runner: Any, record: dict) -> None:
        path = Path(runner.work_dir) / f'ratios_rank{get_rank()}.jsonl'
        with path.open('a') as f:
            f.write(json.dumps(record) + '\n')

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._write(runner, dict(iter=runner.iter, ratios=find_image_encoder(runner.model).pruning_ratios))

    def after_train(self, runner: Any) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        self._write(runner, dict(after_train_iter=runner.iter, params_sha256=digest.hexdigest()))
