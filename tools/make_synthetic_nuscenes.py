"""Generate the embedded synthetic nuScenes database (real v1.0-mini format, readable by the devkit).

    python tools/make_synthetic_nuscenes.py --out-dir data/nuscenes-synth
    python tools/make_synthetic_nuscenes.py --out-dir /tmp/nus-small --image-size 225 400 --samples-per-scene 4
    python tools/make_synthetic_nuscenes.py --out-dir data/nuscenes-synth --overwrite --create-infos
    python tools/make_synthetic_nuscenes.py --out-dir data/nuscenes-synth-trainval --version v1.0-trainval \
        --train-scenes 32 --val-scenes 10 --samples-per-scene 12 --val-samples-per-scene 32 --create-infos

Writes v1.0-mini/ or a partial v1.0-trainval/ (13 tables), samples/CAM_*/ (JPEGs), samples/LIDAR_TOP/
(.pcd.bin), maps/ and, with --create-infos, the mmdet3d info pkls (same as `tools/create_data.py nuscenes`
afterwards). See
projects/sparsevit_bevdet/synthetic/nuscenes/ for what the world contains.
"""
import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from projects.sparsevit_bevdet.datasets.nuscenes_converter import (  # noqa: E402
    create_nuscenes_infos,
    summarize_infos,
)
from projects.sparsevit_bevdet.synthetic.nuscenes import (  # noqa: E402
    SyntheticNuScenesConfig,
    generate_synthetic_nuscenes,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a synthetic nuScenes database (v1.0-mini: 10 scenes named as the devkit mini split; '
                    'or a partial v1.0-trainval; 6 cameras, LiDAR, all 13 tables).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out-dir', default='data/nuscenes-synth', help='dataset root to write')
    parser.add_argument('--seed', type=int, default=0, help='random seed; the same seed gives identical files')
    parser.add_argument('--samples-per-scene', type=int, default=40,
                        help='key frames per scene (0.5 s apart; at least 2)')
    parser.add_argument('--version', default='v1.0-mini', choices=('v1.0-mini', 'v1.0-trainval'),
                        help='v1.0-mini: the devkit\'s 8 / 2 mini scenes; v1.0-trainval: the first --train-scenes / '
                             '--val-scenes names of the devkit\'s train / val splits (eval set "val")')
    parser.add_argument('--train-scenes', type=int, default=8, help='train scenes (v1.0-trainval only)')
    parser.add_argument('--val-scenes', type=int, default=2, help='val scenes (v1.0-trainval only)')
    parser.add_argument('--val-samples-per-scene', type=int, default=None,
                        help='key frames per val scene (default: --samples-per-scene)')
    parser.add_argument('--image-size', type=int, nargs=2, default=(900, 1600), metavar=('H', 'W'),
                        help='camera image height and width (intrinsics scale with it)')
    parser.add_argument('--jpeg-quality', type=int, default=90, help='JPEG quality of the camera images')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='rendering processes')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing synthetic database in --out-dir, with the info pkls '
                             'converted from it (refuses folders that this tool did not generate)')
    parser.add_argument('--create-infos', action='store_true',
                        help='also write the mmdet3d info pkls (nuscenes_infos_{train,val}.pkl) into --out-dir')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = SyntheticNuScenesConfig(out_dir=Path(args.out_dir), seed=args.seed,
                                  samples_per_scene=args.samples_per_scene, image_size=tuple(args.image_size),
                                  version=args.version, train_scenes=args.train_scenes, val_scenes=args.val_scenes,
                                  val_samples_per_scene=args.val_samples_per_scene,
                                  jpeg_quality=args.jpeg_quality, workers=args.workers, overwrite=args.overwrite)
    try:
        summary = generate_synthetic_nuscenes(cfg, progress=True, log=print)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'\nwrote {summary.out_dir}: {summary.num_scenes} scenes, {summary.num_samples} samples, '
          f'{summary.num_images} images, {summary.num_instances} instances, {summary.num_annotations} '
          f'annotations ({summary.hidden_annotations} fully occluded) in {summary.seconds:.1f} s\n')
    print('annotations per class and split:')
    print(summary.table())
    if args.create_infos:
        start = time.perf_counter()
        paths = create_nuscenes_infos(cfg.out_dir, cfg.version, cfg.out_dir, extra_tag='nuscenes', partial=True)
        print(f'\ninfo pkls written in {time.perf_counter() - start:.1f} s:')
        for path in paths.values():
            print(summarize_infos(path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
