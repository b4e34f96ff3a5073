"""BEVDetCenterHead: BEVDet's per-task NMS type and per-class Scale-NMS on top of mmdet3d's CenterHead.

Head outputs are written by hand (one heatmap peak per object, exact sub-cell offsets, sizes and yaw), so
the boxes that reach NMS are known: duplicate pedestrians / cones that plain rotated NMS keeps (their BEV
boxes barely overlap) are removed by Scale-NMS, while the large classes come out as CenterHead gives them.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from mmdet3d.registry import MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.registry import DefaultScope

import projects.sparsevit_bevdet  # noqa: F401  (registers BEVDetCenterHead)
from projects.sparsevit_bevdet.models import BEVDetCenterHead, parse_scale_nms

CELL = 0.8  # voxel 0.1 m x out_size_factor 8, as BEVDet
GRID = 32  # 32 x 32 cells over +-12.8 m keeps the decoding cheap
PC_RANGE = [-12.8, -12.8, -5.0, 12.8, 12.8, 3.0]
TASKS = [dict(num_class=1, class_names=['car']),
         dict(num_class=2, class_names=['truck', 'construction_vehicle']),
         dict(num_class=2, class_names=['bus', 'trailer']),
         dict(num_class=1, class_names=['barrier']),
         dict(num_class=2, class_names=['motorcycle', 'bicycle']),
         dict(num_class=2, class_names=['pedestrian', 'traffic_cone'])]
CLASSES = [name for task in TASKS for name in task['class_names']]
# BEVDet's Scale-NMS (configs/bevdet/bevdet-sttiny.py of BEVDet)
SCALE_NMS = dict(nms_type=['rotate', 'rotate', 'rotate', 'circle', 'rotate', 'rotate'],
                 nms_thr=[0.2, 0.2, 0.2, 0.2, 0.2, 0.5],
                 nms_rescale_factor=[1.0, [0.7, 0.7], [0.4, 0.55], 1.1, [1.0, 1.0], [4.5, 9.0]])
PLAIN_NMS = dict(nms_type='rotate', nms_thr=0.2)
LARGE = ('car', 'truck', 'construction_vehicle', 'bus', 'trailer')

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU'))]


def head_cfg(head_type: str = 'BEVDetCenterHead', **nms) -> dict:
    test_cfg = dict(pc_range=PC_RANGE[:2], post_center_limit_range=[-20.0, -20.0, -10.0, 20.0, 20.0, 10.0],
                    max_per_img=500, max_pool_nms=False, min_radius=[4, 12, 10, 1, 0.85, 0.175], score_threshold=0.1,
                    out_size_factor=8, voxel_size=[0.1, 0.1], pre_max_size=1000, post_max_size=83, **nms)
    return dict(
        type=head_type, in_channels=16, tasks=copy.deepcopy(TASKS),
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)), share_conv_channel=16,
        bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=PC_RANGE[:2], post_center_range=[-20.0, -20.0, -10.0,
                        20.0, 20.0, 10.0], max_num=100, score_threshold=0.1, out_size_factor=8,
                        voxel_size=[0.1, 0.1], code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25), norm_bbox=True,
        test_cfg=test_cfg)


def build(**kwargs):
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return MODELS.build(head_cfg(**kwargs))


def head_maps(objects: list[dict], device: str) -> tuple[list[dict], ...]:
    """CenterHead outputs (logits) with one heatmap peak per object: ``dict(cls, x, y, l, w, score[, yaw])``."""
    maps = []
    for task in TASKS:
        maps.append(dict(heatmap=torch.full((1, task['num_class'], GRID, GRID), -12.0),
                         reg=torch.zeros(1, 2, GRID, GRID), height=torch.zeros(1, 1, GRID, GRID),
                         dim=torch.zeros(1, 3, GRID, GRID), rot=torch.zeros(1, 2, GRID, GRID),
                         vel=torch.zeros(1, 2, GRID, GRID)))
        maps[-1]['rot'][:, 1] = 1.0  # yaw 0 unless given
    used = set()
    for obj in objects:
        task_id = next(t for t, task in enumerate(TASKS) if obj['cls'] in task['class_names'])
        cls = TASKS[task_id]['class_names'].index(obj['cls'])
        u, v = (obj['x'] - PC_RANGE[0]) / CELL, (obj['y'] - PC_RANGE[1]) / CELL
        col, row = math.floor(u), math.floor(v)
        assert (task_id, row, col) not in used, f'two objects in one cell of task {task_id}: {obj}'
        used.add((task_id, row, col))
        m = maps[task_id]
        m['heatmap'][0, cls, row, col] = math.log(obj['score'] / (1 - obj['score']))
        m['reg'][0, :, row, col] = torch.tensor([u - col, v - row])
        m['height'][0, 0, row, col] = 0.8
        m['dim'][0, :, row, col] = torch.tensor([obj['l'], obj['w'], 1.7]).log()
        yaw = obj.get('yaw', 0.0)
        m['rot'][0, :, row, col] = torch.tensor([math.sin(yaw), math.cos(yaw)])
    return tuple([{k: t.to(device) for k, t in m.items()}] for m in maps)


def predict(head, objects: list[dict], device: str):
    meta = dict(box_type_3d=LiDARInstance3DBoxes)
    return head.to(device).predict_by_feat(head_maps(objects, device), [meta])[0]


def detections(result, classes=None) -> list[tuple]:
    """(class, x, y, l, w, score) of every kept box, sorted, optionally only of ``classes``."""
    rows = []
    for box, score, label in zip(result.bboxes_3d.tensor.cpu().tolist(), result.scores_3d.cpu().tolist(),
                                 result.labels_3d.cpu().tolist()):
        if classes is None or CLASSES[label] in classes:
            rows.append((CLASSES[label], *(round(c, 4) for c in (box[0], box[1], box[3], box[4], score))))
    return sorted(rows)


SMALL_DUPLICATES = [  # centres 0.5 m / 0.45 m apart: the BEV boxes overlap little (pedestrian) or not at all (cone)
    dict(cls='pedestrian', x=0.7, y=0.3, l=0.6, w=0.6, score=0.9),
    dict(cls='pedestrian', x=1.2, y=0.3, l=0.6, w=0.6, score=0.6),
    dict(cls='traffic_cone', x=-4.1, y=-4.1, l=0.4, w=0.4, score=0.8),
    dict(cls='traffic_cone', x=-3.65, y=-4.1, l=0.4, w=0.4, score=0.5),
]
SMALL_NEIGHBOURS = [  # distinct objects: a pedestrian 3 m away, another cone 4 m away
    dict(cls='pedestrian', x=0.7, y=3.3, l=0.6, w=0.6, score=0.7),
    dict(cls='traffic_cone', x=-0.1, y=-4.1, l=0.4, w=0.4, score=0.7),
]
LARGE_SCENE = [
    dict(cls='car', x=5.3, y=5.3, l=4.5, w=1.9, score=0.9),
    dict(cls='car', x=6.9, y=5.3, l=4.5, w=1.9, score=0.7),  # IoU 0.48 with the first: suppressed by both
    dict(cls='car', x=5.3, y=7.7, l=4.5, w=1.9, score=0.6, yaw=0.3),  # lateral neighbour: kept by both
    dict(cls='truck', x=-8.5, y=8.5, l=7.0, w=2.5, score=0.8),
    dict(cls='construction_vehicle', x=-8.5, y=2.5, l=6.0, w=2.8, score=0.5),
    dict(cls='bus', x=8.5, y=-8.5, l=11.0, w=2.9, score=0.85),
    dict(cls='trailer', x=-1.0, y=10.5, l=12.0, w=2.5, score=0.4),
]


@pytest.mark.parametrize('device', DEVICES)
def test_scale_nms_removes_small_duplicates_that_rotated_nms_keeps(device):
    scene = SMALL_DUPLICATES + SMALL_NEIGHBOURS
    plain = detections(predict(build(**PLAIN_NMS), scene, device))
    scaled = detections(predict(build(**SCALE_NMS), scene, device))
    assert len(plain) == 6  # rotated NMS at IoU 0.2 keeps both duplicates of each object
    assert [d[0] for d in scaled].count('pedestrian') == 2 and [d[0] for d in scaled].count('traffic_cone') == 2
    kept_scores = sorted(d[-1] for d in scaled)
    assert kept_scores == pytest.approx([0.7, 0.7, 0.8, 0.9], abs=1e-4)  # the weaker duplicates went, neighbours stay
    # the boxes keep their predicted size: the scaling only exists inside NMS
    sizes = {d[0]: (d[3], d[4]) for d in scaled}
    assert sizes == {'pedestrian': (0.6, 0.6), 'traffic_cone': (0.4, 0.4)}


@pytest.mark.parametrize('device', DEVICES)
def test_large_objects_come_out_as_centerhead_gives_them(device):
    scene = LARGE_SCENE + SMALL_DUPLICATES
    reference = predict(build(head_type='CenterHead', **PLAIN_NMS), scene, device)
    scaled = predict(build(**SCALE_NMS), scene, device)
    large = detections(reference, LARGE)
    assert len(large) == 6  # the overlapping second car is suppressed, everything else is kept
    assert detections(scaled, LARGE) == large
    assert len(detections(scaled)) == len(detections(reference)) - 2  # only the small duplicates differ


def test_shrinking_factor_keeps_overlapping_long_vehicles():
    # BEVDet's factor 0.55 for trailers: two trailers in a row overlapping by half (IoU 0.33) are both kept,
    # where plain rotated NMS at 0.2 merges them
    scene = [dict(cls='trailer', x=-6.1, y=0.3, l=12.0, w=2.5, score=0.8),
             dict(cls='trailer', x=-0.1, y=0.3, l=12.0, w=2.5, score=0.7)]
    assert len(detections(predict(build(**PLAIN_NMS), scene, 'cpu'))) == 1
    assert len(detections(predict(build(**SCALE_NMS), scene, 'cpu'))) == 2


def random_maps(seed: int, device: str) -> tuple[list[dict], ...]:
    g = torch.Generator().manual_seed(seed)
    maps = []
    for task in TASKS:
        m = dict(heatmap=torch.randn(1, task['num_class'], GRID, GRID, generator=g) * 2 - 2.5,
                 reg=torch.rand(1, 2, GRID, GRID, generator=g), height=torch.randn(1, 1, GRID, GRID, generator=g),
                 dim=torch.randn(1, 3, GRID, GRID, generator=g) * 0.5 + 0.5,
                 rot=torch.randn(1, 2, GRID, GRID, generator=g), vel=torch.randn(1, 2, GRID, GRID, generator=g))
        maps.append([{k: v.to(device) for k, v in m.items()}])
    return tuple(maps)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('nms_type', ['rotate', 'circle'])
def test_identical_to_centerhead_without_scaling(device, nms_type):
    # per-task lists of one NMS type and factors of 1 take the Scale-NMS path: it must equal CenterHead bit for bit
    per_task = dict(nms_type=[nms_type] * 6, nms_thr=[0.2] * 6, nms_rescale_factor=[1.0, [1.0, 1.0], 1.0, 1.0,
                                                                                      [1.0, 1.0], 1.0])
    meta = [dict(box_type_3d=LiDARInstance3DBoxes)] * 2
    reference = build(head_type='CenterHead', nms_type=nms_type, nms_thr=0.2).to(device)
    same_cfg = build(nms_type=nms_type, nms_thr=0.2).to(device)
    lists = build(**per_task).to(device)
    for seed in range(3):
        maps = random_maps(seed, device)
        maps = tuple([{k: torch.cat([v, v.flip(-1)]) for k, v in m[0].items()}] for m in maps)  # batch of 2
        expected = reference.predict_by_feat(copy.deepcopy(maps), meta)
        assert sum(len(r.scores_3d) for r in expected) > 50  # NMS has real work to do
        for head in (same_cfg, lists):
            for got, want in zip(head.predict_by_feat(copy.deepcopy(maps), meta), expected):
                assert torch.equal(got.bboxes_3d.tensor, want.bboxes_3d.tensor)
                assert torch.equal(got.scores_3d, want.scores_3d)
                assert torch.equal(got.labels_3d, want.labels_3d) and got.labels_3d.dtype == want.labels_3d.dtype


def test_mixed_types_match_centerhead_task_by_task():
    # each task's result equals CenterHead run with that task's NMS type alone (factors 1)
    mixed = dict(nms_type=['rotate', 'circle', 'rotate', 'circle', 'rotate', 'circle'], nms_thr=0.2)
    maps = random_maps(7, 'cpu')
    meta = [dict(box_type_3d=LiDARInstance3DBoxes)]
    got = detections(build(**mixed).predict_by_feat(copy.deepcopy(maps), meta)[0])
    rotate = detections(build(head_type='CenterHead', nms_type='rotate', nms_thr=0.2).predict_by_feat(
        copy.deepcopy(maps), meta)[0])
    circle = detections(build(head_type='CenterHead', nms_type='circle', nms_thr=0.2).predict_by_feat(
        copy.deepcopy(maps), meta)[0])
    for task_id, task in enumerate(TASKS):
        source = rotate if mixed['nms_type'][task_id] == 'rotate' else circle
        assert [d for d in got if d[0] in task['class_names']] == [d for d in source if d[0] in task['class_names']]


def test_bevdet_settings_parse_per_task_and_class():
    settings = parse_scale_nms(dict(SCALE_NMS, min_radius=[4, 12, 10, 1, 0.85, 0.175]),
                               [t['class_names'] for t in TASKS])
    assert [s.nms_type for s in settings] == SCALE_NMS['nms_type']
    assert [s.rescale for s in settings] == [(1.0,), (0.7, 0.7), (0.4, 0.55), (1.1,), (1.0, 1.0), (4.5, 9.0)]
    assert settings[5].nms_thr == 0.5
    assert isinstance(build(**SCALE_NMS), BEVDetCenterHead)


@pytest.mark.parametrize('change, message', [
    (dict(nms_type=['rotate'] * 5), 'nms_type has 5 entries'),
    (dict(nms_type=['rotate'] * 5 + ['oval']), "task 5 .* is 'oval'"),
    (dict(nms_thr=[0.2, 0.2]), 'nms_thr has 2 entries'),
    (dict(nms_rescale_factor=[1.0, [0.7], 1.0, 1.0, 1.0, 1.0]), r'nms_rescale_factor\[1\] .* has 1 factors, but task '
                                                                r'1 has 2 classes'),
    (dict(nms_rescale_factor=[1.0, 1.0, 1.0, 1.0, 1.0, [4.5, 0.0]]), r'nms_rescale_factor\[5\].*positive'),
    (dict(min_radius=None), r'circle NMS, which needs test_cfg.min_radius\[3\]'),
])
def test_invalid_settings_fail_at_build_time_naming_the_field(change, message):
    cfg = head_cfg(**SCALE_NMS)
    cfg['test_cfg'].update(change)
    with pytest.raises(ValueError, match=message), DefaultScope.overwrite_default_scope('mmdet3d'):
        MODELS.build(cfg)
