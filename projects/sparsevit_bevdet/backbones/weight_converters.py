"""Swin checkpoint formats -> SparseViT / mmdet ``SwinTransformer`` parameter names.

Three formats exist in the wild:

* **mmdet** (what SparseViT uses): ``patch_embed.projection``, ``stages.i.blocks.j.attn.w_msa.*``,
  ``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.i.downsample`` with ``nn.Unfold`` channel order.
* **official** (Microsoft's Swin release): ``patch_embed.proj``, ``layers.i.blocks.j.attn.*``,
  ``mlp.fc1`` / ``mlp.fc2``, ``layers.i.downsample`` with channels ordered ``x0, x1, x2, x3``.
* **timm** (>= 0.9): as official, but the patch merging sits at the start of the next stage
  (``layers.{i+1}.downsample``) and the head is ``head.fc``.

:func:`convert_official_swin` is what ``convert_weights=True`` applies; :func:`convert_timm_swin`
takes a timm state dict (also accepts the official layout); ``tools/convert_swin_weights.py`` runs
either on a file.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from ..utils.atomic_io import atomic_open

# official concatenates the 2x2 patch as (0,0), (1,0), (0,1), (1,1); unfold orders (0,0), (0,1), (1,0), (1,1)
_UNFOLD_ORDER = [0, 2, 1, 3]


def _reorder_reduction(weight: Tensor) -> Tensor:
    out_channels, in_channels = weight.shape
    w = weight.reshape(out_channels, 4, in_channels // 4)[:, _UNFOLD_ORDER, :]
    return w.transpose(1, 2).reshape(out_channels, in_channels)


def _reorder_norm(param: Tensor) -> Tensor:
    channels = param.shape[0]
    return param.reshape(4, channels // 4)[_UNFOLD_ORDER, :].transpose(0, 1).reshape(channels)


def convert_official_swin(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Official Swin release keys -> mmdet/SparseViT keys (without a ``backbone.`` prefix).

    The classification head is dropped; the final ``norm`` is kept under its name (it has no
    counterpart and is reported as unexpected when loading).
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head'):
            continue
        new_key, new_value = key, value
        if key.startswith('layers.'):
            if '.attn.' in key:
                new_key = key.replace('.attn.', '.attn.w_msa.')
            elif '.mlp.fc1.' in key:
                new_key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.')
            elif '.mlp.fc2.' in key:
                new_key = key.replace('.mlp.fc2.', '.ffn.layers.1.')
            elif '.downsample.reduction.' in key:
                new_value = _reorder_reduction(value)
            elif '.downsample.norm.' in key:
                new_value = _reorder_norm(value)
            new_key = new_key.replace('layers.', 'stages.', 1)
        elif key.startswith('patch_embed.proj.'):
            new_key = key.replace('patch_embed.proj.', 'patch_embed.projection.')
        if new_key.endswith('attn_mask'):
            continue  # a buffer of some releases, recomputed by the model
        out[new_key] = new_value
    return out


def convert_timm_swin(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """timm Swin keys -> mmdet/SparseViT keys.

    timm >= 0.9 stores the patch merging of stage i as ``layers.{i+1}.downsample``; older timm and
    the official release store it as ``layers.i.downsample``. The layout is recognised by whether
    stage 0 has a downsample.
    """
    keys = list(state_dict)
    shifted = not any(k.startswith('layers.0.downsample.') for k in keys) and any(
        re.match(r'layers\.\d+\.downsample\.', k) for k in keys)
    official: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        match = re.match(r'layers\.(\d+)\.downsample\.(.*)', key)
        if shifted and match:
            key = f'layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}'
        if key.endswith('relative_position_index'):
            continue  # timm's may be non-persistent or differ in layout; the model builds its own
        official[key] = value
    return convert_official_swin(official)


def extract_state_dict(checkpoint: Mapping, prefix: str = 'backbone.') -> OrderedDict[str, Tensor]:
    """The backbone's tensors from a checkpoint dict of any of the usual wrappers.

    Looks under ``state_dict`` / ``model``; strips ``module.``; keeps only keys under ``prefix``
    if any key has it.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'checkpoint must be a dict, got {type(checkpoint).__name__}')
    sd = checkpoint.get('state_dict', checkpoint.get('model', checkpoint))
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in sd.items())
    if prefix and any(k.startswith(prefix) for k in sd):
        sd = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
    return sd


def _resize_bias_tables(model: nn.Module, state_dict: dict[str, Tensor], logger: logging.Logger) -> None:
    own = model.state_dict()
    for key in [k for k in state_dict if 'relative_position_bias_table' in k and k in own]:
        table, target = state_dict[key], own[key]
        if table.shape == target.shape:
            continue
        (l1, h1), (l2, h2) = table.shape, target.shape
        if h1 != h2:
            raise ValueError(f'{key}: checkpoint has {h1} heads, the model {h2}')
        s1, s2 = int(l1 ** 0.5), int(l2 ** 0.5)
        resized = F.interpolate(table.permute(1, 0).reshape(1, h1, s1, s1), size=(s2, s2), mode='bicubic')
        state_dict[key] = resized.reshape(h2, l2).permute(1, 0).contiguous()
        logger.info(f'resized {key} from window {(s1 + 1) // 2} to {(s2 + 1) // 2}')


def load_pretrained_swin(model: nn.Module, checkpoint: str, convert_official: bool = False,
                         logger: logging.Logger | None = None) -> tuple[list[str], list[str]]:
    """Load a Swin checkpoint into a SparseViT (or mmdet SwinTransformer) the way mmdet does.

    Relative position bias tables are resized to the model's window size; missing and
    unexpected keys are reported by name through ``logger`` and returned.
    """
    logger = logger or logging.getLogger(__name__)
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger=logger)
    state_dict = extract_state_dict(ckpt)
    if convert_official:
        state_dict = convert_official_swin(state_dict)
    if not state_dict:
        raise ValueError(f'{checkpoint}: no backbone tensors found')
    _resize_bias_tables(model, state_dict, logger)
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('relative_position_index')]
    if missing:
        logger.warning(f'{checkpoint}: missing keys in the checkpoint: {", ".join(missing)}')
    if result.unexpected_keys:
        logger.warning(f'{checkpoint}: unexpected keys in the checkpoint: {", ".join(result.unexpected_keys)}')
    logger.info(f'loaded {len(state_dict) - len(result.unexpected_keys)} tensors from {checkpoint}')
    return missing, list(result.unexpected_keys)


def save_state_dict(state_dict: Mapping[str, Tensor], path: str) -> None:
    """Save ``{'state_dict': ...}`` atomically (temp file + rename)."""
    with atomic_open(path, 'wb') as f:
        torch.save({'state_dict': OrderedDict(state_dict)}, f)
