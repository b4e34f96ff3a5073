"""datasets of the SparseViT-BEVDet plugin: the synthetic nuScenes generator, the nuScenes info converter
and the ego-frame nuScenes dataset (registered in mmdet3d's ``DATASETS``)."""
from .ego_nuscenes_dataset import EgoFrameNuScenesDataset
from .nuscenes_converter import create_nuscenes_infos, load_nuscenes
from .synthetic_nuscenes import (
    CAMERA_NAMES,
    DETECTION_CLASSES,
    GenerationSummary,
    SyntheticNuScenesConfig,
    generate_synthetic_nuscenes,
)

__all__ = [
    'CAMERA_NAMES',
    'DETECTION_CLASSES',
    'EgoFrameNuScenesDataset',
    'GenerationSummary',
    'SyntheticNuScenesConfig',
    'create_nuscenes_infos',
    'generate_synthetic_nuscenes',
    'load_nuscenes',
]
