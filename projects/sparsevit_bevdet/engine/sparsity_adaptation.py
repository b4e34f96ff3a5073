"""Sparsity-aware adaptation (SparseViT, Sec. 3.3): train one model for many pruning configurations.

Every training iteration samples one pruning ratio per search group (a W-MSA / SW-MSA pair of blocks, see
``SparseViT.search_space()``) and sets it on the image encoder, so the weights learn to work at every
sparsity the search may later pick. Ratios within a stage are sorted, because SparseViT keeps a prefix of
one window ranking per stage and so needs non-decreasing ratios there. With ``sandwich_prob`` some
iterations train the densest or the sparsest configuration (the sandwich rule of BigNAS / OFA).

Each iteration's draw comes from a generator seeded with ``(seed, iteration)``: all DDP ranks draw the same
configuration, and a resumed run samples the same sequence as an uninterrupted one without any state in
the checkpoint.

The hook only ever undoes what it did: validation, testing and the end of training get back the ratios the
encoder had before the hook's first sample (or explicit ``eval_ratios``); a model the hook has not changed
(test-only runs, a search candidate) is evaluated as it is set.

The hook touches the model only through SparseViT's public API (``search_space``,
``set_pruning_ratios``, ``pruning_ratios``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..backbones.sparsevit import RatioSpec, StageSearchSpace, expand_group_ratios

DEFAULT_RATIO_CHOICES = tuple(round(0.1 * i, 1) for i in range(9))  # 0.0, 0.1, ..., 0.8 as in the paper


def find_image_encoder(model: nn.Module) -> nn.Module:
    """The SparseViT of a detector: ``model.image_encoder``, else ``img_backbone`` / ``backbone``."""
    if is_model_wrapper(model):
        model = model.module
    for name in ('image_encoder', 'img_backbone', 'backbone'):
        encoder = getattr(model, name, None)
        if encoder is not None:
            break
    else:
        raise TypeError(f'{type(model).__name__} has no image_encoder, img_backbone or backbone attribute')
    missing = [m for m in ('search_space', 'set_pruning_ratios', 'pruning_ratios') if not hasattr(encoder, m)]
    if missing:
        raise TypeError(f'the image encoder {type(encoder).__name__} has no {" / ".join(missing)}: '
                        f'SparsityAdaptationHook needs a SparseViT backbone')
    return encoder


class SparsityAdaptationHook(Hook):
    """Samples per-group pruning ratios of the image encoder before every training iteration.

    The configuration of iteration ``i`` is drawn from ``np.random.default_rng([seed, i])``, so it is the
    same on every rank and after a resume. With probability ``sandwich_prob`` it is the densest (every group
    at ``min(ratio_choices)``) or the sparsest (every group at ``max(ratio_choices)``), each with half that
    probability; otherwise every group draws uniformly from ``ratio_choices`` (sorted within a stage).

    The hook only undoes what it did. Its first sample after a restore remembers the encoder's ratios
    (those of the config or command line). ``before_val_epoch``, ``before_test_epoch`` and ``after_train``
    restore them, or set ``eval_ratios`` if given, but only if the hook has changed the ratios since the
    last restore; otherwise the model is left alone, so test-only runs and a search that sets a candidate
    and runs the val loop evaluate exactly what was set. The next training iteration samples again.

    Args:
        ratio_choices: the ratios a group can take. Default 0.0, 0.1, ..., 0.8.
        eval_ratios: ratios to evaluate with after the hook has sampled (a float or one list per stage, the
            backbone's format); None (default) restores the ratios the encoder had before sampling.
        seed: non-negative int; with the iteration number it seeds each iteration's draw.
        sandwich_prob: probability in [0, 1] of training the densest or the sparsest configuration.
    """

    priority = 'NORMAL'

    def __init__(self, ratio_choices: Sequence[float] = DEFAULT_RATIO_CHOICES,
                 eval_ratios: Optional[RatioSpec] = None, seed: int = 0, sandwich_prob: float = 0.0) -> None:
        choices = [float(r) for r in ratio_choices]
        bad = [r for r in choices if not 0.0 <= r < 1.0]
        if not choices or bad:
            raise ValueError(f'ratio_choices must be a non-empty list of ratios in [0, 1), got {ratio_choices!r}')
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative int (each iteration draws from (seed, iteration)), '
                             f'got {seed!r}')
        if not 0.0 <= sandwich_prob <= 1.0:
            raise ValueError(f'sandwich_prob must be a probability in [0, 1], got {sandwich_prob!r}')
        self.ratio_choices = np.array(sorted(set(choices)))
        self.eval_ratios = eval_ratios
        self.seed = int(seed)
        self.sandwich_prob = float(sandwich_prob)
        self._ratios_before: Optional[list[list[float]]] = None  # set while the hook's change is not undone

    def sample(self, space: Sequence[StageSearchSpace], iteration: int) -> list[list[float]]:
        """The configuration of ``iteration``: per stage, sorted ratios, one per group, expanded to blocks."""
        rng = np.random.default_rng([self.seed, iteration])
        draw = rng.random()
        if draw < self.sandwich_prob:
            extreme = self.ratio_choices[0] if draw < self.sandwich_prob / 2 else self.ratio_choices[-1]
            groups = [[float(extreme)] * len(stage.group_blocks) for stage in space]
        else:
            groups = [sorted(rng.choice(self.ratio_choices, size=len(stage.group_blocks)).tolist())
                      for stage in space]
        return expand_group_ratios(space, groups)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Union[dict, tuple, list, None] = None
                          ) -> None:
        encoder = find_image_encoder(runner.model)
        if self._ratios_before is None:
            self._ratios_before = encoder.pruning_ratios
        ratios = self.sample(encoder.search_space(), runner.iter)
        encoder.set_pruning_ratios(ratios)
        flat = [r for stage in ratios for r in stage]
        runner.message_hub.update_scalar('train/mean_pruning_ratio', float(np.mean(flat)))

    def before_val_epoch(self, runner: Any) -> None:
        self._undo(runner)

    def before_test_epoch(self, runner: Any) -> None:
        self._undo(runner)

    def after_train(self, runner: Any) -> None:
        self._undo(runner)

    def _undo(self, runner: Any) -> None:
        """Restore the remembered ratios (or set ``eval_ratios``) if the hook changed them since the last time."""
        if self._ratios_before is None:
            return
        ratios = self._ratios_before if self.eval_ratios is None else self.eval_ratios
        find_image_encoder(runner.model).set_pruning_ratios(ratios)
        self._ratios_before = None
