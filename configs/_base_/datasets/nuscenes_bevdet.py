# BEVDet (camera-only) data on the real nuScenes v1.0-trainval (data/nuscenes; data/README.md gives the steps):
# the pipelines of nuscenes_synth_bevdet.py (BEVDet's image and BEV augmentation, 256 x 704 input) with
#   - the training set wrapped in CBGSDataset (class-balanced grouping and sampling, as BEVDet trains),
#   - 8 samples per GPU (BEVDet's samples_per_gpu), 4 loader processes per GPU,
#   - the devkit evaluation on the 'val' split (6019 samples).
# The class order is BEVDet's task order (CenterHead reads label k as the k-th class of its tasks), the order the
# models/bevdet_sparsevit-t.py head uses; ObjectNameFilter only tests membership, so its order does not matter.
# v1.0-mini: the *_nuscenes-mini-256x704.py configs set version 'v1.0-mini', eval split 'mini_val' and the
# nuscenes-mini_infos_*.pkl files written by tools/create_data.py ... --extra-tag nuscenes-mini.
_base_ = ['./nuscenes_synth_bevdet.py']

data_root = 'data/nuscenes/'
class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
metainfo = dict(version='v1.0-trainval', classes=class_names)
eval_set = 'val'

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CBGSDataset',
        dataset=dict(
            type={{_base_.dataset_type}},
            box_frame='ego',
            data_root=data_root,
            ann_file='nuscenes_infos_train.pkl',
            metainfo=metainfo,
            data_prefix={{_base_.data_prefix}},
            modality={{_base_.input_modality}},
            pipeline={{_base_.train_pipeline}},
            test_mode=False,
            box_type_3d='LiDAR',
            backend_args=None)))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    dataset=dict(data_root=data_root, ann_file='nuscenes_infos_val.pkl', metainfo=metainfo))
test_dataloader = val_dataloader

val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl', eval_set=eval_set)
test_evaluator = val_evaluator
