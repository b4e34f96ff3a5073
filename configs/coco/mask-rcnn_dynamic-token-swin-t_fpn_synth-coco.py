# Mask R-CNN + FPN on the embedded synthetic COCO set (mask-rcnn_sparsevit-t_fpn_synth-coco.py) with
# DynamicViT-style token pruning: the backbone is DynamicTokenSwin (the same Swin-T layout at embed_dims 32,
# plus one token predictor per W-MSA / SW-MSA group) and the detector is AuxLossMaskRCNN, mmdet's MaskRCNN
# that adds the backbone's `loss_keep_ratio` (DynamicViT's ratio loss) to its losses. Everything else is the
# synthetic-COCO recipe. Predictor settings and ratios: configs/_base_/models/dynamic_token_swin.py.
#   python tools/train.py configs/coco/mask-rcnn_dynamic-token-swin-t_fpn_synth-coco.py
_base_ = ['./mask-rcnn_sparsevit-t_fpn_synth-coco.py', '../_base_/models/dynamic_token_swin.py']

model = dict(type='AuxLossMaskRCNN', backbone={{_base_.dynamic_token_swin}})
