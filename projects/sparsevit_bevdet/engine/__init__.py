"""Training-time behaviour through mmengine hooks: :class:`SparsityAdaptationHook` and :class:`FiniteLossHook`
(registered for mmdet3d, mmdet and mmseg configs)."""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet3d.registry import HOOKS as MMDET3D_HOOKS
from mmseg.registry import HOOKS as MMSEG_HOOKS

from .finite_loss import FiniteLossHook, NonFiniteLossError, add_finite_loss_hook
from .sparsity_adaptation import SparsityAdaptationHook, find_image_encoder

for _registry in (MMDET3D_HOOKS, MMDET_HOOKS, MMSEG_HOOKS):
    _registry.register_module(module=SparsityAdaptationHook)
    _registry.register_module(module=FiniteLossHook)

__all__ = ['FiniteLossHook', 'NonFiniteLossError', 'SparsityAdaptationHook', 'add_finite_loss_hook',
           'find_image_encoder']
