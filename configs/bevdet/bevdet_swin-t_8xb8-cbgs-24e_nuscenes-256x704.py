# Dense baseline: BEVDet with mmdet's SwinTransformer (Swin-T) as the image encoder on real nuScenes
# v1.0-trainval; everything else is bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py (which at ratio 0
# computes exactly this network: tests/test_real_configs.py checks identical outputs for the same weights).
#   bash tools/dist_train.sh configs/bevdet/bevdet_swin-t_8xb8-cbgs-24e_nuscenes-256x704.py 8
# Swin-T ImageNet-1k weights: Microsoft's official release, converted to mmdet's names on load
# (convert_weights=True); or convert once with tools/convert_swin_weights.py and drop convert_weights.
_base_ = ['./bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py']

model = dict(
    img_backbone=dict(
        _delete_=True,
        type='mmdet.SwinTransformer',
        embed_dims=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(2, 3),
        with_cp=False,
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.swin_t_imagenet}})))
