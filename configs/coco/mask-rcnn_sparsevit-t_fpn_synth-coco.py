# Mask R-CNN + FPN with SparseViT-T on the embedded synthetic COCO set, trainable from scratch on a CPU.
# The Swin-T layout (depths 2-2-6-2, 7 x 7 windows, heads doubling per stage) at a third of the width
# (embed_dims 32), with FPN, RPN and RoI heads narrowed to match, fewer proposals and RoIs, the five
# shape classes, 160 x 160 images and an iteration-based schedule. Evaluated with mmdet's CocoMetric
# (bbox and segm). Data:
#   python tools/make_synthetic_coco.py --out-dir data/coco-synth
#   python tools/train.py configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py
_base_ = ['./mask-rcnn_sparsevit-t_fpn_672_coco.py']

# the category names of projects/sparsevit_bevdet/synthetic/coco.py (CLASSES), in category-id order
classes = ('rectangle', 'ellipse', 'triangle', 'hexagon', 'star')
num_classes = len(classes)
metainfo = dict(classes=classes, palette=[(220, 50, 50), (60, 185, 60), (40, 110, 210), (225, 205, 40),
                                          (195, 60, 195)])
data_root = 'data/coco-synth/'
width = 32  # embed_dims of stage 1; stage i has width * 2**i channels
fpn_channels = 64

model = dict(
    backbone=dict(
        embed_dims=width,
        num_heads=[1, 2, 4, 8],  # 32 channels per head in every stage, as Swin-T
        drop_path_rate=0.1,
        convert_weights=False,
        init_cfg=None),  # from scratch: there is no ImageNet checkpoint of this width
    neck=dict(in_channels=[width, 2 * width, 4 * width, 8 * width], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(in_channels=fpn_channels, conv_out_channels=fpn_channels, num_classes=num_classes)),
    # a few objects per image: far fewer proposals and sampled RoIs than COCO's 2000 / 512
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

input_size = (160, 160)  # (width, height); the generator's default image size
pad_val = dict(img=(104, 116, 124), masks=0, seg=255)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=input_size, pad_val=pad_val),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='Pad', size=input_size, pad_val=pad_val),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# data loading is cheap at this size: no worker processes competing with training for the 2 cores
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_iters = 1000  # ~1.3 s of CPU per iteration (batch 4, one thread): an estimated 15-20 minutes on 2 idle cores
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0, norm_type=2))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2),
                     logger=dict(type='LoggerHook', interval=10))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=4)
