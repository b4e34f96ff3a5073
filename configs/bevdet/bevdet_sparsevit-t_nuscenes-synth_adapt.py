# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of BEVDet + SparseViT-T: every training iteration samples
# one pruning ratio per W-MSA/SW-MSA pair from 0.0-0.8 (sorted within each stage). Validation and testing use
# the model's own pruning_ratios (dense by default; e.g. --cfg-options model.img_backbone.pruning_ratios=0.6):
# the hook restores them after sampling and never overrides ratios it has not changed.
# Start from a dense-trained checkpoint, e.g. --cfg-options load_from=work_dirs/.../epoch_24.pth
_base_ = ['./bevdet_sparsevit-t_nuscenes-synth.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0),
]
