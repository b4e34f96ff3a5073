"""SparseViT + BEVDet plugin for OpenMMLab.

Importing this package (configs do it through ``custom_imports``) registers every module of the
plugin into the mmdet3d registries (and mmdet's / mmseg's where a 2D config needs them) and makes
mmengine's checkpoint loading safe on torch >= 2.6 (see :mod:`.utils.safe_checkpoint`).
"""
from .utils.safe_checkpoint import install_safe_checkpoint_loading

install_safe_checkpoint_loading()

from . import models  # noqa: E402,F401,I001  (BEVDet detector modules)
from . import backbones, datasets, engine, evaluation, testing  # noqa: E402,F401  (registration side effects)

__version__ = '0.1.0'
