"""How good is a BEVDet checkpoint's LSS depth? Error against the LiDAR depth targets, ground vs object pixels.

    python tools/depth_error.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py \\
        work_dirs/demo/dense/iter_450.pth [--samples 0 57 133 250] [--cfg-options ...]

Runs the config's *training* pipeline (it is the one with ``BEVDetDepthTarget``; its augmentations stay on)
on the given train samples and compares the view transformer's depth distribution with ``gt_depth`` per
feature pixel. A pixel counts as *ground* when its LiDAR depth is within ``--ground-tol`` metres of where its
ray meets the ego ground plane, else as *object*. Printed per kind: pixels, mean |argmax - gt|,
mean |expectation - gt|, mean probability of the true bin, mean maximum probability.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--samples', type=int, nargs='+', default=[0, 57, 133, 250],
                        help='indices into the training set')
    parser.add_argument('--ground-tol', type=float, default=1.5, help='metres (see above)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0, help='seeds the pipeline augmentations (repeatable figures)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin, safe checkpoint loading)
    from projects.sparsevit_bevdet.models.view_transformer import GROUND_SCALE, LSSViewTransformer
    from projects.sparsevit_bevdet.utils.checkpoint_fit import load_fitting_checkpoint

    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    from mmdet3d.registry import DATASETS, MODELS

    model = MODELS.build(cfg.model)
    load_fitting_checkpoint(model, args.checkpoint)  # refuses weights that do not fit, naming the file
    model.eval()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    bad = [i for i in args.samples if not 0 <= i < len(dataset)]
    if bad:
        raise SystemExit(f'--samples {bad}: the training set has {len(dataset)} samples')
    from mmengine.runner import set_random_seed

    set_random_seed(args.seed)
    batch = pseudo_collate([dataset[i] for i in args.samples])
    if 'gt_depth' not in batch['data_samples'][0].metainfo:
        raise SystemExit(f'{args.config}: the training pipeline gives no gt_depth (add BEVDetDepthTarget and '
                         f"'gt_depth' to Pack3DDetInputs' meta_keys)")
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        _, depth, _, mats = model._extract_bev_and_depth(data['inputs'], data['data_samples'])
    vt: LSSViewTransformer = model.img_view_transformer
    b, n, d, fh, fw = depth.shape
    rays = vt.ray_encoding(mats['cam2img'], mats['cam2ego'], mats['img_aug_matrix'], mats['bev_aug_matrix'])
    ground = GROUND_SCALE / rays[:, 3].reshape(b, n, fh, fw).clamp_min(1e-6)
    gt = torch.stack([torch.as_tensor(np.asarray(s.metainfo['gt_depth'], np.float32)) for s in data['data_samples']])
    d_lo, _, d_step = vt.grid_config['depth']
    centres = d_lo + d_step * torch.arange(d, dtype=torch.float32)
    expectation = (depth * centres[None, None, :, None, None]).sum(2)
    argmax = centres[depth.argmax(2)]
    true_bin = torch.round((gt - d_lo) / d_step).long().clamp(0, d - 1)
    p_true = depth.gather(2, true_bin[:, :, None]).squeeze(2)
    p_max = depth.amax(2)
    valid = (gt > 0) & (gt >= d_lo) & (gt < d_lo + d * d_step)
    on_ground = valid & ((gt - ground).abs() < args.ground_tol)
    print(f'{args.checkpoint}: {len(args.samples)} train samples x {n} cameras, {fh} x {fw} feature pixels each')
    print(f"{'pixels':<8} {'count':>6} {'gt mean m':>10} {'|argmax-gt|':>12} {'|E-gt|':>8} {'p(true)':>8} {'max p':>7}")
    for name, mask in (('ground', on_ground), ('object', valid & ~on_ground)):
        if not mask.any():
            print(f'{name:<8} {0:>6}')
            continue
        print(f'{name:<8} {int(mask.sum()):>6} {gt[mask].mean():>10.1f} {(argmax - gt)[mask].abs().mean():>12.2f} '
              f'{(expectation - gt)[mask].abs().mean():>8.2f} {p_true[mask].mean():>8.3f} {p_max[mask].mean():>7.3f}')


if __name__ == '__main__':
    main()
