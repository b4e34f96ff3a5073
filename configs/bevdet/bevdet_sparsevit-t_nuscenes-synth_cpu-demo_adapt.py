# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of the CPU recipe: fine-tune the dense-trained
# bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py checkpoint while every iteration samples one pruning ratio
# per W-MSA/SW-MSA group (0.0-0.8, sorted within each stage); a lower learning rate and a shorter schedule
# than the dense training, as in the paper. Validation runs at the config's ratios (dense by default).
#   python tools/train.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_adapt.py \
#       --cfg-options load_from=work_dirs/bevdet_sparsevit-t_nuscenes-synth_cpu-demo/iter_750.pth
_base_ = ['./bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0,
         sandwich_prob=0.0),
]
max_iters = 250  # about 10 minutes on 2 cores at 2.6 s per dense iteration (sparse ones are cheaper)
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=5e-4))
default_hooks = dict(checkpoint=dict(interval=50))
