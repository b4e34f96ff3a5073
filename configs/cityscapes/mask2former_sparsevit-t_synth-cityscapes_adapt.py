# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of the CPU recipe: fine-tune the dense-trained
# mask2former_sparsevit-t_synth-cityscapes.py checkpoint while every iteration samples one pruning ratio per
# W-MSA/SW-MSA group (0.0-0.8, sorted within each stage); a lower learning rate and a shorter schedule than
# the dense training. Validation runs at the config's ratios (dense by default).
#   python tools/train.py configs/cityscapes/mask2former_sparsevit-t_synth-cityscapes_adapt.py \
#       --cfg-options load_from=work_dirs/mask2former_sparsevit-t_synth-cityscapes/iter_800.pth
_base_ = ['./mask2former_sparsevit-t_synth-cityscapes.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0,
         sandwich_prob=0.0),
]
max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=max_iters, eta_min=1e-6),
]
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(checkpoint=dict(interval=max_iters // 2))
