"""Training-time behaviour through mmengine hooks: :class:`SparsityAdaptationHook`
(registered for mmdet3d, mmdet and mmseg configs)."""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet3d.registry import HOOKS as MMDET3D_HOOKS
from mmseg.registry import HOOKS as MMSEG_HOOKS

from .sparsity_adaptation import SparsityAdaptationHook, find_image_encoder

for _registry in (MMDET3D_HOOKS, MMDET_HOOKS, MMSEG_HOOKS):
    _registry.register_module(module=SparsityAdaptationHook)

__all__ = ['SparsityAdaptationHook', 'find_image_encoder']
