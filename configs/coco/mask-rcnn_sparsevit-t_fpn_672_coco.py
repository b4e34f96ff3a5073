# Mask R-CNN + FPN on COCO 2017 with the Swin-T backbone swapped for SparseViT-T, at the paper's 672 x 672
# input: every image is resized to fit 672 x 672 (aspect kept) and padded to exactly 672 x 672, so the four
# stages see 168, 84, 42 and 21 tokens a side, all multiples of the 7 x 7 window: no window padding
# anywhere (docs/benchmarks.md measures the backbone at this shape).
# Everything else (model heads, 1x schedule, AdamW, COCO data in data/coco/) is mmdet's stock
# swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py, read from the installed mmdet package (`mmdet::`).
# Dense (all pruning ratios 0) loads the ImageNet Swin-T checkpoint exactly like the stock config; the
# searched sparse configurations are the *_r30/_r60/_r70 configs next to this one, the adaptation
# (sparsity-aware fine-tuning) config is *_adapt.py.
#   python tools/train.py configs/coco/mask-rcnn_sparsevit-t_fpn_672_coco.py
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        # replace mmdet's SwinTransformer entirely (no key of it may leak into SparseViT's arguments)
        _delete_=True,
        type='SparseViT',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=True,  # the checkpoint is the official Swin release (its key names)
        pruning_ratios=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

input_size = (672, 672)  # (width, height) for Resize's scale and Pad's size
# pad with the BGR pixel mean, which normalises to about 0: the same value the data preprocessor's own
# padding uses, and low activation, so pruning drops padded windows first
pad_val = dict(img=(104, 116, 124), masks=0, seg=255)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=input_size, pad_val=pad_val),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='Pad', size=input_size, pad_val=pad_val),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
