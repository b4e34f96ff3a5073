"""Generate the embedded synthetic COCO instance-segmentation set (COCO 2017 layout).

    python tools/make_synthetic_coco.py --out-dir data/coco-synth
    python tools/make_synthetic_coco.py --out-dir /tmp/coco-small --num-train 20 --num-val 5 --image-size 96 96
    python tools/make_synthetic_coco.py --out-dir data/coco-synth --overwrite --seed 1

Writes annotations/instances_{train,val}2017.json and train2017/, val2017/ JPEGs: five shape categories
(rectangle, ellipse, triangle, hexagon, star), each in its own colour, on textured backgrounds; see
projects/sparsevit_bevdet/synthetic/coco.py. configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py trains on it.
"""
import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from projects.sparsevit_bevdet.synthetic.coco import (  # noqa: E402
    SyntheticCocoConfig,
    generate_synthetic_coco,
)


def parse_args(argv=None) -> argparse.Namespace:
    defaults = SyntheticCocoConfig(out_dir='')
    parser = argparse.ArgumentParser(
        description='Generate a synthetic COCO instance segmentation set (pycocotools / mmdet CocoDataset format).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out-dir', default='data/coco-synth', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=defaults.num_train, help='training images')
    parser.add_argument('--num-val', type=int, default=defaults.num_val, help='validation images')
    parser.add_argument('--image-size', type=int, nargs=2, default=defaults.image_size, metavar=('H', 'W'),
                        help='image height and width (each >= 32)')
    parser.add_argument('--seed', type=int, default=defaults.seed,
                        help='random seed; the same seed and sizes give identical files')
    parser.add_argument('--jpeg-quality', type=int, default=defaults.jpeg_quality, help='JPEG quality')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a synthetic set already in --out-dir (refuses sets it did not write)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = SyntheticCocoConfig(out_dir=Path(args.out_dir), num_train=args.num_train, num_val=args.num_val,
                              image_size=tuple(args.image_size), seed=args.seed, jpeg_quality=args.jpeg_quality,
                              overwrite=args.overwrite)
    start = time.perf_counter()
    try:
        summary = generate_synthetic_coco(cfg, show_progress=True)
    except (FileExistsError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {summary["out_dir"]} in {time.perf_counter() - start:.1f} s')
    for split in ('train', 'val'):
        info = summary[split]
        per_class = ', '.join(f'{name} {count}' for name, count in info['per_class'].items())
        print(f'  {split}: {info["images"]} images, {info["annotations"]} instances ({per_class})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
