# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of Mask2Former + SparseViT-L on Cityscapes: every training
# iteration samples one pruning ratio per W-MSA/SW-MSA pair (0.0-0.8, sorted within each stage), so one set of
# weights serves every ratio the latency-constrained search may pick. Validation and testing run at the
# model's own pruning_ratios (dense by default); the hook restores them after sampling.
# Start from the dense-trained checkpoint:
#   python tools/train.py configs/cityscapes/mask2former_sparsevit-l_cityscapes_adapt.py \
#       --cfg-options load_from=work_dirs/mask2former_sparsevit-l_cityscapes/iter_90000.pth
_base_ = ['./mask2former_sparsevit-l_cityscapes.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0),
]
