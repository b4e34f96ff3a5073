"""Constants of the nuScenes on-disk format and of mmdet3d's nuScenes conventions.

The data path (the info converter, the dataset, the plots) reads real nuScenes with these, and the synthetic
generator (:mod:`projects.sparsevit_bevdet.synthetic.nuscenes`) writes its database with the same ones, so
the converter never depends on the generator.
"""
from __future__ import annotations

__all__ = ['ATTRIBUTE_NAMES', 'CAMERA_NAMES', 'CATEGORIES', 'DETECTION_CLASSES', 'LIDAR_POINT_DIMS', 'TABLE_NAMES',
           'VERSIONS']

# Database versions the devkit reads (one folder of tables each).
VERSIONS = ('v1.0-trainval', 'v1.0-mini', 'v1.0-test')
# The 13 tables of a database version (``<root>/<version>/<name>.json``).
TABLE_NAMES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor',
               'ego_pose', 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
# mmdet3d's camera order (its nuScenes converter and LoadMultiViewImageFromFiles keep dict order).
CAMERA_NAMES = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
                'CAM_BACK_RIGHT')
# mmdet3d's NuScenesDataset class order; info labels index this tuple.
DETECTION_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle',
                     'pedestrian', 'traffic_cone', 'barrier')
# The 23 nuScenes categories (the devkit maps 10 of the detection classes onto them).
CATEGORIES = (
    'human.pedestrian.adult', 'human.pedestrian.child', 'human.pedestrian.wheelchair',
    'human.pedestrian.stroller', 'human.pedestrian.personal_mobility', 'human.pedestrian.police_officer',
    'human.pedestrian.construction_worker', 'animal', 'vehicle.car', 'vehicle.motorcycle',
    'vehicle.bicycle', 'vehicle.bus.bendy', 'vehicle.bus.rigid', 'vehicle.truck', 'vehicle.construction',
    'vehicle.emergency.ambulance', 'vehicle.emergency.police', 'vehicle.trailer', 'movable_object.barrier',
    'movable_object.trafficcone', 'movable_object.pushable_pullable', 'movable_object.debris',
    'static_object.bicycle_rack')
# mmdet3d's attribute order (NuScenesDataset.AttrMapping in mmdet3d 0.x; FCOS3D's attr_labels).
ATTRIBUTE_NAMES = ('cycle.with_rider', 'cycle.without_rider', 'pedestrian.moving', 'pedestrian.standing',
                   'pedestrian.sitting_lying_down', 'vehicle.moving', 'vehicle.parked', 'vehicle.stopped')
# nuScenes LIDAR_TOP .pcd.bin: float32 x, y, z, intensity, ring index per point
LIDAR_POINT_DIMS = 5
