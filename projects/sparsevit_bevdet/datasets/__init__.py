"""datasets of the SparseViT-BEVDet plugin: the synthetic nuScenes generator, the nuScenes info converter,
the ego-frame nuScenes dataset (registered in mmdet3d's ``DATASETS``) and BEVDet's data augmentation
(registered in mmdet3d's ``TRANSFORMS``)."""
from .ego_nuscenes_dataset import EgoFrameNuScenesDataset
from .nuscenes_converter import create_nuscenes_infos, load_nuscenes
from .synthetic_nuscenes import (
    CAMERA_NAMES,
    DETECTION_CLASSES,
    GenerationSummary,
    SyntheticNuScenesConfig,
    generate_synthetic_nuscenes,
)
from .transforms import (
    BEVDetBEVAug,
    BEVDetDepthTarget,
    BEVDetImageAug,
    bev_aug_matrix,
    image_aug_matrix,
    project_ego_points,
)

__all__ = [
    'CAMERA_NAMES',
    'DETECTION_CLASSES',
    'BEVDetBEVAug',
    'BEVDetDepthTarget',
    'BEVDetImageAug',
    'EgoFrameNuScenesDataset',
    'GenerationSummary',
    'SyntheticNuScenesConfig',
    'bev_aug_matrix',
    'create_nuscenes_infos',
    'generate_synthetic_nuscenes',
    'image_aug_matrix',
    'load_nuscenes',
    'project_ego_points',
]
