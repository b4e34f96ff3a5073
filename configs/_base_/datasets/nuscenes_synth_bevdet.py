# BEVDet (camera-only) data on the embedded synthetic nuScenes (data/nuscenes-synth, v1.0-mini format):
# 6 cameras -> BEVDetImageAug -> ego-frame ground truth -> BEVDetBEVAug (BDA) -> range/name filters -> pack.
# Matrix conventions (img_aug_matrix, cam2img, cam2ego, bev_aug_matrix): projects/sparsevit_bevdet/datasets/
# transforms.py. A model config inherits this file and reads the top-level variables:
#   _base_ = ['../_base_/datasets/nuscenes_synth_bevdet.py']
#   grid_config / image size: {{_base_.input_size}}, {{_base_.point_cloud_range}}, {{_base_.class_names}}
# Images stay BGR float32 in 0..255: normalise in the model's data_preprocessor, e.g.
#   dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
# For real nuScenes set data_root = 'data/nuscenes/' and metainfo version 'v1.0-trainval'.
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

dataset_type = 'EgoFrameNuScenesDataset'
data_root = 'data/nuscenes-synth/'
# projects.sparsevit_bevdet.datasets.DETECTION_CLASSES (mmdet3d's NuScenesDataset order; info labels index it)
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
metainfo = dict(version='v1.0-mini', classes=class_names)
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
input_modality = dict(use_camera=True, use_lidar=False)
cameras = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
num_views = 6
data_prefix = dict(pts='samples/LIDAR_TOP', CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT',
                   CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT', CAM_BACK='samples/CAM_BACK',
                   CAM_BACK_LEFT='samples/CAM_BACK_LEFT', CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT')
backend_args = None

# BEVDet's data_config (configs/bevdet/bevdet-r50.py); the camera list and order come from the infos.
input_size = (256, 704)  # (H, W) of the network input
src_size = (900, 1600)  # (H, W) of the camera images
data_config = dict(input_size=input_size, src_size=src_size, resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True,
                   crop_h=(0.0, 0.0), resize_test=0.0)
# BEVDet's BEV data augmentation: degrees, scale, flip probabilities
bda_aug_conf = dict(rot_lim=(-22.5, 22.5), scale_lim=(0.95, 1.05), flip_dx_ratio=0.5, flip_dy_ratio=0.5)

meta_keys = ('sample_idx', 'token', 'filename', 'num_views', 'ori_shape', 'img_shape', 'pad_shape', 'cam2img',
             'cam2ego', 'img_aug_matrix', 'bev_aug_matrix', 'ego2global', 'box_type_3d', 'box_mode_3d')

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=num_views, backend_args=backend_args),
    dict(type='BEVDetImageAug', data_config=data_config, is_train=True),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='BEVDetBEVAug', bda_aug_conf=bda_aug_conf, is_train=True),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'], meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=num_views, backend_args=backend_args),
    dict(type='BEVDetImageAug', data_config=data_config, is_train=False),
    dict(type='BEVDetBEVAug', bda_aug_conf=bda_aug_conf, is_train=False),  # identity bev_aug_matrix
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        box_frame='ego',
        data_root=data_root,
        ann_file='nuscenes_infos_train.pkl',
        metainfo=metainfo,
        data_prefix=data_prefix,
        modality=input_modality,
        pipeline=train_pipeline,
        test_mode=False,
        box_type_3d='LiDAR',
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        box_frame='ego',
        data_root=data_root,
        ann_file='nuscenes_infos_val.pkl',
        metainfo=metainfo,
        data_prefix=data_prefix,
        modality=input_modality,
        pipeline=test_pipeline,
        test_mode=True,
        box_type_3d='LiDAR',
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='EgoFrameNuScenesMetric',
    box_frame='ego',
    data_root=data_root,
    ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator
