"""``NuScenesDataset`` whose ground-truth boxes are in the ego frame (BEVDet) or the LiDAR frame, and whose
loading errors caused by a sample's files name the file."""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any, Optional

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS

from .nuscenes_converter import LIDAR_POINT_DIMS, check_lidar_file

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

    def prepare_data(self, index: int) -> Any:
        """The parent's, but a failure caused by a sample's files (an image that does not decode, a LiDAR file
        that is not a whole number of points) is reported naming the file, the sample and what was expected."""
        try:
            return super().prepare_data(index)
        except Exception as err:
            problem = self.file_problem(index)
            if problem is None:
                raise
            raise ValueError(problem) from err

    def file_problem(self, index: int) -> Optional[str]:
        """What is wrong with the image and point files of sample ``index`` (None: nothing found)."""
        import mmcv
        from mmengine.fileio import get

        info = self.get_data_info(index)
        where = f'sample {info.get("token")} (index {index} of {self.ann_file})'
        for cam, image in (info.get('images') or {}).items():
            path = image.get('img_path')
            if not path:
                continue
            try:
                decoded = mmcv.imfrombytes(get(path, backend_args=self.backend_args), backend='cv2')
            except Exception as err:  # any reader error is the answer here
                return f'camera image {path} ({cam}, {where}) cannot be read: {type(err).__name__}: {err}'
            if decoded is None:
                return (f'camera image {path} ({cam}, {where}) cannot be decoded: expected a JPEG or PNG image '
                        f'(the file is corrupt or not an image)')
        lidar = info.get('lidar_points') or {}
        if lidar.get('lidar_path') and osp.isfile(lidar['lidar_path']):
            try:
                check_lidar_file(Path(lidar['lidar_path']), where, int(lidar.get('num_pts_feats', LIDAR_POINT_DIMS)))
            except ValueError as err:
                return str(err)
        return None
