"""Stop a training run whose loss is no longer a number, instead of letting it finish on NaN weights.

mmengine keeps training through a NaN loss: the optimiser writes NaN into every weight, the run ends normally
and its checkpoints evaluate to nothing (the COCO ablation's token fine-tune did exactly that, noticed only
when its evaluation produced no detections). :class:`FiniteLossHook` raises after ``patience`` consecutive
iterations whose total loss is NaN or infinite, naming the iteration and the loss terms that are not finite,
before the checkpoint hook of that iteration saves the broken weights.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from mmengine.hooks import Hook

__all__ = ['FiniteLossHook', 'NonFiniteLossError', 'add_finite_loss_hook']


class NonFiniteLossError(FloatingPointError):
    """The training loss stayed NaN / infinite for the hook's ``patience`` iterations."""


def _value(value: Any) -> Optional[float]:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


class FiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` when the training loss is not finite for ``patience`` iterations in a row.

    Args:
        patience: consecutive non-finite iterations tolerated before stopping (mixed-precision training with a
            dynamic loss scale may see an occasional overflowing step, which the scaler skips).
        key: the entry of the train step's log variables that holds the total loss.
    """

    priority = 'ABOVE_NORMAL'  # before CheckpointHook (NORMAL) saves the iteration's weights

    def __init__(self, patience: int = 3, key: str = 'loss') -> None:
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f'FiniteLossHook: patience must be an int >= 1, got {patience!r}')
        self.patience, self.key = patience, key
        self._streak = 0

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or self.key not in outputs:
            return
        total = _value(outputs[self.key])
        if total is None or math.isfinite(total):
            self._streak = 0
            return
        self._streak += 1
        if self._streak < self.patience:
            runner.logger.warning(f'FiniteLossHook: loss is {total} at iteration {runner.iter + 1} '
                                  f'({self._streak} of {self.patience} tolerated)')
            return
        terms = {name: _value(value) for name, value in outputs.items()}
        bad = ', '.join(f'{name}={value}' for name, value in terms.items()
                        if value is not None and not math.isfinite(value))
        raise NonFiniteLossError(
            f'training loss is not finite for {self._streak} consecutive iterations (up to iteration '
            f'{runner.iter + 1} of {runner.max_iters}, work dir {runner.work_dir}): {bad}. The weights are no longer '
            'usable; the last checkpoint before this point is. Lower the learning rate, check the data and the '
            'weights the run started from, or resume from that checkpoint.')


def add_finite_loss_hook(cfg: Any, patience: int = 3) -> None:
    """Append :class:`FiniteLossHook` to ``cfg.custom_hooks`` unless the config already has one (its settings win)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') == 'FiniteLossHook' for hook in hooks):
        hooks.append(dict(type='FiniteLossHook', patience=patience))
    cfg.custom_hooks = hooks
