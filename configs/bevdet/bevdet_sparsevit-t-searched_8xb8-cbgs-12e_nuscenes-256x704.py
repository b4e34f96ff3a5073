# Fine-tuning BEVDet + SparseViT-T at the pruning ratios tools/search.py found, on real nuScenes v1.0-trainval.
# A template: pruning_ratios is the placeholder 'searched', which tools/train.py / tools/test.py refuse until the
# ratios are given, e.g. the search's best.json:
#   python tools/search.py configs/bevdet/bevdet_sparsevit-t-adapt_8xb8-cbgs-12e_nuscenes-256x704.py \
#       work_dirs/bevdet_sparsevit-t-adapt_8xb8-cbgs-12e_nuscenes-256x704/epoch_12.pth \
#       --latency-ratio 0.6 --proxy-samples 500 --work-dir work_dirs/search_nuscenes
#   bash tools/dist_train.sh configs/bevdet/bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py 8 \
#       --pruning-ratios work_dirs/search_nuscenes/best.json
#   bash tools/dist_test.sh configs/bevdet/bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py \
#       work_dirs/bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704/epoch_12.pth 8 \
#       --pruning-ratios work_dirs/search_nuscenes/best.json
# Starts from the adapted checkpoint; 12 epochs at half the dense lr with cosine decay and the dense recipe's
# EMA (our choice of schedule; the paper does not give one for BEVDet).
_base_ = ['./bevdet_sparsevit-t_8xb8-cbgs-24e_nuscenes-256x704.py']

load_from = 'work_dirs/bevdet_sparsevit-t-adapt_8xb8-cbgs-12e_nuscenes-256x704/epoch_12.pth'
model = dict(img_backbone=dict(pruning_ratios='searched', init_cfg=None))
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min=1e-6,
         convert_to_iter_based=True),
]
