"""nuScenes -> mmdet3d 1.x info pkls, through the official devkit, for any nuScenes root.

The same code converts real nuScenes (``v1.0-trainval``, ``v1.0-mini``, ``v1.0-test``) and the synthetic
database of :mod:`projects.sparsevit_bevdet.synthetic.nuscenes`; the format constants come from
:mod:`.nuscenes_format`, which the generator imports too (the converter never imports the generator).
Output: ``<out_dir>/<extra_tag>_infos_{train,val}.pkl`` (or ``..._test.pkl`` for ``v1.0-test``), each
``dict(metainfo=..., data_list=[...])``.

``metainfo``: ``categories`` (class -> label), ``classes``, ``dataset='nuscenes'``, ``version``,
``info_version='1.1'``, ``split`` and ``scene_split`` (the devkit split name).

``data_list`` entries follow mmdet3d's v2 nuScenes infos (``update_infos_to_v2.py``):

* ``sample_idx`` (position in ``data_list``; the metric looks samples up by it), ``token``,
  ``timestamp`` (seconds), ``ego2global`` (4x4, ego pose at the LiDAR key frame);
* ``lidar_points``: ``lidar_path`` (file name; configs put ``samples/LIDAR_TOP`` in ``data_prefix.pts``),
  ``num_pts_feats`` (5), ``lidar2ego`` (4x4);
* ``images``: per camera, in mmdet3d's order (CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK,
  CAM_BACK_LEFT, CAM_BACK_RIGHT): ``img_path`` (file name; ``data_prefix.CAM_*='samples/CAM_*'``),
  ``cam2img`` (3x3), ``cam2ego`` (4x4), ``lidar2cam`` (4x4, through both ego poses, as mmdet3d's
  ``obtain_sensor2top``), ``sample_data_token``, ``timestamp`` (seconds);
* ``instances``: ``bbox_3d`` (LiDAR frame ``[x, y, z, l, w, h, yaw]``, z at the box's *gravity centre*:
  mmdet3d's ``NuScenesDataset`` builds ``LiDARInstance3DBoxes(..., origin=(0.5, 0.5, 0.5))`` from it,
  which moves z to the bottom; yaw is the heading of the box's length axis, counter-clockwise from +x),
  ``bbox_label_3d`` and ``bbox_label`` (index into ``classes``, -1 for other categories), ``velocity``
  (LiDAR frame vx, vy; NaN where the devkit cannot derive one), ``num_lidar_pts``, ``num_radar_pts``,
  ``bbox_3d_isvalid`` (lidar + radar points > 0).

Extra fields for BEVDet (ego-frame detection) and tracking:

* ``instances[i]``: ``bbox_3d_ego`` (same layout as ``bbox_3d`` in the ego frame of the key frame),
  ``velocity_ego`` (ego-frame vx, vy), ``attr_label`` (index into :data:`ATTRIBUTE_NAMES`, -1 if none),
  ``instance_token``;
* ``images[cam]``: ``ego2global`` (the ego pose at the *camera's* timestamp), ``cam2keyego``
  (camera -> ego frame of the key frame: ``inv(ego2global) @ images[cam].ego2global @ cam2ego``,
  BEVDet's ``sensor2keyego``), ``height``, ``width``;
* ``scene_token``, ``scene_name``, ``prev``, ``next`` (sample tokens, '' at scene ends).

Errors name what is wrong: a missing root, version folder or table (``FileNotFoundError``), corrupt JSON
(``ValueError`` with file, line and column), a record lacking a field the devkit or the converter reads, or
holding a value of the wrong form there (``ValueError`` with table, record, field, value and what was
expected: :data:`REQUIRED_FIELDS`), a record pointing at a token no table holds (``ValueError``
with table, record token and field), a missing image or point file (``FileNotFoundError`` with the path,
channel, sample_data and sample tokens), a camera image whose header cannot be read or whose size differs
from its sample_data record, a LiDAR file whose size is not a whole number of points
(``ValueError``). Every split is converted before any pkl is written; then all are replaced together
(:func:`~..utils.atomic_io.atomic_replace_many`), so a failure leaves the previous pkls untouched.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.atomic_io import atomic_replace_many
from .geometry import pose_matrix, quat_to_matrix, yaw_of_matrix
from .nuscenes_format import (
    ATTRIBUTE_NAMES,
    CAMERA_NAMES,
    DETECTION_CLASSES,
    LIDAR_POINT_DIMS,
    TABLE_NAMES,
    VERSIONS,
)

if TYPE_CHECKING:
    from nuscenes import NuScenes

__all__ = ['ATTRIBUTE_NAMES', 'LIDAR_POINT_DIMS', 'REQUIRED_FIELDS', 'SPLITS_BY_VERSION', 'check_camera_image',
           'check_lidar_file', 'check_required_fields', 'check_table_references', 'create_nuscenes_infos',
           'load_nuscenes']

# devkit split name -> name of the output pkl
SPLITS_BY_VERSION: Dict[str, Dict[str, str]] = {
    'v1.0-trainval': {'train': 'train', 'val': 'val'},
    'v1.0-mini': {'mini_train': 'train', 'mini_val': 'val'},
    'v1.0-test': {'test': 'test'},
}
# Fields of each table that the devkit or this converter read (foreign keys are in _REFERENCES) and the form of
# their values: 'str', 'int', 'number', 'vec3' / 'vec4' (lists of numbers), 'list'.
REQUIRED_FIELDS: Dict[str, Dict[str, str]] = {
    'category': {'name': 'str'},
    'attribute': {'name': 'str'},
    'visibility': {'level': 'str'},
    'sensor': {'channel': 'str', 'modality': 'str'},
    'calibrated_sensor': {'translation': 'vec3', 'rotation': 'vec4', 'camera_intrinsic': 'list'},
    'ego_pose': {'translation': 'vec3', 'rotation': 'vec4', 'timestamp': 'int'},
    'log': {'logfile': 'str', 'location': 'str'},
    'scene': {'name': 'str', 'nbr_samples': 'int'},
    'sample': {'timestamp': 'int'},
    'sample_data': {'timestamp': 'int', 'filename': 'str', 'is_key_frame': 'bool', 'height': 'int', 'width': 'int'},
    'sample_annotation': {'translation': 'vec3', 'size': 'vec3', 'rotation': 'vec4', 'num_lidar_pts': 'int',
                          'num_radar_pts': 'int'},
    'instance': {'nbr_annotations': 'int'},
    'map': {'filename': 'str'},
}
_FORMS = {
    'str': ('a string', lambda v: isinstance(v, str)),
    'int': ('an integer', lambda v: isinstance(v, int) and not isinstance(v, bool)),
    'bool': ('true or false', lambda v: isinstance(v, bool)),
    'list': ('a list', lambda v: isinstance(v, list)),
    'vec3': ('a list of 3 numbers', lambda v: _is_vector(v, 3)),
    'vec4': ('a list of 4 numbers', lambda v: _is_vector(v, 4)),
}


def _is_vector(value: Any, size: int) -> bool:
    return (isinstance(value, list) and len(value) == size
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in value))


# Foreign keys the devkit and this converter follow: table -> [(field, target table, is_list)].
_REFERENCES: Dict[str, List[Tuple[str, str, bool]]] = {
    'instance': [('category_token', 'category', False), ('first_annotation_token', 'sample_annotation', False),
                 ('last_annotation_token', 'sample_annotation', False)],
    'calibrated_sensor': [('sensor_token', 'sensor', False)],
    'scene': [('log_token', 'log', False), ('first_sample_token', 'sample', False),
              ('last_sample_token', 'sample', False)],
    'sample': [('scene_token', 'scene', False), ('prev', 'sample', False), ('next', 'sample', False)],
    'sample_data': [('sample_token', 'sample', False), ('ego_pose_token', 'ego_pose', False),
                    ('calibrated_sensor_token', 'calibrated_sensor', False), ('prev', 'sample_data', False),
                    ('next', 'sample_data', False)],
    'sample_annotation': [('sample_token', 'sample', False), ('instance_token', 'instance', False),
                          ('visibility_token', 'visibility', False), ('attribute_tokens', 'attribute', True),
                          ('prev', 'sample_annotation', False), ('next', 'sample_annotation', False)],
    'map': [('log_tokens', 'log', True)],
}


# ----------------------------------------------------------------------------------------------------
# loading with clear errors


def _read_json_table(path: Path) -> Any:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: corrupt JSON ({e.msg} at line {e.lineno} column {e.colno})') from e
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e})') from e


def check_table_references(tables: Dict[str, Any], table_dir: Path) -> None:
    """Raise ``ValueError`` naming the table, record and field of the first broken reference, missing
    field or non-list table; also check that the map table covers every log."""
    tokens: Dict[str, set] = {}
    for name in TABLE_NAMES:
        records = tables[name]
        path = table_dir / f'{name}.json'
        if not isinstance(records, list):
            raise ValueError(f'{path}: expected a JSON list of records, got {type(records).__name__}')
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or 'token' not in rec:
                raise ValueError(f'{path}: record #{i} has no "token" field')
        tokens[name] = {rec['token'] for rec in records}
    for name, refs in _REFERENCES.items():
        path = table_dir / f'{name}.json'
        for rec in tables[name]:
            for field, target, is_list in refs:
                if field not in rec:
                    raise ValueError(f'{path}: record {rec["token"]} has no field "{field}"')
                values = rec[field] if is_list else [rec[field]]
                for value in values:
                    if value == '' and field in ('prev', 'next'):
                        continue
                    if value not in tokens[target]:
                        raise ValueError(f'{path}: record {rec["token"]} field "{field}" refers to token '
                                         f'{value!r}, which {target}.json does not hold')
    covered = {tok for rec in tables['map'] for tok in rec['log_tokens']}
    for rec in tables['log']:
        if rec['token'] not in covered:
            raise ValueError(f'{table_dir / "log.json"}: log {rec["token"]} is not listed in the log_tokens of '
                             f'any record of {table_dir / "map.json"}')
    for rec in tables['map']:
        if 'filename' not in rec:
            raise ValueError(f'{table_dir / "map.json"}: record {rec["token"]} has no field "filename"')


def check_required_fields(tables: Dict[str, Any], table_dir: Path) -> None:
    """Raise ``ValueError`` naming the table, record, field and value of the first record that lacks a field of
    :data:`REQUIRED_FIELDS` or holds a value of another form there."""
    for name, fields in REQUIRED_FIELDS.items():
        records = tables[name]
        path = table_dir / f'{name}.json'
        if not isinstance(records, list):
            raise ValueError(f'{path}: expected a JSON list of records, got {type(records).__name__}')
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f'{path}: record #{i} is {json.dumps(rec)[:60]}, expected a JSON object')
            label = f'record {rec["token"]}' if 'token' in rec else f'record #{i}'
            for field, form in fields.items():
                expected, fits = _FORMS[form]
                if field not in rec:
                    raise ValueError(f'{path}: {label} has no field "{field}" (expected {expected})')
                if not fits(rec[field]):
                    raise ValueError(f'{path}: {label} field "{field}" is {json.dumps(rec[field])[:60]}, expected '
                                     f'{expected}')


def load_nuscenes(dataroot: str | Path, version: str, verbose: bool = False) -> NuScenes:
    """Load a nuScenes database with the devkit, turning its assertions and KeyErrors into errors that
    name the file, table, record and field at fault."""
    from nuscenes import NuScenes

    root = Path(dataroot)
    if version not in VERSIONS:
        raise ValueError(f'unknown nuScenes version {version!r}; expected one of {", ".join(VERSIONS)}')
    if not root.is_dir():
        raise FileNotFoundError(f'nuScenes root {root} does not exist or is not a directory')
    table_dir = root / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in root.glob('v1.0-*') if p.is_dir())
        raise FileNotFoundError(f'version folder {table_dir} not found under nuScenes root {root} '
                                f'(found: {", ".join(found) if found else "no v1.0-* folder"})')
    for name in TABLE_NAMES:
        if not (table_dir / f'{name}.json').is_file():
            raise FileNotFoundError(f'table {name} is missing: {table_dir / f"{name}.json"} not found')
    # The devkit asserts on a missing map mask without naming the record; check the (small) map table first.
    maps = _read_json_table(table_dir / 'map.json')
    if not isinstance(maps, list):
        raise ValueError(f'{table_dir / "map.json"}: expected a JSON list of records, got {type(maps).__name__}')
    for rec in maps:
        if not isinstance(rec, dict) or 'filename' not in rec:
            raise ValueError(f'{table_dir / "map.json"}: record {rec!r:.80} has no field "filename"')
        mask_path = root / rec['filename']
        if not mask_path.is_file():
            raise FileNotFoundError(f'map mask {mask_path} of map record {rec.get("token")} '
                                    f'({table_dir / "map.json"}) not found')
    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=verbose)
    except Exception as err:
        # Re-read the tables to say which one is at fault; the devkit's own message names none.
        tables = {name: _read_json_table(table_dir / f'{name}.json') for name in TABLE_NAMES}
        check_table_references(tables, table_dir)
        check_required_fields(tables, table_dir)
        raise ValueError(f'the nuScenes devkit failed to load {table_dir}: {type(err).__name__}: {err}') from err
    # the devkit reads only what it indexes: the fields used later are checked here, before any conversion
    check_required_fields({name: getattr(nusc, name) for name in REQUIRED_FIELDS}, table_dir)
    return nusc


def _get(nusc: NuScenes, table: str, token: str, referrer: str) -> dict:
    """``nusc.get`` whose KeyError names the table, the token and who referred to it."""
    try:
        return nusc.get(table, token)
    except KeyError:
        raise ValueError(f'{Path(nusc.table_root) / f"{table}.json"}: no record with token {token!r} '
                         f'(referenced by {referrer})') from None


# ----------------------------------------------------------------------------------------------------
# conversion


def _instances(nusc: NuScenes, sample: dict, ego2global: np.ndarray, lidar2ego: np.ndarray,
               classes: Sequence[str]) -> List[dict]:
    from nuscenes.eval.detection.utils import category_to_detection_name

    r_e2g, t_e2g = ego2global[:3, :3], ego2global[:3, 3]
    r_l2e, t_l2e = lidar2ego[:3, :3], lidar2ego[:3, 3]
    attr_names = {rec['token']: rec['name'] for rec in nusc.attribute}
    out = []
    for ann_token in sample['anns']:
        ann = _get(nusc, 'sample_annotation', ann_token, f'sample {sample["token"]} field "anns"')
        name = category_to_detection_name(ann['category_name'])
        label = classes.index(name) if name in classes else -1
        w, length, h = (float(v) for v in ann['size'])
        r_glob = quat_to_matrix(ann['rotation'])
        center_e = r_e2g.T @ (np.asarray(ann['translation'], np.float64) - t_e2g)
        r_ego = r_e2g.T @ r_glob
        center_l = r_l2e.T @ (center_e - t_l2e)
        r_lidar = r_l2e.T @ r_ego
        # Like mmdet3d: the planar velocity is rotated with a zero vertical component.
        v_glob = np.array([*nusc.box_velocity(ann_token)[:2], 0.0])
        v_ego = r_e2g.T @ v_glob
        v_lidar = r_l2e.T @ v_ego
        attrs = [attr_names.get(tok) for tok in ann['attribute_tokens']]
        if None in attrs:
            raise ValueError(f'sample_annotation {ann_token}: unknown attribute token in {ann["attribute_tokens"]}')
        attr_label = ATTRIBUTE_NAMES.index(attrs[0]) if attrs and attrs[0] in ATTRIBUTE_NAMES else -1
        n_lidar, n_radar = int(ann['num_lidar_pts']), int(ann['num_radar_pts'])
        out.append({
            'bbox_3d': [*center_l.tolist(), length, w, h, float(yaw_of_matrix(r_lidar))],
            'bbox_label_3d': label,
            'bbox_label': label,
            'velocity': v_lidar[:2].tolist(),
            'num_lidar_pts': n_lidar,
            'num_radar_pts': n_radar,
            'bbox_3d_isvalid': n_lidar + n_radar > 0,
            'bbox_3d_ego': [*center_e.tolist(), length, w, h, float(yaw_of_matrix(r_ego))],
            'velocity_ego': v_ego[:2].tolist(),
            'attr_label': attr_label,
            'instance_token': ann['instance_token'],
        })
    return out


def sample_info(nusc: NuScenes, sample: dict, sample_idx: int, classes: Sequence[str],
                check_files: bool = True) -> dict:
    """The info dict of one sample (see the module docstring)."""
    root = Path(nusc.dataroot)
    scene = _get(nusc, 'scene', sample['scene_token'], f'sample {sample["token"]} field "scene_token"')
    where = f'sample {sample["token"]} of scene {scene["name"]}'

    def key_frame(channel: str) -> dict:
        if channel not in sample['data']:
            raise ValueError(f'{where} has no key-frame {channel} record in '
                             f'{Path(nusc.table_root) / "sample_data.json"}')
        sd = _get(nusc, 'sample_data', sample['data'][channel], f'{where} channel {channel}')
        if check_files:
            path = root / sd['filename']
            context = f'sample_data {sd["token"]}, channel {channel}, {where}'
            if not path.is_file():
                kind = 'point cloud' if channel.startswith('LIDAR') else 'camera image'
                raise FileNotFoundError(f'{kind} {path} not found ({context})')
            if channel.startswith('LIDAR'):
                check_lidar_file(path, context)
            else:
                check_camera_image(path, (int(sd['height']), int(sd['width'])), context)
        return sd

    def pose(sd: dict) -> Tuple[np.ndarray, np.ndarray]:
        cs = _get(nusc, 'calibrated_sensor', sd['calibrated_sensor_token'],
                  f'sample_data {sd["token"]} field "calibrated_sensor_token"')
        ep = _get(nusc, 'ego_pose', sd['ego_pose_token'], f'sample_data {sd["token"]} field "ego_pose_token"')
        return pose_matrix(cs['rotation'], cs['translation']), pose_matrix(ep['rotation'], ep['translation'])

    lidar_sd = key_frame('LIDAR_TOP')
    lidar2ego, ego2global = pose(lidar_sd)
    lidar2global = ego2global @ lidar2ego
    global2ego = np.linalg.inv(ego2global)
    images = {}
    for cam in CAMERA_NAMES:
        sd = key_frame(cam)
        cam2ego, cam_ego2global = pose(sd)
        cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        intrinsic = np.asarray(cs['camera_intrinsic'], np.float64)
        if intrinsic.shape != (3, 3):
            raise ValueError(f'{Path(nusc.table_root) / "calibrated_sensor.json"}: record {cs["token"]} '
                             f'({cam}) has camera_intrinsic of shape {intrinsic.shape}, expected 3x3')
        cam2global = cam_ego2global @ cam2ego
        images[cam] = {
            'img_path': Path(sd['filename']).name,
            'cam2img': intrinsic.tolist(),
            'cam2ego': cam2ego.tolist(),
            'lidar2cam': (np.linalg.inv(cam2global) @ lidar2global).tolist(),
            'sample_data_token': sd['token'],
            'timestamp': sd['timestamp'] / 1e6,
            'ego2global': cam_ego2global.tolist(),
            'cam2keyego': (global2ego @ cam2global).tolist(),
            'height': int(sd['height']),
            'width': int(sd['width']),
        }
    return {
        'sample_idx': sample_idx,
        'token': sample['token'],
        'timestamp': sample['timestamp'] / 1e6,
        'ego2global': ego2global.tolist(),
        'lidar_points': {
            'num_pts_feats': 5,
            'lidar_path': Path(lidar_sd['filename']).name,
            'lidar2ego': lidar2ego.tolist(),
            'sample_data_token': lidar_sd['token'],
            'timestamp': lidar_sd['timestamp'] / 1e6,
        },
        'images': images,
        'instances': _instances(nusc, sample, ego2global, lidar2ego, classes),
        'scene_token': scene['token'],
        'scene_name': scene['name'],
        'prev': sample['prev'],
        'next': sample['next'],
    }


def check_lidar_file(path: Path, context: str = '', dims: int = LIDAR_POINT_DIMS) -> None:
    """Raise ``ValueError`` if the size of a ``.pcd.bin`` is not a positive whole number of float32 points."""
    size = path.stat().st_size
    point = 4 * dims
    if size == 0 or size % point:
        raise ValueError(f'LiDAR point file {path} has {size} bytes, which is not a whole, non-zero number of points '
                         f'of {dims} float32 values ({point} bytes each){f" ({context})" if context else ""}; the file '
                         'is truncated or not a nuScenes .pcd.bin')


def check_camera_image(path: Path, hw: Optional[Tuple[int, int]] = None, context: str = '') -> None:
    """Raise ``ValueError`` if an image's header cannot be read, or its size is not ``hw`` (height, width).

    Only the header is read (decoding every image of a real split would take hours); an image cut short after
    its header is caught where it is decoded."""
    from PIL import Image, UnidentifiedImageError

    where = f' ({context})' if context else ''
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f'camera image {path} cannot be read as an image{where}: {err}') from err
    if path.suffix.lower() in ('.jpg', '.jpeg'):
        # the end-of-image marker: a JPEG cut short after its header decodes to a partly grey image, silently
        with open(path, 'rb') as f:
            f.seek(max(0, path.stat().st_size - 64))
            tail = f.read().rstrip(b'\x00')
        if not tail.endswith(b'\xff\xd9'):
            raise ValueError(f'camera image {path} is a JPEG without its end-of-image marker{where}: the file is '
                             'truncated (convert with --no-check-files to skip the image checks)')
    if hw is not None and (height, width) != tuple(hw):
        raise ValueError(f'camera image {path} is {height}x{width} (height x width), but its sample_data record says '
                         f'{hw[0]}x{hw[1]}{where}')


def _scene_samples(nusc: NuScenes, scene: dict) -> Iterable[dict]:
    """The samples of a scene in time order, following the next links."""
    token = scene['first_sample_token']
    seen = 0
    while token:
        sample = _get(nusc, 'sample', token, f'scene {scene["name"]} sample chain')
        yield sample
        seen += 1
        if seen > scene['nbr_samples']:
            raise ValueError(f'scene {scene["name"]} ({scene["token"]}): the sample next-chain is longer than '
                             f'nbr_samples={scene["nbr_samples"]} (a cycle?)')
        token = sample['next']
    if seen != scene['nbr_samples']:
        raise ValueError(f'scene {scene["name"]} ({scene["token"]}): {seen} samples along the next-chain but '
                         f'nbr_samples={scene["nbr_samples"]}')


def create_nuscenes_infos(root_path: str | Path, version: str, out_dir: str | Path,
                          extra_tag: str = 'nuscenes', classes: Sequence[str] = DETECTION_CLASSES,
                          check_files: bool = True, progress: bool = False,
                          nusc: Optional[NuScenes] = None, partial: bool = False) -> Dict[str, Path]:
    """Write the info pkls of every split of ``version``; return ``{split: pkl path}``.

    Args:
        root_path: nuScenes root (holds ``<version>/``, ``samples/``, ``maps/``).
        version: ``v1.0-trainval``, ``v1.0-mini`` or ``v1.0-test``.
        out_dir: where the pkls go (created if needed).
        extra_tag: file name prefix, ``<extra_tag>_infos_<split>.pkl``.
        classes: detection classes, in label order (mmdet3d's NuScenesDataset order by default).
        check_files: verify that every referenced image and point file exists.
        progress: show a progress bar.
        nusc: an already loaded database (otherwise loaded from ``root_path``).
        partial: convert the scenes of each split that the database holds (a partial database, e.g. the
            synthetic ``v1.0-trainval``); by default every scene of the split must be there.
    """
    from nuscenes.utils.splits import create_splits_scenes

    if nusc is None:
        nusc = load_nuscenes(root_path, version)
    splits = create_splits_scenes()
    scenes_by_name = {s['name']: s for s in nusc.scene}
    out_dir = Path(out_dir)
    written = {}
    for split, out_name in SPLITS_BY_VERSION[version].items():
        missing = [n for n in splits[split] if n not in scenes_by_name]
        if partial and len(missing) < len(splits[split]):
            missing = []
        if missing:
            raise ValueError(f'{Path(nusc.table_root) / "scene.json"} lacks {len(missing)} scene(s) of the devkit '
                             f'split {split!r}: {", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}')
        samples = [s for name in splits[split] if name in scenes_by_name
                   for s in _scene_samples(nusc, scenes_by_name[name])]
        bar = None
        if progress:
            from mmengine.utils import ProgressBar
            print(f'{split}: {len(samples)} samples')
            bar = ProgressBar(len(samples))
        data_list = []
        for idx, sample in enumerate(samples):
            data_list.append(sample_info(nusc, sample, idx, classes, check_files=check_files))
            if bar is not None:
                bar.update()
        if bar is not None:
            print()
        metainfo = {
            'categories': {c: i for i, c in enumerate(classes)},
            'classes': tuple(classes),
            'dataset': 'nuscenes',
            'version': version,
            'info_version': '1.1',
            'split': out_name,
            'scene_split': split,
        }
        infos = {'metainfo': metainfo, 'data_list': data_list}
        written[out_name] = (out_dir / f'{extra_tag}_infos_{out_name}.pkl', infos)
    # every split converted: only now replace the files, all together (a failure above left the old ones)
    atomic_replace_many({path: pickle.dumps(infos, protocol=pickle.HIGHEST_PROTOCOL)
                         for path, infos in written.values()})
    return {name: path for name, (path, _) in written.items()}


def summarize_infos(path: str | Path) -> str:
    """A readable per-class table of one info pkl (instances with points / all)."""
    with open(path, 'rb') as f:
        infos = pickle.load(f)
    classes = infos['metainfo']['classes']
    valid = np.zeros(len(classes), np.int64)
    total = np.zeros(len(classes), np.int64)
    for info in infos['data_list']:
        for inst in info['instances']:
            if inst['bbox_label_3d'] >= 0:
                total[inst['bbox_label_3d']] += 1
                valid[inst['bbox_label_3d']] += int(inst['bbox_3d_isvalid'])
    lines = [f'{Path(path).name}: {len(infos["data_list"])} samples, version {infos["metainfo"]["version"]}',
             f'  {"class":<22}{"valid":>8}{"all":>8}']
    lines += [f'  {c:<22}{valid[i]:>8}{total[i]:>8}' for i, c in enumerate(classes)]
    return '\n'.join(lines)
