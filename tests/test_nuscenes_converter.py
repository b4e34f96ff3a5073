"""The nuScenes info converter: mmdet3d 1.x format, frame conventions, loading in mmdet3d, bad input."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from projects.sparsevit_bevdet.datasets.nuscenes_converter import create_nuscenes_infos, load_nuscenes
from projects.sparsevit_bevdet.synthetic.nuscenes import CAMERA_NAMES, DETECTION_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict:
    with open(path, 'rb') as f:
        return pickle.load(f)


@pytest.fixture(scope='module')
def val_infos(synthetic_nuscenes) -> dict:
    return _load(synthetic_nuscenes.infos['val'])


def _box_corners(box: np.ndarray) -> np.ndarray:
    """Corners of [x, y, z_gravity, l, w, h, yaw] boxes (for frame comparisons)."""
    x, y, z, length, width, height, yaw = box
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    local = signs * [length / 2, width / 2, height / 2]
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + [x, y, z]


def test_info_layout_matches_mmdet3d_v2(val_infos, synthetic_nuscenes):
    from nuscenes.utils.splits import mini_val

    meta = val_infos['metainfo']
    assert meta['version'] == 'v1.0-mini' and meta['dataset'] == 'nuscenes' and meta['info_version'] == '1.1'
    assert tuple(meta['classes']) == DETECTION_CLASSES
    assert meta['categories'] == {c: i for i, c in enumerate(DETECTION_CLASSES)}
    data = val_infos['data_list']
    assert len(data) == len(mini_val) * synthetic_nuscenes.cfg.samples_per_scene
    assert [d['sample_idx'] for d in data] == list(range(len(data)))
    assert {d['scene_name'] for d in data} == set(mini_val)
    for info in data:
        assert set(info) >= {'sample_idx', 'token', 'timestamp', 'ego2global', 'lidar_points', 'images',
                             'instances'}
        assert 1e9 < info['timestamp'] < 2e9  # seconds
        assert np.asarray(info['ego2global']).shape == (4, 4)
        lp = info['lidar_points']
        assert lp['num_pts_feats'] == 5 and lp['lidar_path'].endswith('.pcd.bin') and '/' not in lp['lidar_path']
        assert np.asarray(lp['lidar2ego']).shape == (4, 4)
        assert list(info['images']) == list(CAMERA_NAMES)
        for cam in info['images'].values():
            assert np.asarray(cam['cam2img']).shape == (3, 3)
            for key in ('cam2ego', 'lidar2cam', 'ego2global', 'cam2keyego'):
                assert np.asarray(cam[key]).shape == (4, 4), key
            assert cam['img_path'].endswith('.jpg') and '/' not in cam['img_path']
            assert cam['sample_data_token'] and cam['timestamp'] > info['timestamp']
        assert info['instances']
        for inst in info['instances']:
            assert len(inst['bbox_3d']) == 7 and len(inst['bbox_3d_ego']) == 7
            assert len(inst['velocity']) == 2 and len(inst['velocity_ego']) == 2
            assert 0 <= inst['bbox_label_3d'] < 10 and inst['bbox_label'] == inst['bbox_label_3d']
            assert inst['num_lidar_pts'] > 0 and inst['bbox_3d_isvalid'] is True
            assert np.isfinite(inst['velocity']).all()


def test_frames_are_consistent(val_infos, synthetic_nuscenes):
    """bbox_3d (LiDAR) and bbox_3d_ego are the same box; both match the global annotation; lidar2cam is
    the chain through both ego poses."""
    nusc = load_nuscenes(synthetic_nuscenes.root, 'v1.0-mini')
    for info in val_infos['data_list'][:3]:
        l2e = np.asarray(info['lidar_points']['lidar2ego'])
        e2g = np.asarray(info['ego2global'])
        sample = nusc.get('sample', info['token'])
        anns = {a: nusc.get('sample_annotation', a) for a in sample['anns']}
        assert len(anns) == len(info['instances'])
        for inst, ann in zip(info['instances'], anns.values()):
            lidar_c = _box_corners(np.asarray(inst['bbox_3d']))
            ego_c = _box_corners(np.asarray(inst['bbox_3d_ego']))
            np.testing.assert_allclose(lidar_c @ l2e[:3, :3].T + l2e[:3, 3], ego_c, atol=1e-9)
            centre_g = e2g[:3, :3] @ np.asarray(inst['bbox_3d_ego'][:3]) + e2g[:3, 3]
            np.testing.assert_allclose(centre_g, ann['translation'], atol=1e-9)  # gravity centre, as nuScenes
            np.testing.assert_allclose(inst['bbox_3d_ego'][3:6], np.asarray(ann['size'])[[1, 0, 2]])  # l, w, h
            v_g = nusc.box_velocity(ann['token'])[:2]
            np.testing.assert_allclose(e2g[:2, :2] @ inst['velocity_ego'], v_g, atol=1e-9)
        for cam in info['images'].values():
            chain = np.linalg.inv(np.asarray(cam['cam2keyego'])) @ l2e
            np.testing.assert_allclose(np.asarray(cam['lidar2cam']), chain, atol=1e-9)
            cam2keyego = np.linalg.inv(e2g) @ np.asarray(cam['ego2global']) @ np.asarray(cam['cam2ego'])
            np.testing.assert_allclose(np.asarray(cam['cam2keyego']), cam2keyego, atol=1e-9)


def test_projection_with_info_calibration_hits_rendered_objects(val_infos, synthetic_nuscenes):
    """Centres of GT boxes projected with the infos' lidar2cam and cam2img land on the very objects the
    renderer drew: the images and the calibration describe the same world."""
    from projects.sparsevit_bevdet.synthetic.nuscenes import render, world

    cfg = synthetic_nuscenes.cfg
    worlds = {w.name: w for w in world.build_worlds(cfg)}
    noise = render.noise_tile(*cfg.image_size)
    checked = 0
    for info in val_infos['data_list']:
        world = worlds[info['scene_name']]
        k = int(np.flatnonzero(world.sample_timestamps == round(info['timestamp'] * 1e6))[0])
        objs = world.objects
        present = (objs.first <= k) & (k <= objs.last)
        e2g = np.asarray(info['ego2global'])
        xy = objs.xy(world.time_of(int(world.sample_timestamps[k])))
        for cam_name, calib in zip(CAMERA_NAMES, world.cameras):
            cam = info['images'][cam_name]
            view = render.CameraView(calib, cfg.image_size)
            _, vis, sil, ids = render.render_camera(view, world, present, world.camera_timestamp(k, cam_name), noise,
                                                (0, 0), return_ids=True)
            lidar2img = np.eye(4)
            lidar2img[:3, :3] = cam['cam2img']
            lidar2img = lidar2img @ np.asarray(cam['lidar2cam'])
            for inst in info['instances']:
                centre_g = e2g[:3, :3] @ np.asarray(inst['bbox_3d_ego'][:3]) + e2g[:3, 3]
                i = int(np.argmin(np.hypot(*(xy - centre_g[:2]).T)))
                assert np.hypot(*(xy[i] - centre_g[:2])) < 1e-6
                if objs.speed[i] != 0 or sil[i] < 30 or vis[i] < 0.95 * sil[i]:
                    continue  # moving objects shift by the camera delay; skip small or occluded ones
                p = lidar2img @ np.array([*inst['bbox_3d'][:3], 1.0])
                u, v = round(p[0] / p[2]), round(p[1] / p[2])
                if p[2] <= 0 or not (0 <= u < ids.shape[1] and 0 <= v < ids.shape[0]):
                    continue  # the centre of a box cut by the image border
                assert ids[v, u] == i + 1, (cam_name, inst['instance_token'])
                checked += 1
    assert checked >= 10


def test_mmdet3d_dataset_loads_six_views(synthetic_nuscenes):
    from mmdet3d.datasets import NuScenesDataset
    from mmengine.registry import init_default_scope

    from projects.sparsevit_bevdet.datasets import EgoFrameNuScenesDataset

    init_default_scope('mmdet3d')
    prefix = dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMERA_NAMES})
    common = dict(data_root=str(synthetic_nuscenes.root), ann_file='nuscenes_infos_val.pkl',
                  pipeline=[dict(type='LoadMultiViewImageFromFiles', num_views=6)],
                  metainfo=dict(version='v1.0-mini', classes=DETECTION_CLASSES),
                  modality=dict(use_camera=True, use_lidar=False), data_prefix=prefix, filter_empty_gt=False)
    ds = NuScenesDataset(**common)
    ego_ds = EgoFrameNuScenesDataset(box_frame='ego', **common)
    infos = _load(synthetic_nuscenes.infos['val'])['data_list']
    assert len(ds) == len(ego_ds) == len(infos)
    h, w = synthetic_nuscenes.image_size
    for idx in (0, len(ds) - 1):
        out = ds[idx]
        assert len(out['img']) == 6 and all(img.shape == (h, w, 3) for img in out['img'])
        assert len(out['lidar2cam']) == 6 and len(out['cam2img']) == 6
        lidar_boxes = ds.get_data_info(idx)['ann_info']['gt_bboxes_3d']
        ego_boxes = ego_ds.get_data_info(idx)['ann_info']['gt_bboxes_3d']
        assert lidar_boxes.tensor.shape == ego_boxes.tensor.shape == (len(infos[idx]['instances']), 9)
        # The dataset moves z from the gravity centre (infos) to the bottom centre (LiDARInstance3DBoxes).
        expected = np.asarray([inst['bbox_3d_ego'] for inst in infos[idx]['instances']])
        np.testing.assert_allclose(ego_boxes.gravity_center.numpy(), expected[:, :3], atol=1e-4)
        np.testing.assert_allclose(ego_boxes.bottom_center[:, 2].numpy(), expected[:, 2] - expected[:, 5] / 2,
                                   atol=1e-4)
        np.testing.assert_allclose(ego_boxes.tensor[:, 7:9].numpy(),
                                   [inst['velocity_ego'] for inst in infos[idx]['instances']], atol=1e-5)
    with pytest.raises(ValueError, match='box_frame'):
        EgoFrameNuScenesDataset(box_frame='camera', **common)


# ----------------------------------------------------------------------------------------------------
# bad input


def test_wrong_root_and_missing_version(tmp_path, nuscenes_copy):
    with pytest.raises(FileNotFoundError, match='does-not-exist'):
        create_nuscenes_infos(tmp_path / 'does-not-exist', 'v1.0-mini', tmp_path / 'out')
    with pytest.raises(FileNotFoundError, match=r'v1\.0-trainval.*found: v1\.0-mini'):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-trainval', tmp_path / 'out')
    with pytest.raises(ValueError, match='unknown nuScenes version'):
        load_nuscenes(nuscenes_copy, 'v2.0')
    assert not (tmp_path / 'out').exists()


def test_missing_table(tmp_path, nuscenes_copy):
    (nuscenes_copy / 'v1.0-mini' / 'ego_pose.json').unlink()
    with pytest.raises(FileNotFoundError, match=r'ego_pose.*v1\.0-mini/ego_pose\.json'):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', tmp_path / 'out')


def test_corrupt_json_names_file_and_position(tmp_path, nuscenes_copy):
    path = nuscenes_copy / 'v1.0-mini' / 'sample_data.json'
    path.write_text(path.read_text()[:-200])  # truncated, as by an interrupted copy
    with pytest.raises(ValueError, match=r'sample_data\.json: corrupt JSON .* line \d+ column \d+'):
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', tmp_path / 'out')


def test_broken_reference_names_table_record_and_field(tmp_path, nuscenes_copy):
    path = nuscenes_copy / 'v1.0-mini' / 'sample_annotation.json'
    anns = json.loads(path.read_text())
    anns[5]['instance_token'] = 'f' * 32
    path.write_text(json.dumps(anns))
    with pytest.raises(ValueError, match=rf'sample_annotation\.json: record {anns[5]["token"]} field '
                                         r'"instance_token" refers to token .*instance\.json'):
        load_nuscenes(nuscenes_copy, 'v1.0-mini')


def test_missing_camera_image_names_file_and_record(tmp_path, nuscenes_copy):
    nusc = load_nuscenes(nuscenes_copy, 'v1.0-mini')
    sample = next(s for s in nusc.sample if nusc.get('scene', s['scene_token'])['name'] == 'scene-0916')
    sd = nusc.get('sample_data', sample['data']['CAM_BACK_LEFT'])
    (nuscenes_copy / sd['filename']).unlink()
    with pytest.raises(FileNotFoundError) as err:
        create_nuscenes_infos(nuscenes_copy, 'v1.0-mini', tmp_path / 'out', nusc=nusc)
    msg = str(err.value)
    assert sd['filename'] in msg and sd['token'] in msg and 'CAM_BACK_LEFT' in msg and sample['token'] in msg
    # Every split is converted before any pkl is written: the train split converted, but nothing was written.
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').iterdir())


def test_missing_map_mask(tmp_path, nuscenes_copy):
    shutil.rmtree(nuscenes_copy / 'maps')
    with pytest.raises(FileNotFoundError, match=r'map mask .*maps/.*\.png'):
        load_nuscenes(nuscenes_copy, 'v1.0-mini')


def test_create_data_cli(synthetic_nuscenes, tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT / 'tools'))
    try:
        import create_data
    finally:
        sys.path.pop(0)
    rc = create_data.main(['nuscenes', '--root-path', str(synthetic_nuscenes.root), '--version', 'v1.0-mini',
                           '--out-dir', str(tmp_path), '--extra-tag', 'synth'])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['synth_infos_train.pkl', 'synth_infos_val.pkl']
    assert _load(tmp_path / 'synth_infos_val.pkl') == _load(synthetic_nuscenes.infos['val'])
    assert 'synth_infos_val.pkl: 6 samples' in capsys.readouterr().out
    rc = create_data.main(['nuscenes', '--root-path', str(tmp_path / 'nope'), '--version', 'v1.0-mini',
                           '--out-dir', str(tmp_path)])
    assert rc == 1 and 'nope' in capsys.readouterr().err


def test_real_data_path_does_not_import_the_synthetic_generator():
    """The converter, tools/create_data.py and the format constants work without the synthetic package: importing
    them (in a fresh interpreter) loads no module of ``projects.sparsevit_bevdet.synthetic``."""
    code = textwrap.dedent("""
        import runpy, sys
        import projects.sparsevit_bevdet.datasets.nuscenes_converter
        import projects.sparsevit_bevdet.datasets.nuscenes_format
        runpy.run_path(sys.argv[1], run_name='create_data')  # the tool's imports, not its main()
        print(sorted(m for m in sys.modules if m.startswith('projects.sparsevit_bevdet.synthetic')))
        """)
    out = subprocess.run([sys.executable, '-c', code, str(REPO_ROOT / 'tools' / 'create_data.py')], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == '[]'


def test_generator_writes_the_data_path_constants():
    from projects.sparsevit_bevdet.datasets import nuscenes_format
    from projects.sparsevit_bevdet.synthetic.nuscenes import tables, world

    assert (CAMERA_NAMES, DETECTION_CLASSES) == (nuscenes_format.CAMERA_NAMES, nuscenes_format.DETECTION_CLASSES)
    assert world.CAMERA_NAMES is nuscenes_format.CAMERA_NAMES and tables.TABLE_NAMES is nuscenes_format.TABLE_NAMES
    assert tables.CATEGORIES is nuscenes_format.CATEGORIES
