"""BEVDet on mmdet3d 1.x: detector, image neck, LSS view transformer, BEV encoder.

Registered in mmdet3d's ``MODELS`` as ``BEVDet``, ``BEVDetImageNeck``, ``LSSViewTransformer``, ``BEVResNet``
and ``BEVFPNLSS``; the head is mmdet3d's own ``CenterHead``, or ``BEVDetCenterHead`` (CenterHead plus BEVDet's
per-task NMS type and Scale-NMS at test time). ``AuxLossMaskRCNN`` (mmdet's ``MODELS``) is Mask R-CNN with the
backbone's auxiliary losses in its loss dict.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet3d.registry import MODELS

from .auxiliary_losses import AuxLossMaskRCNN, add_backbone_losses
from .bev_encoder import BEVFPNLSS, BEVResNet
from .bevdet import BEVDet, collect_camera_matrices
from .necks import BEVDetImageNeck
from .scale_nms_head import BEVDetCenterHead, TaskNMS, parse_scale_nms  # registered by its decorator
from .view_transformer import BEVGeometry, LSSViewTransformer, pad_to_4x4

for _module in (BEVDet, BEVDetImageNeck, LSSViewTransformer, BEVResNet, BEVFPNLSS):
    MODELS.register_module(module=_module)
MMDET_MODELS.register_module(module=AuxLossMaskRCNN)

__all__ = [
    'BEVFPNLSS',
    'AuxLossMaskRCNN',
    'BEVDet',
    'BEVDetCenterHead',
    'BEVDetImageNeck',
    'BEVGeometry',
    'BEVResNet',
    'LSSViewTransformer',
    'TaskNMS',
    'add_backbone_losses',
    'collect_camera_matrices',
    'pad_to_4x4',
    'parse_scale_nms',
]
