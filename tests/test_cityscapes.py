"""Cityscapes side of the 2D config swaps: the synthetic Cityscapes generator, the Mask2Former + SparseViT
configs in configs/cityscapes/, mmseg's IoUMetric on the generated ground truth, and training."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope

from projects.sparsevit_bevdet.synthetic.cityscapes import (
    CITYSCAPES_LABELS,
    CITYSCAPES_TRAIN_CLASSES,
    DRAWN_LABELS,
    MARKER_FILE,
    SyntheticCityscapesConfig,
    generate_synthetic_cityscapes,
    label_ids_to_train_ids,
    synthetic_cityscapes_files,
)
from projects.sparsevit_bevdet.testing.configs import run_tiny_search
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs' / 'cityscapes'
SYNTH_CONFIG = CONFIG_DIR / 'mask2former_sparsevit-t_synth-cityscapes.py'
CITYSCAPES_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))
SMALL = dict(num_train=6, num_val=3, image_size=(128, 256), seed=5)
NAME_RE = re.compile(r'^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_(leftImg8bit|gtFine_labelIds|'
                     r'gtFine_labelTrainIds)\.png$')


def small_set(root: Path, **overrides: object) -> SimpleNamespace:
    cfg = SyntheticCityscapesConfig(out_dir=root, **{**SMALL, **overrides})
    return SimpleNamespace(root=root, cfg=cfg, summary=generate_synthetic_cityscapes(cfg))


@pytest.fixture(scope='module')
def cityscapes_set(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small synthetic Cityscapes shared by the tests of this module (read only)."""
    return small_set(tmp_path_factory.mktemp('cityscapes_synth'))


def mmseg_dataset(root: Path, split: str, pipeline: list[dict]):
    from mmseg.datasets import CityscapesDataset

    init_default_scope('mmseg')
    return CityscapesDataset(data_root=str(root), pipeline=pipeline,
                             data_prefix=dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'))


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 2, path
    return image


# ----------------------------------------------------------------------------------------------------
# labels


def test_label_table_matches_mmseg_and_the_official_train_ids() -> None:
    from mmseg.datasets import CityscapesDataset

    assert CityscapesDataset.METAINFO['classes'] == CITYSCAPES_TRAIN_CLASSES
    by_name = {label.name: label for label in CITYSCAPES_LABELS}
    palette = CityscapesDataset.METAINFO['palette']
    for train_id, name in enumerate(CITYSCAPES_TRAIN_CLASSES):
        assert by_name[name].train_id == train_id and list(by_name[name].color) == palette[train_id]
    assert [label.id for label in CITYSCAPES_LABELS] == list(range(34))
    ids = np.arange(256, dtype=np.uint8)
    train_ids = label_ids_to_train_ids(ids)
    # spot checks against cityscapesscripts' table; everything outside the 19 classes is ignored
    assert train_ids[7] == 0 and train_ids[8] == 1 and train_ids[26] == 13 and train_ids[33] == 18
    assert all(train_ids[by_name[n].id] == 255 for n in ('unlabeled', 'ego vehicle', 'rectification border',
                                                         'static', 'parking', 'polegroup', 'caravan', 'trailer'))
    assert (train_ids[34:] == 255).all() and int((train_ids != 255).sum()) == 19
    with pytest.raises(ValueError, match='uint8'):
        label_ids_to_train_ids(ids.astype(np.int32))


# ----------------------------------------------------------------------------------------------------
# generator


def test_layout_names_and_marker(cityscapes_set: SimpleNamespace) -> None:
    root = cityscapes_set.root
    for split, count, cities in (('train', 6, {'aachen', 'bochum', 'bremen', 'cologne', 'darmstadt',
                                                'dusseldorf'}), ('val', 3, {'frankfurt', 'lindau', 'munster'})):
        images = sorted((root / 'leftImg8bit' / split).glob('*/*.png'))
        gts = sorted((root / 'gtFine' / split).glob('*/*.png'))
        assert len(images) == count and len(gts) == 2 * count
        assert {p.parent.name for p in images} == cities
        for path in images + gts:
            match = NAME_RE.match(path.name)
            assert match and match['city'] == path.parent.name and match['frame'] == '000019', path
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker['complete'] and marker['seed'] == 5 and marker['image_size'] == [128, 256]
    assert not list(root.rglob('*.tmp'))
    assert set(cityscapes_set.summary.pixel_fraction) <= set(DRAWN_LABELS)
    assert 'road' in cityscapes_set.summary.table()


def test_train_ids_follow_label_ids_and_scenes_are_street_like(cityscapes_set: SimpleNamespace) -> None:
    seen: set[str] = set()
    name_of = {label.id: label.name for label in CITYSCAPES_LABELS}
    for split, count in (('train', 6), ('val', 3)):
        for i in range(count):
            files = synthetic_cityscapes_files(cityscapes_set.root, split, i)
            image = cv2.imread(str(files['image']), cv2.IMREAD_UNCHANGED)
            assert image.shape == (128, 256, 3) and image.dtype == np.uint8
            label_ids, train_ids = read_grey(files['label_ids']), read_grey(files['train_ids'])
            assert label_ids.shape == (128, 256)
            np.testing.assert_array_equal(train_ids, label_ids_to_train_ids(label_ids))
            assert {name_of[v] for v in np.unique(label_ids)} <= set(DRAWN_LABELS)
            seen |= {name_of[v] for v in np.unique(label_ids)}
            # sky on top, road (or the ignored bonnet / border) along the bottom centre
            assert name_of[int(np.bincount(label_ids[:8].ravel()).argmax())] in ('sky', 'building', 'vegetation',
                                                                                 'pole', 'traffic sign')
            bottom = label_ids[-12:-4, 96:160]
            assert np.isin(bottom, [7, 26, 1, 2, 24, 8]).mean() > 0.9
    assert {'road', 'sidewalk', 'building', 'sky', 'car'} <= seen


def test_generation_is_deterministic(tmp_path: Path) -> None:
    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob('*.png'))}

    options = dict(num_train=2, num_val=1, image_size=(64, 128))
    a, b = small_set(tmp_path / 'a', **options), small_set(tmp_path / 'b', **options)
    assert digests(a.root) == digests(b.root) and len(digests(a.root)) == 9
    c = small_set(tmp_path / 'c', **options, seed=6)
    assert digests(c.root) != digests(a.root)
    # an image depends on (seed, split, index) only, not on how many images are generated
    d = small_set(tmp_path / 'd', **{**options, 'num_train': 3})
    first = synthetic_cityscapes_files(a.root, 'train', 1)['image'].read_bytes()
    assert synthetic_cityscapes_files(d.root, 'train', 1)['image'].read_bytes() == first


def test_refuses_to_overwrite_and_validates(tmp_path: Path) -> None:
    done = small_set(tmp_path / 'done', num_train=1, num_val=0, image_size=(32, 64))
    with pytest.raises(FileExistsError, match='--overwrite'):
        small_set(done.root, num_train=1, num_val=0, image_size=(32, 64))
    again = small_set(done.root, num_train=2, num_val=0, image_size=(32, 64), overwrite=True)
    assert again.summary.num_images['train'] == 2
    foreign = tmp_path / 'foreign'
    (foreign / 'leftImg8bit').mkdir(parents=True)
    with pytest.raises(FileExistsError, match='does not look generated'):
        small_set(foreign, overwrite=True)
    # an interrupted run (marker not complete) is cleaned and regenerated without --overwrite
    marker = done.root / MARKER_FILE
    marker.write_text(json.dumps({**json.loads(marker.read_text()), 'complete': False}))
    (done.root / 'leftImg8bit' / 'train' / 'stale.png').write_bytes(b'')
    small_set(done.root, num_train=1, num_val=0, image_size=(32, 64))
    assert not (done.root / 'leftImg8bit' / 'train' / 'stale.png').exists()
    for field, value in (('num_train', -1), ('seed', 1.5), ('image_size', (16, 64)), ('image_size', (64,))):
        with pytest.raises(ValueError, match=field):
            SyntheticCityscapesConfig(out_dir=tmp_path / 'x', **{field: value}).validate()
    with pytest.raises(ValueError, match='nothing to generate'):
        SyntheticCityscapesConfig(out_dir=tmp_path / 'x', num_train=0, num_val=0).validate()


def test_command_line_tool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = load_tool('make_synthetic_cityscapes')
    args = ['--out-dir', str(tmp_path / 'cs'), '--num-train', '2', '--num-val', '1', '--image-size', '32', '64']
    assert tool.main(args) == 0
    out = capsys.readouterr()
    assert '2 train + 1 val images' in out.out and 'sky' in out.out and '3/3' in out.err
    assert len(list((tmp_path / 'cs' / 'gtFine').rglob('*_gtFine_labelTrainIds.png'))) == 3
    assert tool.main(args) == 1 and '--overwrite' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# mmseg: dataset and metric


def test_mmseg_cityscapes_dataset_reads_the_set(cityscapes_set: SimpleNamespace) -> None:
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    for split, count in (('train', 6), ('val', 3)):
        dataset = mmseg_dataset(cityscapes_set.root, split, pipeline)
        assert len(dataset) == count
        assert dataset.metainfo['classes'] == CITYSCAPES_TRAIN_CLASSES
        sample = dataset[0]
        assert sample['img'].shape == (128, 256, 3) and sample['seg_map_path'].endswith('_gtFine_labelTrainIds.png')
        expected = read_grey(Path(sample['seg_map_path']))
        np.testing.assert_array_equal(sample['gt_seg_map'], expected)
        assert set(np.unique(sample['gt_seg_map'])) <= set(range(19)) | {255}


def iou_metric_on(dataset, predict) -> dict[str, float]:
    from mmseg.evaluation import IoUMetric

    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        gt = torch.from_numpy(dataset[i]['gt_seg_map'].astype(np.int64))[None]
        metric.process({}, [{'pred_sem_seg': {'data': predict(gt)}, 'gt_sem_seg': {'data': gt}}])
    return metric.evaluate(len(dataset))


def test_ground_truth_as_prediction_scores_miou_1(cityscapes_set: SimpleNamespace) -> None:
    dataset = mmseg_dataset(cityscapes_set.root, 'val', [dict(type='LoadImageFromFile'),
                                                         dict(type='LoadAnnotations')])
    perfect = iou_metric_on(dataset, lambda gt: gt.clone())
    assert perfect['mIoU'] == 100.0 and perfect['aAcc'] == 100.0  # mmseg reports percent
    # ignored pixels (255) do not count, whatever is predicted there
    assert iou_metric_on(dataset, lambda gt: torch.where(gt == 255, 0, gt))['mIoU'] == 100.0
    # and a wrong prediction does count: cars predicted as road
    assert iou_metric_on(dataset, lambda gt: torch.where(gt == 13, 0, gt))['mIoU'] < 100.0


# ----------------------------------------------------------------------------------------------------
# configs


def test_configs_swap_the_backbone_and_keep_the_stock_recipe() -> None:
    assert set(CITYSCAPES_CONFIGS) == {'mask2former_sparsevit-l_cityscapes.py',
                                       'mask2former_sparsevit-l_cityscapes_adapt.py',
                                       'mask2former_sparsevit-t_synth-cityscapes.py',
                                       'mask2former_sparsevit-t_synth-cityscapes_adapt.py'}
    for name in CITYSCAPES_CONFIGS:
        cfg = Config.fromfile(CONFIG_DIR / name)
        assert cfg.default_scope == 'mmseg' and cfg.model._scope_ == 'mmseg'  # inherited via mmseg::
        assert cfg.custom_imports.imports == ['projects.sparsevit_bevdet']
        assert cfg.model.type == 'EncoderDecoder' and cfg.model.decode_head.type == 'Mask2FormerHead'
        assert cfg.model.backbone.type == 'SparseViT' and cfg.model.backbone.pruning_ratios == 0.0
        assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'
        assert cfg.val_evaluator.type == 'IoUMetric' and cfg.train_cfg.type == 'IterBasedTrainLoop'
        hooks = [h.type for h in cfg.get('custom_hooks', [])]
        assert hooks == (['SparsityAdaptationHook'] if name.endswith('_adapt.py') else [])
        if 'sparsevit-l' in name:
            backbone = cfg.model.backbone
            assert (backbone.embed_dims, list(backbone.depths), list(backbone.num_heads), backbone.window_size) == \
                (192, [2, 2, 18, 2], [6, 12, 24, 48], 12)
            assert backbone.init_cfg.checkpoint.endswith('.pth') and not backbone.convert_weights
            assert cfg.crop_size == (512, 1024) and cfg.train_dataloader.dataset.data_root == 'data/cityscapes/'
            assert cfg.model.decode_head.in_channels == [192, 384, 768, 1536]
            assert cfg.model.decode_head.num_queries == 100  # the stock head
        else:
            assert list(cfg.model.backbone.depths) == [2, 2, 6, 2] and cfg.model.backbone.window_size == 7
            assert cfg.model.backbone.init_cfg is None
            assert cfg.train_dataloader.dataset.data_root == 'data/cityscapes-synth/'
            assert cfg.model.decode_head.in_channels == [32, 64, 128, 256]


@pytest.mark.slow
@pytest.mark.parametrize('name', ['mask2former_sparsevit-t_synth-cityscapes.py',
                                  'mask2former_sparsevit-t_synth-cityscapes_adapt.py'])
def test_synth_configs_run_loss_and_predict(name: str, cityscapes_set: SimpleNamespace) -> None:
    from mmseg.registry import HOOKS, MODELS

    import projects.sparsevit_bevdet  # noqa: F401  (registers SparseViT in mmseg, as custom_imports does)
    from projects.sparsevit_bevdet.engine import find_image_encoder

    cfg = Config.fromfile(CONFIG_DIR / name)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    train = mmseg_dataset(cityscapes_set.root, 'train', cfg.train_dataloader.dataset.pipeline)
    encoder = find_image_encoder(model)
    if cfg.get('custom_hooks'):
        # what the adaptation hook does before a training iteration, on this model
        hook = HOOKS.build(cfg.custom_hooks[0])
        runner = SimpleNamespace(model=model, iter=3, message_hub=MessageHub.get_instance('test_cityscapes'))
        hook.before_train_iter(runner, 0)
        assert encoder.pruning_ratios != [[0.0] * d for d in (2, 2, 6, 2)]
    model.train()
    losses = model(**model.data_preprocessor(pseudo_collate([train[0], train[1]]), True), mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'} <= set(losses)
    total.backward()
    assert model.backbone.patch_embed.projection.weight.grad is not None
    val = mmseg_dataset(cityscapes_set.root, 'val', cfg.val_dataloader.dataset.pipeline)
    model.eval()
    for ratio in (0.0, 0.5):
        encoder.set_pruning_ratios(ratio)
        with torch.no_grad():
            results = model.test_step(pseudo_collate([val[0]]))
        pred = results[0].pred_sem_seg.data
        assert pred.shape == (1, 128, 256) and int(pred.max()) < 19


@pytest.mark.slow
def test_swin_l_config_builds_and_predicts() -> None:
    """SparseViT-L in the stock Swin-L head builds and predicts a small image (no checkpoint is fetched).

    The adapt variant differs only by its hook (checked above), so it is not built again.
    """
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import projects.sparsevit_bevdet  # noqa: F401

    cfg = Config.fromfile(CONFIG_DIR / 'mask2former_sparsevit-l_cityscapes.py')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)  # no init_weights: it would download the ImageNet-22k Swin-L
    space = model.backbone.search_space()
    assert [s.depth for s in space] == [2, 2, 18, 2] and [s.embed_dims for s in space] == [192, 384, 768, 1536]
    assert model.backbone.window_size == 12
    model.eval()
    batch = {'inputs': [torch.randint(0, 256, (3, 64, 128), dtype=torch.uint8)],
             'data_samples': [SegDataSample(metainfo=dict(img_shape=(64, 128), ori_shape=(64, 128)))]}
    model.backbone.set_pruning_ratios(0.5)
    with torch.no_grad():
        results = model.test_step(batch)
    assert results[0].pred_sem_seg.data.shape == (1, 64, 128)


# ----------------------------------------------------------------------------------------------------
# training through tools/train.py


def train_options(root: Path, max_iters: int) -> list[str]:
    data_root = str(root) + '/'
    return [f'train_dataloader.dataset.data_root={data_root}', f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}', f'train_cfg.max_iters={max_iters}',
            f'train_cfg.val_interval={max_iters}', f'default_hooks.checkpoint.interval={max_iters}',
            'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False']


def run_train(config: Path, work_dir: Path, options: list[str], timeout: int = 300) -> str:
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'), str(config), '--work-dir',
                           str(work_dir), '--cfg-options', *options], cwd=work_dir.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_synth_config_trains_with_tools_train(cityscapes_set: SimpleNamespace, tmp_path: Path) -> None:
    """Two iterations of the synthetic recipe through tools/train.py, then mmseg's IoUMetric on the val split."""
    work_dir = tmp_path / 'work'
    log = run_train(SYNTH_CONFIG, work_dir, train_options(cityscapes_set.root, 2))
    assert 'Iter(train) [2/2]' in log
    losses = [float(v) for v in re.findall(r'Iter\(train\).*? loss: ([0-9.]+)', log)]
    assert losses and all(np.isfinite(losses))
    miou = re.findall(r'Iter\(val\).*?mIoU: ([0-9.]+)', log)
    assert miou and 0.0 <= float(miou[-1]) <= 100.0
    checkpoint = torch.load(work_dir / 'iter_2.pth', weights_only=True)
    assert checkpoint['meta']['iter'] == 2 and 'backbone.patch_embed.projection.weight' in checkpoint['state_dict']

    # the search on those weights, scored by IoUMetric's mIoU
    best = run_tiny_search(SYNTH_CONFIG, work_dir / 'iter_2.pth', tmp_path / 'search', 'mIoU',
                           train_options(cityscapes_set.root, 2))
    assert best['metric'] == 'mIoU' and 0.0 <= best['score'] <= 100.0
    assert best['evolution']['evaluations'] >= 1 and best['uniform']['ratio'] in (0.0, 0.4)


@pytest.mark.long
def test_synth_config_reaches_the_miou_goal(tmp_path: Path) -> None:
    """The goal of the CPU recipe: the default set and schedule reach mIoU >= 60 (percent) on the val split."""
    data = tmp_path / 'cityscapes-synth'
    generate_synthetic_cityscapes(SyntheticCityscapesConfig(out_dir=data))
    root = str(data) + '/'
    work_dir = tmp_path / 'work'
    log = run_train(SYNTH_CONFIG, work_dir, [f'train_dataloader.dataset.data_root={root}',
                                             f'val_dataloader.dataset.data_root={root}'], timeout=3600)
    miou = [float(v) for v in re.findall(r'Iter\(val\).*?mIoU: ([0-9.]+)', log)]
    assert miou and miou[-1] >= 60.0, miou
