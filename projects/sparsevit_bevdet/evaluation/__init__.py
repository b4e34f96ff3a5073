"""evaluation of the SparseViT-BEVDet plugin: the nuScenes detection metric for ego-frame (BEVDet) or
LiDAR-frame boxes (registered in mmdet3d's ``METRICS``) and the devkit runner behind it."""
from .nuscenes_devkit_eval import (
    cached_nuscenes,
    flatten_summary,
    format_summary,
    load_results_file,
    run_detection_eval,
    validate_results,
)
from .nuscenes_metric import EgoFrameNuScenesMetric, boxes_to_nusc_results

__all__ = [
    'EgoFrameNuScenesMetric',
    'boxes_to_nusc_results',
    'cached_nuscenes',
    'flatten_summary',
    'format_summary',
    'load_results_file',
    'run_detection_eval',
    'validate_results',
]
