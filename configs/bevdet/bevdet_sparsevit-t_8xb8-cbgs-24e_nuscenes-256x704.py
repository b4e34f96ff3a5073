# BEVDet + SparseViT-T at pruning ratio 0 (exactly Swin-T; the dense model that adaptation starts from) on real
# nuScenes v1.0-trainval: BEVDet-sttiny's recipe on mmdet3d 1.x.
#   256 x 704 input, 6 cameras; Swin-T layout with ImageNet-1k weights (official release, converted on load);
#   LSS view transform, 0.8 m BEV cells over +-51.2 m; BEV ResNet + FPN-LSS; CenterHead with BEVDet's Scale-NMS
#   (BEVDetCenterHead: per-task NMS type, per-class box scaling before NMS); CBGS; AdamW 2e-4, weight decay 0.01,
#   gradient clipping 5, 200-iteration warm-up, 24 epochs; EMA of the weights (decay 0.999 with warm-up, as
#   BEVDet's MEGVII EMA); 8 GPUs x 8 samples (--auto-scale-lr rescales the lr for another total batch).
# Weights: checkpoints/swin_tiny_patch4_window7_224.pth (data/README.md). Train / test:
#   bash tools/dist_train.sh configs/bevdet/bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py 8
#   bash tools/dist_test.sh configs/bevdet/bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py \
#       work_dirs/bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704/epoch_24.pth 8
# The dense mmdet Swin-T baseline with identical settings: bevdet_swin-t_8xb8-cbgs-24e_nuscenes-256x704.py.
_base_ = [
    '../_base_/datasets/nuscenes_bevdet.py',
    '../_base_/models/bevdet_sparsevit-t.py',
    '../_base_/schedules/bevdet_adamw_24e.py',
    'mmdet3d::_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

swin_t_imagenet = 'checkpoints/swin_tiny_patch4_window7_224.pth'  # Microsoft's official Swin-T ImageNet-1k release
model = dict(
    img_backbone=dict(pruning_ratios=0.0, convert_weights=True,
                      init_cfg=dict(type='Pretrained', checkpoint=swin_t_imagenet)),
    # BEVDet's Scale-NMS (configs/bevdet/bevdet-sttiny.py of BEVDet): per task the NMS type and IoU threshold,
    # per class the factor box sizes are scaled by before NMS (one value: every class of the task)
    pts_bbox_head=dict(type='BEVDetCenterHead'),
    test_cfg=dict(pts=dict(
        nms_type=['rotate', 'rotate', 'rotate', 'circle', 'rotate', 'rotate'],
        nms_thr=[0.2, 0.2, 0.2, 0.2, 0.2, 0.5],
        nms_rescale_factor=[1.0, [0.7, 0.7], [0.4, 0.55], 1.1, [1.0, 1.0], [4.5, 9.0]])))

# EMA as BEVDet's MEGVIIEMAHook: decay 0.999 * (1 - exp(-updates / 2000)); mmdet's ExpMomentumEMA computes
# exactly that with momentum = 1 - decay. The checkpoints' state_dict holds the EMA weights (the ones evaluated).
custom_hooks = [
    dict(type='EMAHook', ema_type='mmdet.ExpMomentumEMA', momentum=0.001, gamma=2000, update_buffers=True,
         priority=49),
]
auto_scale_lr = dict(enable=False, base_batch_size=64)  # 8 GPUs x 8 samples
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
                     logger=dict(type='LoggerHook', interval=50))
