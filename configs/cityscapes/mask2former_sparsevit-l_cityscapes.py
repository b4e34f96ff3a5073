# Mask2Former semantic segmentation on Cityscapes (512 x 1024 crops, 90k iterations, 8 GPUs x 2 images) with
# SparseViT-L: mmseg's Mask2Former Swin-L (ImageNet-22k, 384 px pre-training, window 12) recipe with the
# backbone swapped. Every ratio 0 is exactly Swin-L, so the stock ImageNet-22k Swin-L weights (mmseg's
# converted release, same parameter names as mmdet's SwinTransformer) load as they are.
#   python tools/train.py configs/cityscapes/mask2former_sparsevit-l_cityscapes.py          # data/cityscapes/
#   python tools/test.py configs/cityscapes/mask2former_sparsevit-l_cityscapes.py CKPT \
#       --cfg-options model.backbone.pruning_ratios=0.5                                        # sparse inference
# Data: the official gtFine + leftImg8bit under data/cityscapes/, with *_gtFine_labelTrainIds.png made by
# mmseg's tools/dataset_converters/cityscapes.py (or cityscapesscripts' createTrainIdLabelImgs).
_base_ = ['mmseg::mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-90k_cityscapes-512x1024.py']
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

depths = [2, 2, 18, 2]
model = dict(
    backbone=dict(
        # _delete_: the base's SwinTransformer arguments are restated here, so this file alone shows the encoder
        _delete_=True,
        type='SparseViT',
        pretrain_img_size=384,
        embed_dims=192,
        depths=depths,
        num_heads=[6, 12, 24, 48],
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        frozen_stages=-1,
        # dense by default; a float (every block) or one list per stage, non-decreasing within a stage
        pruning_ratios=0.0,
        convert_weights=False,  # mmseg's release is already in mmdet / mmseg parameter names
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pretrained}})),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
