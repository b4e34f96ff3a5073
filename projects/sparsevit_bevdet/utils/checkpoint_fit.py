"""Refuse to evaluate a model on weights that do not fit it.

mmengine loads checkpoints non-strictly: a checkpoint of another model, with tensors of another shape or
with keys under another prefix only logs "missing keys / size mismatch" and the model runs on its random
initialisation. :func:`check_state_dict_fits` compares a state dict with a model (names *and* shapes) and
raises :class:`CheckpointMismatchError` naming the file, the number of missing / unexpected / mismatched
keys and a few examples, unless the caller asked for a partial load explicitly (then it logs the same
report as a warning).

:class:`CheckpointFitHook` does this in mmengine's ``after_load_checkpoint`` (after other hooks such as
``EMAHook`` have rewritten the checkpoint), so every ``runner.load_checkpoint`` of a runner with the hook
(``load_from`` in ``runner.test()`` too) is checked; :func:`add_checkpoint_fit_hook` puts it in a config.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

__all__ = ['ALLOW_PARTIAL_HINT', 'CheckpointFitHook', 'CheckpointMismatchError', 'KeyReport', 'add_checkpoint_fit_hook',
           'check_state_dict_fits', 'compare_state_dict', 'load_fitting_checkpoint', 'state_dict_of']

# what every tool's error tells the user to add when a partial load is really meant
ALLOW_PARTIAL_HINT = '--allow-partial-load'
# keys a checkpoint may lack: mmengine ignores BatchNorm's counter when loading as well
_IGNORED_MISSING = re.compile(r'(^|\.)num_batches_tracked$')
_EXAMPLES = 3
# mmengine's default revise_keys of Runner.load_checkpoint / load_checkpoint
_DDP_PREFIX = re.compile(r'^module\.')


class CheckpointMismatchError(RuntimeError):
    """The weights of a checkpoint do not fit the model; nothing was evaluated."""


@dataclass
class KeyReport:
    """How a state dict differs from a model's: names missing from it, names the model lacks, shape clashes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, checkpoint, model)
    model_keys: int = 0  # those a checkpoint must hold
    checkpoint_keys: int = 0

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, prefix_hint: str = '') -> str:
        def examples(names: Sequence[str]) -> str:
            shown = ', '.join(names[:_EXAMPLES])
            return f'{shown}{", ..." if len(names) > _EXAMPLES else ""}'

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of the model's {self.model_keys} keys missing "
                         f'({examples(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} of its {self.checkpoint_keys} keys unexpected '
                         f'({examples(self.unexpected)})')
        if self.mismatched:
            shown = [f'{n} {list(c)} vs model {list(m)}' for n, c, m in self.mismatched]
            parts.append(f'{len(self.mismatched)} with another shape ({examples(shown)})')
        return '; '.join(parts) + prefix_hint


def state_dict_of(checkpoint: Any, source: str) -> Mapping[str, Any]:
    """The ``state_dict`` of a loaded checkpoint (or the checkpoint itself when it is one)."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        inner = f' with a state_dict of {type(state).__name__}' if state is not None else ''
        raise CheckpointMismatchError(f'{source} holds no state dict of weights (got {type(checkpoint).__name__}'
                                      f'{inner})')
    return state


def _unwrap(model: nn.Module) -> nn.Module:
    # the modules mmengine's load_state_dict descends into before loading
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> KeyReport:
    """Compare names and shapes, after mmengine's default ``^module.`` key revision."""
    expected = {k: tuple(v.shape) for k, v in _unwrap(model).state_dict().items()}
    given = {_DDP_PREFIX.sub('', k): tuple(getattr(v, 'shape', ())) for k, v in state_dict.items()}
    return KeyReport(
        missing=[k for k in expected if k not in given and not _IGNORED_MISSING.search(k)],
        unexpected=[k for k in given if k not in expected],
        mismatched=[(k, given[k], shape) for k, shape in expected.items() if k in given and given[k] != shape],
        model_keys=sum(not _IGNORED_MISSING.search(k) for k in expected), checkpoint_keys=len(given))


def _prefix_hint(report: KeyReport) -> str:
    """Say so when the keys would fit once a leading name is removed or added (a checkpoint of a sub-model
    such as a bare backbone, or of a model wrapped under another name)."""
    if not report.unexpected or not report.missing:
        return ''
    heads = Counter(k.split('.', 1)[0] for k in report.unexpected if '.' in k)
    missing = set(report.missing)
    for head, _ in heads.most_common(2):
        stripped = sum(k.split('.', 1)[1] in missing for k in report.unexpected if k.startswith(f'{head}.'))
        if stripped >= len(missing) / 2:
            return f'. Its keys carry the extra prefix {head + "."!r} (a checkpoint of a wrapped or other model)'
    model_heads = Counter(k.split('.', 1)[0] for k in report.missing if '.' in k)
    unexpected = set(report.unexpected)
    for head, _ in model_heads.most_common(2):
        added = sum(k.split('.', 1)[1] in unexpected for k in report.missing if k.startswith(f'{head}.'))
        if added >= len(unexpected) / 2:
            return (f'. Its keys lack the prefix {head + "."!r} of this model (a checkpoint of the {head} alone? '
                    'convert it or load it through init_cfg)')
    return ''


def check_state_dict_fits(model: nn.Module, state_dict: Mapping[str, Any], source: str,
                          allow_partial: bool = False, logger: Any = 'current') -> KeyReport:
    """Raise :class:`CheckpointMismatchError` when ``state_dict`` does not fit ``model`` exactly.

    With ``allow_partial`` the same report is logged as a warning instead (what loads, loads).
    """
    report = compare_state_dict(model, state_dict)
    if report.fits:
        return report
    what = (f'{source} does not fit the model ({type(_unwrap(model)).__name__}): '
            f'{report.describe(_prefix_hint(report))}.')
    if report.model_keys and len(report.missing) + len(report.mismatched) == report.model_keys:
        what += ' None of its weights would load: is it a checkpoint of this config?'
    if allow_partial:
        print_log(f'{what} Loading what fits ({ALLOW_PARTIAL_HINT}); the rest keeps its initialisation.',
                  logger=logger, level=logging.WARNING)
        return report
    raise CheckpointMismatchError(
        f'{what} Refusing to evaluate a model on weights that do not fit it; pass {ALLOW_PARTIAL_HINT} if a '
        'partial load is really meant.')


@HOOKS.register_module()  # the root registry: found from mmdet3d, mmdet and mmseg scopes alike
class CheckpointFitHook(Hook):
    """Check every checkpoint the runner loads against its model (see the module docstring).

    Args:
        allow_partial: log a mismatch as a warning instead of refusing.
        source: the checkpoint's name for the message (the hook is not told which file was read).
    """

    priority = 'VERY_LOW'  # after hooks that rewrite the checkpoint (EMAHook)

    def __init__(self, allow_partial: bool = False, source: Optional[str] = None) -> None:
        self.allow_partial = allow_partial
        self.source = source

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        source = self.source or 'the checkpoint loaded by the runner'
        check_state_dict_fits(runner.model, state_dict_of(checkpoint, source), source, self.allow_partial,
                              logger=runner.logger)


def add_checkpoint_fit_hook(cfg: Any, source: Optional[str], allow_partial: bool = False) -> None:
    """Append :class:`CheckpointFitHook` to ``cfg.custom_hooks`` (a config of any OpenMMLab scope)."""
    hooks = list(cfg.get('custom_hooks') or [])
    hooks = [h for h in hooks if h.get('type') != 'CheckpointFitHook']
    hooks.append(dict(type='CheckpointFitHook', allow_partial=allow_partial, source=source))
    cfg.custom_hooks = hooks


def load_fitting_checkpoint(model: nn.Module, filename: str, allow_partial: bool = False,
                            map_location: Any = 'cpu') -> dict:
    """Read ``filename`` through mmengine's (safe) checkpoint loaders, check that it fits ``model`` (see
    :func:`check_state_dict_fits`) and load it, for tools that build a model without a runner. Returns the
    checkpoint."""
    from mmengine.runner import CheckpointLoader
    from mmengine.runner.checkpoint import load_state_dict

    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    state_dict = state_dict_of(checkpoint, filename)
    check_state_dict_fits(model, state_dict, filename, allow_partial)
    load_state_dict(_unwrap(model), {_DDP_PREFIX.sub('', k): v for k, v in state_dict.items()}, strict=False)
    return checkpoint
