"""COCO side of the 2D config swaps: the synthetic COCO generator, the configs in configs/coco/, training."""
from __future__ import annotations

import json
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
from mmengine.registry import init_default_scope

from projects.sparsevit_bevdet.synthetic import common
from projects.sparsevit_bevdet.synthetic.coco import (
    CATEGORIES,
    CLASSES,
    SyntheticCocoConfig,
    generate_synthetic_coco,
)
from projects.sparsevit_bevdet.testing.configs import run_tiny_search
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs' / 'coco'
SYNTH_CONFIG = CONFIG_DIR / 'mask-rcnn_sparsevit-t_fpn_synth-coco.py'
SEARCHED_RATIOS = {
    'r30': [[.3, .3], [0, 0], [.1, .1, .2, .2, .2, .2], [0, 0]],
    'r60': [[.6, .6], [0, 0], [.2, .2, .4, .4, .5, .5], [0, 0]],
    'r70': [[.7, .7], [0, 0], [.2, .2, .4, .4, .5, .5], [0, 0]],
}
SMALL = dict(num_train=6, num_val=4, image_size=(96, 128), seed=3)


def small_set(root: Path, **overrides: object) -> SimpleNamespace:
    cfg = SyntheticCocoConfig(out_dir=root, **{**SMALL, **overrides})
    return SimpleNamespace(root=root, cfg=cfg, summary=generate_synthetic_coco(cfg))


@pytest.fixture(scope='module')
def coco_set(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small synthetic COCO set shared by the tests of this module (read only)."""
    return small_set(tmp_path_factory.mktemp('coco_synth'))


# ----------------------------------------------------------------------------------------------------
# synthetic/common.py

def test_rng_for_is_keyed_not_sequential() -> None:
    assert common.rng_for(0, 1, 2).random() == common.rng_for(0, 1, 2).random()
    assert common.rng_for(0, 1, 2).random() != common.rng_for(0, 12).random()
    with pytest.raises(ValueError, match='non-negative'):
        common.rng_for(0, -1)


@pytest.mark.parametrize('kind', common.SHAPE_KINDS)
def test_mask_to_polygons_round_trips_through_pycocotools(kind: str) -> None:
    """A mask -> polygons -> COCO rasterisation gives back the mask (up to a sharp corner's pixel)."""
    rng = common.rng_for(0)
    polygon = common.random_shape_polygon(rng, kind, (40.0, 30.0), 22.0)
    assert polygon.ndim == 2 and polygon.shape[1] == 2 and len(polygon) >= 3
    # the shape fits in its circle
    assert np.linalg.norm(polygon - [40.0, 30.0], axis=1).max() <= 22.0 + 1e-6
    mask = common.polygon_mask(polygon, 64, 80)
    back = np.zeros_like(mask)
    for part in common.mask_to_polygons(mask):
        back |= common.polygon_mask(part, 64, 80)
    assert (mask ^ back).sum() <= 4 and mask.sum() > 200
    x, y, w, h = common.mask_bbox(mask)
    assert mask[y:y + h, x:x + w].sum() == mask.sum() and mask[y, x:x + w].any() and mask[y + h - 1].any()


def test_write_image_is_atomic_and_checks_input(tmp_path: Path) -> None:
    image = common.textured_background(common.rng_for(1), 32, 48)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    common.write_image(tmp_path / 'a' / 'x.png', image)
    assert np.array_equal(cv2.imread(str(tmp_path / 'a' / 'x.png')), image)  # PNG is lossless
    assert [p.name for p in (tmp_path / 'a').iterdir()] == ['x.png']  # no temporary file left
    with pytest.raises(ValueError, match='unsupported extension'):
        common.write_image(tmp_path / 'x.bmp', image)
    with pytest.raises(ValueError, match='uint8'):
        common.encode_image(image.astype(np.float32))


# ----------------------------------------------------------------------------------------------------
# synthetic/coco.py

def test_generation_is_deterministic(coco_set: SimpleNamespace, tmp_path: Path) -> None:
    again = small_set(tmp_path / 'again')
    fewer = small_set(tmp_path / 'fewer', num_train=3)
    other = small_set(tmp_path / 'other', seed=4)
    for split in ('train', 'val'):
        name = f'annotations/instances_{split}2017.json'
        assert (coco_set.root / name).read_bytes() == (again.root / name).read_bytes()
        assert (coco_set.root / name).read_bytes() != (other.root / name).read_bytes()
    for path in sorted((coco_set.root / 'train2017').iterdir()):
        assert path.read_bytes() == (again.root / 'train2017' / path.name).read_bytes()
    # image i depends on (seed, split, i) only, not on how many images the set has
    for path in sorted((fewer.root / 'train2017').iterdir()):
        assert path.read_bytes() == (coco_set.root / 'train2017' / path.name).read_bytes()


def test_pycocotools_reads_the_set_and_masks_match_boxes(coco_set: SimpleNamespace) -> None:
    from pycocotools.coco import COCO

    height, width = SMALL['image_size']
    total = 0
    for split, count in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        coco = COCO(str(coco_set.root / 'annotations' / f'instances_{split}2017.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        assert sorted(coco.getImgIds()) == list(range(1, count + 1))
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            image = cv2.imread(str(coco_set.root / f'{split}2017' / info['file_name']))
            assert image.shape == (height, width, 3) == (info['height'], info['width'], 3)
            union = np.zeros((height, width), bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
                mask = coco.annToMask(ann).astype(bool)
                x, y, w, h = ann['bbox']
                assert common.mask_bbox(mask) == (x, y, w, h)
                assert ann['area'] == mask.sum() > 0 and ann['iscrowd'] == 0
                assert all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in ann['segmentation'])
                # visible parts only: no pixel belongs to two instances
                assert not (union & mask).any()
                union |= mask
                # the painted colour inside the mask is its category's (image and labels line up)
                inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                if inner.sum() >= 10:
                    mean = image[inner].mean(axis=0)
                    distances = [np.linalg.norm(mean - c.color_bgr) for c in CATEGORIES]
                    assert CATEGORIES[int(np.argmin(distances))].id == ann['category_id']
                total += 1
    assert total == coco_set.summary['train']['annotations'] + coco_set.summary['val']['annotations'] > 10


def test_mmdet_coco_dataset_reads_the_set(coco_set: SimpleNamespace) -> None:
    from mmdet.datasets import CocoDataset

    init_default_scope('mmdet')
    dataset = CocoDataset(data_root=str(coco_set.root), ann_file='annotations/instances_train2017.json',
                          data_prefix=dict(img='train2017/'), metainfo=dict(classes=CLASSES),
                          pipeline=[dict(type='LoadImageFromFile'),
                                    dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    assert len(dataset) == SMALL['num_train']
    sample = dataset[0]
    assert sample['img'].shape == (*SMALL['image_size'], 3)
    assert len(sample['gt_bboxes']) == len(sample['gt_masks']) == len(sample['gt_bboxes_labels']) > 0
    assert set(sample['gt_bboxes_labels'].tolist()) <= set(range(len(CLASSES)))


def test_ground_truth_as_predictions_scores_ap_one(coco_set: SimpleNamespace) -> None:
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO

    ann_file = str(coco_set.root / 'annotations' / 'instances_val2017.json')
    coco = COCO(ann_file)
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=CLASSES)
    samples = []
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        boxes = torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns], dtype=torch.float32)
        masks = torch.from_numpy(np.stack([coco.annToMask(a).astype(bool) for a in anns]))
        samples.append(dict(img_id=image_id, ori_shape=(info['height'], info['width']),
                            pred_instances=dict(bboxes=boxes, scores=torch.ones(len(anns)),
                                                labels=torch.tensor([a['category_id'] - 1 for a in anns]),
                                                masks=masks)))
    metric.process({}, samples)
    results = metric.compute_metrics(metric.results)
    assert results['bbox_mAP'] == pytest.approx(1.0) and results['segm_mAP'] == pytest.approx(1.0)


def test_bad_settings_and_overwrites_are_refused(coco_set: SimpleNamespace, tmp_path: Path) -> None:
    for field, value in (('image_size', (16, 64)), ('num_val', 0), ('objects', (3, 2)), ('radius', (0.1, 0.6)),
                         ('seed', -1), ('max_occlusion', 1.0)):
        with pytest.raises(ValueError, match=rf'SyntheticCocoConfig\.{field}='):
            SyntheticCocoConfig(out_dir=tmp_path, **{field: value}).validate()
    root = tmp_path / 'set'
    small_set(root, num_train=2, num_val=1)
    with pytest.raises(FileExistsError, match='overwrite'):
        small_set(root, num_train=2, num_val=1)
    small_set(root, num_train=1, num_val=1, overwrite=True)
    assert sorted(p.name for p in (root / 'train2017').iterdir()) == ['000000000001.jpg']  # old images gone
    foreign = tmp_path / 'real'
    (foreign / 'annotations').mkdir(parents=True)
    (foreign / 'annotations' / 'instances_val2017.json').write_text(json.dumps({'info': {'description': 'COCO'}}))
    with pytest.raises(FileExistsError, match='not written by this generator'):
        small_set(foreign, overwrite=True)
    assert (foreign / 'annotations' / 'instances_val2017.json').exists()


def test_cli_writes_the_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = load_tool('make_synthetic_coco')
    out = tmp_path / 'cli'
    args = ['--out-dir', str(out), '--num-train', '2', '--num-val', '1', '--image-size', '64', '80', '--seed', '5']
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert 'train: 2 images' in printed and 'val: 1 images' in printed
    data = json.loads((out / 'annotations' / 'instances_train2017.json').read_text())
    assert [(i['height'], i['width']) for i in data['images']] == [(64, 80)] * 2
    assert tool.main(args) == 1  # exists, no --overwrite
    assert 'overwrite' in capsys.readouterr().err
    assert tool.main([*args, '--image-size', '8', '8', '--overwrite']) == 1
    assert 'image_size' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# configs/coco/

COCO_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))


def test_the_expected_configs_are_shipped() -> None:
    expected = {'mask-rcnn_sparsevit-t_fpn_672_coco.py', 'mask-rcnn_sparsevit-t_fpn_672_coco_adapt.py',
                'mask-rcnn_sparsevit-t_fpn_synth-coco.py', 'mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py',
                *(f'mask-rcnn_sparsevit-t-{tag}_fpn_672_coco.py' for tag in SEARCHED_RATIOS)}
    assert expected <= set(COCO_CONFIGS)


def test_configs_inherit_stock_mmdet_and_swap_the_backbone() -> None:
    dense = Config.fromfile(CONFIG_DIR / 'mask-rcnn_sparsevit-t_fpn_672_coco.py')
    assert dense.default_scope == 'mmdet' and dense.model.type == 'MaskRCNN'
    assert dense.custom_imports == dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)
    backbone = dense.model.backbone
    assert backbone.type == 'SparseViT' and backbone.pruning_ratios == 0.0
    assert (backbone.embed_dims, list(backbone.depths), list(backbone.num_heads), backbone.window_size) == \
        (96, [2, 2, 6, 2], [3, 6, 12, 24], 7)
    assert backbone.init_cfg.type == 'Pretrained' and backbone.convert_weights
    # the stock recipe is kept: COCO 2017 paths, 1x schedule, AdamW
    assert dense.train_dataloader.dataset.data_root == 'data/coco/' and dense.train_cfg.max_epochs == 12
    assert dense.optim_wrapper.optimizer.type == 'AdamW'
    # 672 x 672 inputs: resize then pad to exactly the paper's shape
    steps = {s['type']: s for s in dense.test_dataloader.dataset.pipeline}
    assert steps['Resize']['scale'] == (672, 672) and steps['Pad']['size'] == (672, 672)
    for tag, ratios in SEARCHED_RATIOS.items():
        cfg = Config.fromfile(CONFIG_DIR / f'mask-rcnn_sparsevit-t-{tag}_fpn_672_coco.py')
        assert cfg.model.backbone.pruning_ratios == ratios
    for name in ('mask-rcnn_sparsevit-t_fpn_672_coco_adapt.py', 'mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py'):
        hooks = Config.fromfile(CONFIG_DIR / name).custom_hooks
        assert [h['type'] for h in hooks] == ['SparsityAdaptationHook']
    synth = Config.fromfile(SYNTH_CONFIG)
    assert tuple(synth.train_dataloader.dataset.metainfo.classes) == CLASSES
    assert synth.model.roi_head.bbox_head.num_classes == synth.model.roi_head.mask_head.num_classes == len(CLASSES)
    assert synth.val_evaluator.metric == ['bbox', 'segm'] and synth.train_cfg.type == 'IterBasedTrainLoop'
    assert list(synth.model.backbone.depths) == [2, 2, 6, 2] and synth.model.backbone.window_size == 7


@pytest.mark.slow
@pytest.mark.parametrize('name', COCO_CONFIGS)
def test_config_builds_and_runs_loss_and_predict(name: str) -> None:
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    import projects.sparsevit_bevdet  # noqa: F401  (registers SparseViT in mmdet, as custom_imports does)

    cfg = Config.fromfile(CONFIG_DIR / name)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)  # no init_weights: the 672 configs would fetch the ImageNet checkpoint
    num_classes = cfg.model.roi_head.bbox_head.num_classes
    batch = demo_mm_inputs(batch_size=1, image_shapes=[(3, 96, 128)], num_items=[2], num_classes=num_classes,
                           with_mask=True)
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    total, _ = model.parse_losses(losses)
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses) and torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch, False), mode='predict')
    pred = results[0].pred_instances
    assert len(pred.bboxes) == len(pred.scores) == len(pred.masks)
    assert pred.masks.shape[1:] == (96, 128)


@pytest.mark.slow
def test_synth_config_trains_with_tools_train(coco_set: SimpleNamespace, tmp_path: Path) -> None:
    """Two iterations of the synthetic config through tools/train.py, then a validation by CocoMetric.

    In-process (the interpreter already holds mmdet): a subprocess would spend most of the time importing.
    """
    root = str(coco_set.root) + '/'
    work_dir = tmp_path / 'work'
    options = [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}',
               f'val_evaluator.ann_file={root}annotations/instances_val2017.json',
               f'test_evaluator.ann_file={root}annotations/instances_val2017.json',
               'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
               'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
               # fixed seed: a 2-iteration model's boxes can fall outside the image, where mmdet's mask pasting
               # raises (torch.arange with an upper bound below the lower one) for some random initialisations
               'randomness.seed=0']
    load_tool('train').main([str(SYNTH_CONFIG), '--work-dir', str(work_dir), '--cfg-options', *options])
    records = [json.loads(line) for line in next(work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    train = [r for r in records if 'loss' in r]
    assert [r['iter'] for r in train] == [1, 2] and all(np.isfinite(r['loss_mask']) for r in train)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(records[-1])
    checkpoint = torch.load(work_dir / 'iter_2.pth', weights_only=True)
    assert checkpoint['meta']['iter'] == 2 and 'backbone.patch_embed.projection.weight' in checkpoint['state_dict']

    # the documented next step: sparsity-aware adaptation from that checkpoint
    adapt_dir = tmp_path / 'adapt'
    load_tool('train').main([str(CONFIG_DIR / 'mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py'), '--work-dir',
                             str(adapt_dir), '--cfg-options', *options, f'load_from={work_dir / "iter_2.pth"}'])
    log = next(adapt_dir.glob('*/*.log')).read_text()
    assert 'Load checkpoint from' in log and 'SparsityAdaptationHook' in log
    assert torch.load(adapt_dir / 'iter_2.pth', weights_only=True)['meta']['iter'] == 2

    # and the search on the adapted weights, scored by CocoMetric's bbox mAP
    best = run_tiny_search(CONFIG_DIR / 'mask-rcnn_sparsevit-t_fpn_synth-coco_adapt.py', adapt_dir / 'iter_2.pth',
                           tmp_path / 'search', 'coco/bbox_mAP', options)
    assert best['metric'] == 'coco/bbox_mAP' and 0.0 <= best['score'] <= 1.0
    assert best['evolution']['evaluations'] >= 1 and best['uniform']['ratio'] in (0.0, 0.4)
    assert [len(s) for s in best['pruning_ratios']] == [2, 2, 6, 2]


@pytest.mark.long
def test_synth_config_reaches_the_ap_goal(tmp_path: Path) -> None:
    """The goal of the synthetic recipe: the default set and schedule reach bbox AP >= 0.5 on a CPU."""
    data = tmp_path / 'coco-synth'
    generate_synthetic_coco(SyntheticCocoConfig(out_dir=data))
    root = str(data) + '/'
    options = [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
               f'val_evaluator.ann_file={root}annotations/instances_val2017.json']
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'), str(SYNTH_CONFIG), '--work-dir',
                           str(tmp_path / 'work'), '--cfg-options', *options], cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    ap = [float(v) for v in re.findall(r'coco/bbox_mAP: ([0-9.]+)', log)]
    assert ap and ap[-1] >= 0.5, ap
