# Fine-tuning at searched ratios (template: --pruning-ratios best.json) on nuScenes v1.0-mini (10 scenes: 323 train / 81 val samples) in data/nuscenes: bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py with
# version 'v1.0-mini', the devkit's 'mini_val' split and the pkls of
#   python tools/create_data.py nuscenes --root-path data/nuscenes --version v1.0-mini --out-dir data/nuscenes \
#       --extra-tag nuscenes-mini
# A pipeline check on real data before the full set (far too little data for a useful detector).
_base_ = ['./bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py']

data_root = 'data/nuscenes/'
metainfo = dict(version='v1.0-mini', classes={{_base_.class_names}})
train_dataloader = dict(dataset=dict(dataset=dict(ann_file='nuscenes-mini_infos_train.pkl', metainfo=metainfo)))
val_dataloader = dict(dataset=dict(ann_file='nuscenes-mini_infos_val.pkl', metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'nuscenes-mini_infos_val.pkl', eval_set='mini_val')
test_evaluator = val_evaluator
load_from = 'work_dirs/bevdet_sparsevit-t-adapt_8xb8-cbgs-12e_nuscenes-mini-256x704/epoch_12.pth'
