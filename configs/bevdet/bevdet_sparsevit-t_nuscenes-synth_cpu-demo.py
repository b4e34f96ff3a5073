# A CPU-sized run of configs/bevdet/bevdet_sparsevit-t_nuscenes-synth.py for `make demo`: the same image
# encoder (SparseViT-T) at half the image resolution (128 x 352), 1.6 m BEV cells (64 x 64 over +-51.2 m)
# and a slimmer BEV encoder and head, a short iteration-based schedule, single-process data loading.
_base_ = ['./bevdet_sparsevit-t_nuscenes-synth.py']

input_size = (128, 352)
data_config = dict(input_size=input_size, src_size=(900, 1600), resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True,
                   crop_h=(0.0, 0.0), resize_test=0.0)
bda_aug_conf = dict(rot_lim=(-22.5, 22.5), scale_lim=(0.95, 1.05), flip_dx_ratio=0.5, flip_dy_ratio=0.5)
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
meta_keys = ('sample_idx', 'token', 'filename', 'num_views', 'ori_shape', 'img_shape', 'pad_shape', 'cam2img',
             'cam2ego', 'img_aug_matrix', 'bev_aug_matrix', 'ego2global', 'box_type_3d', 'box_mode_3d')
train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='BEVDetImageAug', data_config=data_config, is_train=True),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='BEVDetBEVAug', bda_aug_conf=bda_aug_conf, is_train=True),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes={{_base_.class_names}}),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'], meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='BEVDetImageAug', data_config=data_config, is_train=False),
    dict(type='BEVDetBEVAug', bda_aug_conf=bda_aug_conf, is_train=False),
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys=meta_keys),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))

grid_config = dict(x=[-51.2, 51.2, 1.6], y=[-51.2, 51.2, 1.6], z=[-5.0, 3.0, 8.0], depth=[1.0, 60.0, 2.0])
out_size_factor = 16  # 0.1 m voxels x 16 = 1.6 m cells
model = dict(
    img_view_transformer=dict(input_size=input_size, grid_config=grid_config, out_channels=32),
    img_bev_encoder_backbone=dict(in_channels=32, num_channels=(64, 128, 256)),
    img_bev_encoder_neck=dict(in_channels=256 + 64, out_channels=128),
    pts_bbox_head=dict(in_channels=128, share_conv_channel=32,
                       bbox_coder=dict(out_size_factor=out_size_factor)),
    train_cfg=dict(pts=dict(out_size_factor=out_size_factor)),
    test_cfg=dict(pts=dict(out_size_factor=out_size_factor)))

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=300, val_interval=300)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=300, eta_min=2e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2),
                     logger=dict(type='LoggerHook', interval=10))
log_processor = dict(by_epoch=False)
