"""datasets of the SparseViT-BEVDet plugin: the nuScenes info converter, the ego-frame nuScenes dataset
(registered in mmdet3d's ``DATASETS``) and BEVDet's data augmentation (registered in mmdet3d's
``TRANSFORMS``). The synthetic nuScenes generator lives in :mod:`projects.sparsevit_bevdet.synthetic.nuscenes`."""
from .ego_nuscenes_dataset import EgoFrameNuScenesDataset
from .nuscenes_converter import create_nuscenes_infos, load_nuscenes
from .transforms import (
    BEVDetBEVAug,
    BEVDetDepthTarget,
    BEVDetImageAug,
    bev_aug_matrix,
    image_aug_matrix,
    project_ego_points,
)

__all__ = [
    'BEVDetBEVAug',
    'BEVDetDepthTarget',
    'BEVDetImageAug',
    'EgoFrameNuScenesDataset',
    'bev_aug_matrix',
    'create_nuscenes_infos',
    'image_aug_matrix',
    'load_nuscenes',
    'project_ego_points',
]
