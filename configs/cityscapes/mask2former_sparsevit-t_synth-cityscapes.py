# Mask2Former + SparseViT-T semantic segmentation sized to train from scratch on 2 CPU cores, on the embedded
# synthetic Cityscapes (data/cityscapes-synth: 300 train / 50 val street scenes of 128 x 256, real gtFine
# layout; make it with `python tools/make_synthetic_cityscapes.py --out-dir data/cityscapes-synth`).
#   python tools/train.py configs/cityscapes/mask2former_sparsevit-t_synth-cityscapes.py
#   python tools/test.py configs/cityscapes/mask2former_sparsevit-t_synth-cityscapes.py CKPT \
#       --cfg-options model.backbone.pruning_ratios=0.5
#
# What differs from mmseg's Mask2Former Swin-T Cityscapes recipe (inherited below), and why:
# - encoder: Swin-T's depth layout 2-2-6-2 and window 7 are kept, so the search space is the paper's
#   (1 + 1 + 3 + 1 W-MSA/SW-MSA groups); the width is a third (embed_dims 32, heads 1-2-4-8: head dim 32 as
#   in Swin-T), and it starts from scratch (no ImageNet weights can be downloaded here);
# - head: 64 channels instead of 256, 20 queries instead of 100 (the synthetic scenes hold about ten
#   classes), 2 deformable pixel-decoder layers instead of 6 and 3 masked-attention decoder layers instead
#   of 9, 2048 sampled points per mask (the 1/4-resolution masks of a 128 x 256 crop have 2048 pixels);
# - data: whole 128 x 256 images, random rescaling 1.0-1.5 then a 128 x 256 crop, flip, photometric
#   distortion; batch 4, one loader process;
# - optimisation: one learning rate for every parameter (the base lowers the pretrained backbone's
#   ten-fold), higher than the base's, with a short warm-up and polynomial decay over an iteration budget.
_base_ = ['mmseg::mask2former/mask2former_swin-t_8xb2-90k_cityscapes-512x1024.py']
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

data_root = 'data/cityscapes-synth/'
crop_size = (128, 256)  # (height, width)
num_classes = 19  # Cityscapes' train ids; classes absent from the synthetic scenes score NaN and are skipped
embed_dims = 32
feat_channels = 64

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='SparseViT',
        embed_dims=embed_dims,
        depths=(2, 2, 6, 2),
        num_heads=(1, 2, 4, 8),
        window_size=7,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        pruning_ratios=0.0,  # dense; a float (every block) or one list per stage
        init_cfg=None),
    decode_head=dict(
        in_channels=[embed_dims, 2 * embed_dims, 4 * embed_dims, 8 * embed_dims],
        feat_channels=feat_channels,
        out_channels=feat_channels,
        num_queries=20,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat_channels, num_heads=4),
                    ffn_cfg=dict(embed_dims=feat_channels, feedforward_channels=4 * feat_channels))),
            positional_encoding=dict(num_feats=feat_channels // 2)),
        positional_encoding=dict(num_feats=feat_channels // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat_channels, num_heads=4),
                cross_attn_cfg=dict(embed_dims=feat_channels, num_heads=4),
                ffn_cfg=dict(embed_dims=feat_channels, feedforward_channels=4 * feat_channels))),
        train_cfg=dict(num_points=2048)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(crop_size[1], crop_size[0]), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(crop_size[1], crop_size[0]), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# one loader process: the model's two threads and one decoding process share 2 cores
train_dataloader = dict(batch_size=4, num_workers=1, persistent_workers=True,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=1, persistent_workers=True,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# a batch-4 iteration took 1.6-2.0 s forward + backward on one idle core (torch, 1 thread); two threads should
# bring it to about 1.2-1.5 s, so 800 iterations take about 16-25 minutes (the full run is not timed yet)
max_iters = 800
optim_wrapper = dict(
    optimizer=dict(lr=5e-4),
    # _delete_: the base's keys give the (pretrained) backbone a tenth of the learning rate; here everything
    # trains from scratch, so only the no-weight-decay keys stay
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={key: dict(lr_mult=1.0, decay_mult=0.0) for key in (
            'absolute_pos_embed', 'relative_position_bias_table', 'query_embed', 'query_feat', 'level_embed')},
        norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 4, max_keep_ckpts=2,
                    save_best='mIoU'))
