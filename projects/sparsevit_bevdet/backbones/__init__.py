"""Image encoders: :class:`SparseViT` (window pruning) and :class:`DynamicTokenSwin` (DynamicViT-style token
pruning), each registered under its class name for mmdet3d, mmdet and mmseg."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet3d.registry import MODELS as MMDET3D_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .sparsevit import (
    SparseViT,
    StageSearchSpace,
    expand_group_ratios,
    normalize_pruning_ratios,
)
from .token_pruning import DynamicTokenSwin
from .weight_converters import convert_official_swin, convert_timm_swin, load_pretrained_swin

for _registry in (MMDET3D_MODELS, MMDET_MODELS, MMSEG_MODELS):
    _registry.register_module(module=SparseViT)
    _registry.register_module(module=DynamicTokenSwin)

__all__ = [
    'DynamicTokenSwin', 'SparseViT', 'StageSearchSpace', 'convert_official_swin', 'convert_timm_swin',
    'expand_group_ratios', 'load_pretrained_swin', 'normalize_pruning_ratios',
]
