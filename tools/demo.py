"""The main job on the embedded synthetic data (``make demo``), with what exists so far.

1. generate the synthetic nuScenes database (real format) and its mmdet3d info pkls, if missing;
2. load one validation sample through mmdet3d's camera pipeline (6 images);
3. run SparseViT (Swin-T) on the 6 images at BEVDet's input size: check that ratio 0 equals mmdet's
   ``SwinTransformer`` with the same weights, and time ratios 0 / 0.4 / 0.6 / 0.8 against it;
4. draw which windows a stage-0 block computes at 60% sparsity;
5. evaluate ground truth and random boxes through the metric and the nuScenes devkit;
6. BEVDet with SparseViT-T (configs/bevdet/..._cpu-demo.py): a short training run on the synthetic train
   split, then the devkit's mAP / NDS and the detector's latency at 0% and 60% window sparsity.

Step 6 is a smoke run sized for 2 CPU cores (``--bevdet-iters``), far from a converged detector.
Outputs go to ``work_dirs/demo/``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data/nuscenes-synth')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/demo')
    parser.add_argument('--input-size', type=int, nargs=2, default=[256, 704], metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds per ratio')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--bevdet-iters', type=int, default=20,
                        help='training iterations of the BEVDet smoke run (0 skips step 6)')
    return parser.parse_args()


def section(title: str) -> None:
    print(f'\n=== {title} ' + '=' * max(0, 90 - len(title)))


def ensure_dataset(root: Path) -> None:
    from projects.sparsevit_bevdet.datasets import (
        SyntheticNuScenesConfig,
        create_nuscenes_infos,
        generate_synthetic_nuscenes,
    )

    if (root / 'v1.0-mini').is_dir():
        print(f'{root}/v1.0-mini exists: reusing it')
    else:
        summary = generate_synthetic_nuscenes(SyntheticNuScenesConfig(out_dir=root), progress=True, log=print)
        print(summary.table())
    if not (root / 'nuscenes_infos_val.pkl').is_file() or not (root / 'nuscenes_infos_train.pkl').is_file():
        for split, path in create_nuscenes_infos(root, 'v1.0-mini', root, progress=True).items():
            print(f'wrote {split} infos: {path}')
    else:
        print(f'{root}/nuscenes_infos_{{train,val}}.pkl exist: reusing them')


def load_val_dataset(root: Path):
    from mmengine.registry import init_default_scope

    from projects.sparsevit_bevdet.datasets import CAMERA_NAMES, DETECTION_CLASSES, EgoFrameNuScenesDataset

    init_default_scope('mmdet3d')
    return EgoFrameNuScenesDataset(
        data_root=str(root), ann_file='nuscenes_infos_val.pkl', test_mode=True, box_frame='ego',
        pipeline=[dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6)],
        metainfo=dict(version='v1.0-mini', classes=DETECTION_CLASSES),
        modality=dict(use_camera=True, use_lidar=False),
        data_prefix=dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMERA_NAMES}))


def camera_batch(sample: dict, size: tuple[int, int]):
    """6 loaded images -> resized RGB uint8 list and a normalised ``(6, 3, H, W)`` tensor."""
    import cv2
    import numpy as np
    import torch

    images = sample['img']
    rgb = [cv2.resize(img[..., ::-1].astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_AREA)
           for img in images]  # loaded as BGR
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    batch = torch.from_numpy(np.stack([(im - mean) / std for im in rgb])).permute(0, 3, 1, 2).float()
    return rgb, batch.contiguous()


def backbone_demo(batch, rgb: list, work_dir: Path, repeats: int) -> None:
    import torch
    from mmdet.models.backbones import SwinTransformer

    from projects.sparsevit_bevdet.backbones import SparseViT
    from projects.sparsevit_bevdet.backbones.complexity import sparsevit_macs
    from projects.sparsevit_bevdet.backbones.visualize import first_stage_keep_mask, plot_keep_masks

    torch.manual_seed(0)
    sparse = SparseViT(arch='tiny', out_indices=(2, 3), drop_path_rate=0.0)
    sparse.init_weights()  # no pretrained weights can be downloaded here: random init, same in both
    sparse.eval()
    dense = SwinTransformer(out_indices=(2, 3), drop_path_rate=0.0)
    dense.load_state_dict(sparse.state_dict(), strict=True)
    dense.eval()

    with torch.inference_mode():
        ref = dense(batch)
        got = sparse(batch)
    diff = max((a - b).abs().max().item() for a, b in zip(ref, got))
    print(f'ratio 0 vs mmdet SwinTransformer (same weights): max |difference| = {diff:.2e} '
          f'over outputs {[tuple(o.shape) for o in got]}')

    ratios = [0.0, 0.4, 0.6, 0.8]
    times: dict[str, list[float]] = {'mmdet Swin-T (dense)': [], **{f'SparseViT r={r}': [] for r in ratios}}
    with torch.inference_mode():
        for round_idx in range(repeats + 1):
            for name in times:
                if name.startswith('SparseViT'):
                    sparse.set_pruning_ratios(float(name.split('=')[1]))
                    model = sparse
                else:
                    model = dense
                start = time.perf_counter()
                model(batch)
                if round_idx:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times['mmdet Swin-T (dense)'])
    print(f"\n{'image encoder':24} {'median ms':>10} {'vs mmdet':>9} {'GMACs':>7}")
    for name, t in times.items():
        ratio = 0.0 if name.startswith('mmdet') else float(name.split('=')[1])
        sparse.set_pruning_ratios(ratio)
        macs = sparsevit_macs(sparse, tuple(batch.shape), swin_layout=name.startswith('mmdet')) / 1e9
        print(f'{name:24} {1e3 * statistics.median(t):10.1f} {statistics.median(t) / base:9.3f} {macs:7.1f}')

    mask = first_stage_keep_mask(sparse, batch, 0.6)
    path = work_dir / 'sparsevit_windows_r0.6.png'
    plot_keep_masks(rgb, mask, [f'camera {i}: {mask[i].float().mean():.0%} of pixels computed' for i in range(6)],
                    str(path), suptitle='SparseViT stage-0 block at 60% window sparsity (dark = pruned, '
                    'passed through); random weights')
    print(f'\nwrote {path}')


def evaluation_demo(dataset, root: Path, work_dir: Path) -> None:
    from projects.sparsevit_bevdet.evaluation import EgoFrameNuScenesMetric
    from projects.sparsevit_bevdet.testing.nuscenes import (
        evaluate_predictions,
        gt_as_predictions,
        random_predictions,
    )

    rows = []
    for name, tag, predictions in (
            ('ground truth as predictions', 'eval_gt', gt_as_predictions(dataset)),
            ('random boxes (40 per sample)', 'eval_random', random_predictions(dataset))):
        metric = EgoFrameNuScenesMetric(data_root=str(root), ann_file=str(root / 'nuscenes_infos_val.pkl'),
                                        box_frame='ego', jsonfile_prefix=str(work_dir / tag))
        res = evaluate_predictions(metric, dataset, predictions)
        rows.append((name, res['NuScenes/mAP'], res['NuScenes/NDS']))
    print(f"\n{'predictions (ego frame)':32} {'mAP':>7} {'NDS':>7}")
    for name, m, n in rows:
        print(f'{name:32} {m:7.4f} {n:7.4f}')


def bevdet_demo(root: Path, work_dir: Path, iters: int) -> None:
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(ROOT / 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py')
    data_root = str(root) + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].update(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl',
                              jsonfile_prefix=str(work_dir / 'bevdet_results'))
    cfg.work_dir = str(work_dir / 'bevdet')
    cfg.train_cfg.update(max_iters=iters, val_interval=iters + 1)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=max(1, iters // 3))]
    cfg.default_hooks.checkpoint.update(interval=iters)
    cfg.default_hooks.logger.update(interval=max(1, iters // 6))
    runner = Runner.from_cfg(cfg)
    runner.train()

    model = runner.model.eval()
    batches = [b for _, b in zip(range(4), runner.test_dataloader)]
    times: dict[float, list[float]] = {0.0: [], 0.6: []}
    with torch.inference_mode():
        for batch in batches:
            for ratio in times:
                model.image_encoder.set_pruning_ratios(ratio)
                start = time.perf_counter()
                model.test_step(batch)
                times[ratio].append(time.perf_counter() - start)
    rows = []
    for ratio in times:
        model.image_encoder.set_pruning_ratios(ratio)
        metrics = runner.test_loop.run()
        rows.append((ratio, statistics.median(times[ratio]), metrics['NuScenes/mAP'], metrics['NuScenes/NDS']))
    print(f"\nBEVDet + SparseViT-T after {iters} training iterations (a smoke run, not a converged detector)")
    print(f"{'window sparsity':16} {'detector ms/sample':>19} {'vs dense':>9} {'mAP':>7} {'NDS':>7}")
    for ratio, ms, m, n in rows:
        print(f'{ratio:16.0%} {1e3 * ms:19.1f} {ms / rows[0][1]:9.3f} {m:7.4f} {n:7.4f}')


def main() -> None:
    args = parse_args()
    import torch

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin)

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    section('1. synthetic nuScenes (real v1.0-mini format) and mmdet3d infos')
    ensure_dataset(args.data_root)

    section('2. one validation sample through mmdet3d\'s camera pipeline')
    dataset = load_val_dataset(args.data_root)
    sample = dataset[0]
    print(f'{len(dataset)} val samples; sample {sample["sample_idx"]}: {len(sample["img"])} images of '
          f'{sample["img"][0].shape[1]}x{sample["img"][0].shape[0]}, '
          f'{len(sample["eval_ann_info"]["gt_labels_3d"])} ground-truth boxes (ego frame)')
    rgb, batch = camera_batch(sample, tuple(args.input_size))

    section(f'3-4. SparseViT image encoder on 6 x 3 x {args.input_size[0]} x {args.input_size[1]} '
            f'({args.threads} CPU threads)')
    backbone_demo(batch, rgb, args.work_dir, args.repeats)

    section('5. evaluation through EgoFrameNuScenesMetric and the nuScenes devkit (mini_val)')
    evaluation_demo(dataset, args.data_root, args.work_dir)

    if args.bevdet_iters > 0:
        section(f'6. BEVDet with SparseViT-T: {args.bevdet_iters} training iterations, then test at 0% / 60% '
                'sparsity')
        bevdet_demo(args.data_root, args.work_dir, args.bevdet_iters)
    print('\ndone; outputs in', args.work_dir)


if __name__ == '__main__':
    main()
