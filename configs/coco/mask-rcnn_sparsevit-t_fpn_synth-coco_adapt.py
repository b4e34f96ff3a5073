# Sparsity-aware adaptation on the synthetic COCO set: fine-tune the checkpoint of
# mask-rcnn_sparsevit-t_fpn_synth-coco.py while every iteration samples one pruning ratio per
# W-MSA/SW-MSA group (0.0-0.8, sorted within each stage); a lower learning rate and a shorter schedule
# than the dense training. Validation runs at the config's ratios (dense by default).
#   python tools/train.py configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py \
#       --cfg-options load_from=work_dirs/mask-rcnn_sparsevit-t_fpn_synth-coco/iter_1000.pth
_base_ = ['./mask-rcnn_sparsevit-t_fpn_synth-coco.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0,
         sandwich_prob=0.0),
]
max_iters = 300  # sparse iterations cost less than dense ones
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=5e-4))
