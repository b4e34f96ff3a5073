"""Sparsity-aware adaptation (SparseViT, Sec. 3.3): train one model for many pruning configurations.

Every training iteration samples one pruning ratio per search group (a W-MSA / SW-MSA pair of blocks, see
``SparseViT.search_space()``) and sets it on the image encoder, so the weights learn to work at every
sparsity the search may later pick. Ratios within a stage are sorted, because SparseViT keeps a prefix of
one window ranking per stage and so needs non-decreasing ratios there.

The hook touches the model only through SparseViT's public API (``search_space``,
``set_pruning_ratios``). Its random state goes into checkpoints, so a resumed run samples the same
sequence as an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..backbones.sparsevit import RatioSpec, expand_group_ratios

DEFAULT_RATIO_CHOICES = tuple(round(0.1 * i, 1) for i in range(9))  # 0.0, 0.1, ..., 0.8 as in the paper
RNG_STATE_KEY = 'sparsity_adaptation_rng'


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
    missing = [m for m in ('search_space', 'set_pruning_ratios') if not hasattr(encoder, m)]
    if missing:
        raise TypeError(f'the image encoder {type(encoder).__name__} has no {" / ".join(missing)}: '
                        f'SparsityAdaptationHook needs a SparseViT backbone')
    return encoder


class SparsityAdaptationHook(Hook):
    """Samples per-group pruning ratios of the image encoder before every training iteration.

    Args:
        ratio_choices: the ratios a group can take (uniformly sampled). Default 0.0, 0.1, ..., 0.8.
        eval_ratios: ratios set for validation and testing (a float or one list per stage, the
            backbone's format); None keeps whatever the model has.
        seed: seed of the sampler; None draws one from the OS (then resuming cannot reproduce it).
    """

    priority = 'NORMAL'

    def __init__(self, ratio_choices: Sequence[float] = DEFAULT_RATIO_CHOICES,
                 eval_ratios: Optional[RatioSpec] = 0.0, seed: Optional[int] = 0) -> None:
        choices = [float(r) for r in ratio_choices]
        bad = [r for r in choices if not 0.0 <= r < 1.0]
        if not choices or bad:
            raise ValueError(f'ratio_choices must be a non-empty list of ratios in [0, 1), got {ratio_choices!r}')
        self.ratio_choices = np.array(sorted(set(choices)))
        self.eval_ratios = eval_ratios
        self.rng = np.random.default_rng(seed)

    def sample(self, encoder: nn.Module) -> list[list[float]]:
        """One configuration: per stage, sorted ratios, one per group, expanded to blocks."""
        space = encoder.search_space()
        groups = [sorted(self.rng.choice(self.ratio_choices, size=len(stage.group_blocks)).tolist())
                  for stage in space]
        return expand_group_ratios(space, groups)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Union[dict, tuple, list, None] = None
                          ) -> None:
        encoder = find_image_encoder(runner.model)
        ratios = self.sample(encoder)
        encoder.set_pruning_ratios(ratios)
        flat = [r for stage in ratios for r in stage]
        runner.message_hub.update_scalar('train/mean_pruning_ratio', float(np.mean(flat)))

    def before_val_epoch(self, runner: Any) -> None:
        self._set_eval_ratios(runner)

    def before_test_epoch(self, runner: Any) -> None:
        self._set_eval_ratios(runner)

    def _set_eval_ratios(self, runner: Any) -> None:
        if self.eval_ratios is not None:
            find_image_encoder(runner.model).set_pruning_ratios(self.eval_ratios)

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[RNG_STATE_KEY] = self.rng.bit_generator.state

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get(RNG_STATE_KEY)
        if state is not None:
            self.rng.bit_generator.state = state
