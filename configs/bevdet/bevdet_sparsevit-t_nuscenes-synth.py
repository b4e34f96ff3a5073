# BEVDet with a SparseViT-T image encoder on the embedded synthetic nuScenes (data/nuscenes-synth).
#   python tools/train.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth.py
#   python tools/test.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth.py work_dirs/.../epoch_24.pth
# Real nuScenes: --cfg-options data_root=... is not enough (the dataloaders copy it); inherit this file and
# set data_root / ann files / metainfo version, as configs/_base_/datasets/nuscenes_synth_bevdet.py explains.
_base_ = [
    '../_base_/datasets/nuscenes_synth_bevdet.py',
    '../_base_/models/bevdet_sparsevit-t.py',
    '../_base_/schedules/bevdet_adamw_24e.py',
    'mmdet3d::_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)

# CenterHead's label order (BEVDet's task grouping); the dataset remaps its labels to it
class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
metainfo = dict(version='v1.0-mini', classes=class_names)
train_dataloader = dict(dataset=dict(metainfo=metainfo))
val_dataloader = dict(dataset=dict(metainfo=metainfo))
test_dataloader = dict(dataset=dict(metainfo=metainfo))

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
