"""``NuScenesDataset`` whose ground-truth boxes are in the ego frame (BEVDet) or the LiDAR frame."""
from __future__ import annotations

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS

__all__ = ['EgoFrameNuScenesDataset']


@DATASETS.register_module()
class EgoFrameNuScenesDataset(NuScenesDataset):
    """mmdet3d's ``NuScenesDataset`` reading ``bbox_3d_ego`` / ``velocity_ego`` of the infos written by
    :mod:`.nuscenes_converter` when ``box_frame='ego'`` (default), so that ``gt_bboxes_3d`` are in the
    ego frame of the key frame, the frame BEVDet predicts in. ``box_frame='lidar'`` is the parent's
    behaviour. Boxes stay ``LiDARInstance3DBoxes``: the ego frame has the same axes convention (x forward,
    y left, z up). Pair it with ``EgoFrameNuScenesMetric(box_frame=...)`` of the same frame.
    """

    BOX_FRAMES = ('ego', 'lidar')

    def __init__(self, *args, box_frame: str = 'ego', **kwargs) -> None:
        if box_frame not in self.BOX_FRAMES:
            raise ValueError(f'box_frame must be one of {self.BOX_FRAMES}, got {box_frame!r}')
        self.box_frame = box_frame
        super().__init__(*args, **kwargs)

    def parse_ann_info(self, info: dict) -> dict:
        if self.box_frame == 'ego' and info['instances']:
            first = info['instances'][0]
            if 'bbox_3d_ego' not in first or 'velocity_ego' not in first:
                raise KeyError(f'{self.ann_file}: sample {info.get("token")} instances lack "bbox_3d_ego"/'
                               f'"velocity_ego"; create the infos with tools/create_data.py nuscenes')
            # A shallow copy: the parent turns every instance key into an array, so swap the LiDAR-frame
            # fields for the ego-frame ones without touching the cached info.
            info = dict(info)
            info['instances'] = [dict(inst, bbox_3d=inst['bbox_3d_ego'], velocity=inst['velocity_ego'])
                                 for inst in info['instances']]
        return super().parse_ann_info(info)
