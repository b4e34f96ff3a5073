"""Generate the embedded synthetic Cityscapes (real gtFine / leftImg8bit layout, readable by mmseg).

    python tools/make_synthetic_cityscapes.py --out-dir data/cityscapes-synth
    python tools/make_synthetic_cityscapes.py --out-dir /tmp/cs --num-train 20 --num-val 5 --image-size 64 128
    python tools/make_synthetic_cityscapes.py --out-dir data/cityscapes-synth --overwrite --seed 1

Writes leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/*_gtFine_labelIds.png
plus *_gtFine_labelTrainIds.png (what mmseg's CityscapesDataset reads). See
projects/sparsevit_bevdet/synthetic/cityscapes.py for what the scenes contain.
"""
import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from projects.sparsevit_bevdet.synthetic.cityscapes import (  # noqa: E402
    SyntheticCityscapesConfig,
    generate_synthetic_cityscapes,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a synthetic Cityscapes (gtFine labelIds + labelTrainIds, leftImg8bit images) of '
                    'street scenes.', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out-dir', default='data/cityscapes-synth', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=300, help='images in the train split')
    parser.add_argument('--num-val', type=int, default=50, help='images in the val split')
    parser.add_argument('--image-size', type=int, nargs=2, default=(128, 256), metavar=('H', 'W'),
                        help='image height and width (the real set is 1024 2048)')
    parser.add_argument('--seed', type=int, default=0, help='random seed; the same seed gives identical files')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a synthetic Cityscapes already in --out-dir (refuses folders that this tool '
                             'did not generate)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = SyntheticCityscapesConfig(out_dir=Path(args.out_dir), num_train=args.num_train, num_val=args.num_val,
                                    image_size=tuple(args.image_size), seed=args.seed, overwrite=args.overwrite)
    try:
        summary = generate_synthetic_cityscapes(cfg, progress_bar=True, log=print)
    except (FileExistsError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {summary.out_dir}: {summary.num_images["train"]} train + {summary.num_images["val"]} val images '
          f'in {summary.seconds:.1f} s\n')
    print('share of all pixels per label (trainId 255 = ignored):')
    print(summary.table())
    return 0


if __name__ == '__main__':
    sys.exit(main())
