# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of the dense BEVDet + SparseViT-T on real nuScenes
# v1.0-trainval: starting from the dense 24-epoch checkpoint, every iteration trains one pruning ratio per
# W-MSA/SW-MSA group drawn from 0.0-0.8 (sorted within a stage; the same draw on every rank). Validation runs at
# the config's ratios (dense). Then tools/search.py searches the ratios on this model's checkpoint.
#   bash tools/dist_train.sh configs/bevdet/bevdet_sparsevit-t-adapt_8xb8-cbgs-12e_nuscenes-256x704.py 8
# Schedule (our choice; the paper does not give one for BEVDet): 12 epochs, half the dense lr, cosine decay.
# No EMA here: tools/search.py evaluates this checkpoint with the config's hooks but never runs training, and
# mmengine's EMAHook cannot swap weights it never set up; the plain weights are what the search scores.
_base_ = ['./bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py']

load_from = 'work_dirs/bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704/epoch_24.pth'
model = dict(img_backbone=dict(init_cfg=None))  # every weight comes from load_from
custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0,
         sandwich_prob=0.0),
]
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min=1e-6,
         convert_to_iter_based=True),
]
