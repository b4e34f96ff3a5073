# BEVDet (camera-only) with SparseViT-T as the image encoder; BEVDet-sttiny settings:
# SparseViT stages 3/4 (stride 16/32) -> one stride-16 map -> LSS (59 depth bins, 0.8 m BEV cells over
# +-51.2 m) -> BEV ResNet + FPN-LSS -> CenterHead (6 task groups, CenterPoint's nuScenes grouping).
# The class order is BEVDet's task order flattened: datasets must use the same order (metainfo classes).
# Variable names differ from the dataset fragment's (mmengine forbids duplicate keys among _base_ files).
bevdet_class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
bev_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
voxel_size = [0.1, 0.1, 0.2]
out_size_factor = 8  # 0.1 m voxels x 8 = the 0.8 m BEV cells of grid_config
grid_config = dict(x=[-51.2, 51.2, 0.8], y=[-51.2, 51.2, 0.8], z=[-5.0, 3.0, 8.0], depth=[1.0, 60.0, 1.0])
image_input_size = (256, 704)
post_center_range = [-61.2, -61.2, -10.0, 61.2, 61.2, 10.0]

model = dict(
    type='BEVDet',
    class_names=bevdet_class_names,
    data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    img_backbone=dict(
        type='SparseViT', arch='tiny', window_size=7, out_indices=(2, 3), drop_path_rate=0.2, with_cp=False,
        pruning_ratios=0.0,
        # pretrained ImageNet weights when available (official release format):
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth'),
        # convert_weights=True,
    ),
    img_neck=dict(type='BEVDetImageNeck', in_channels=(384, 768), out_channels=512),
    img_view_transformer=dict(type='LSSViewTransformer', grid_config=grid_config, input_size=image_input_size,
                              downsample=16, in_channels=512, out_channels=64),
    img_bev_encoder_backbone=dict(type='BEVResNet', in_channels=64, num_channels=(128, 256, 512)),
    img_bev_encoder_neck=dict(type='BEVFPNLSS', in_channels=512 + 128, out_channels=256),
    pts_bbox_head=dict(
        type='CenterHead',
        in_channels=256,
        tasks=[
            dict(num_class=1, class_names=['car']),
            dict(num_class=2, class_names=['truck', 'construction_vehicle']),
            dict(num_class=2, class_names=['bus', 'trailer']),
            dict(num_class=1, class_names=['barrier']),
            dict(num_class=2, class_names=['motorcycle', 'bicycle']),
            dict(num_class=2, class_names=['pedestrian', 'traffic_cone']),
        ],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
        share_conv_channel=64,
        bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=bev_range[:2],
                        post_center_range=post_center_range, max_num=500, score_threshold=0.1,
                        out_size_factor=out_size_factor, voxel_size=voxel_size[:2], code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
        norm_bbox=True),
    train_cfg=dict(pts=dict(point_cloud_range=bev_range, grid_size=[1024, 1024, 40], voxel_size=voxel_size,
                            out_size_factor=out_size_factor, dense_reg=1, gaussian_overlap=0.1, max_objs=500,
                            min_radius=2, code_weights=[1.0] * 8 + [0.2, 0.2])),
    test_cfg=dict(pts=dict(pc_range=bev_range[:2], post_center_limit_range=post_center_range,
                           max_per_img=500, max_pool_nms=False, min_radius=[4, 12, 10, 1, 0.85, 0.175],
                           score_threshold=0.1, out_size_factor=out_size_factor, voxel_size=voxel_size[:2],
                           nms_type='rotate', pre_max_size=1000, post_max_size=83, nms_thr=0.2)))
