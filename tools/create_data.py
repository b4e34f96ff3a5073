"""Create mmdet3d 1.x info pkls from a nuScenes root (real or synthetic), through the nuScenes devkit.

    python tools/create_data.py nuscenes --root-path data/nuscenes --version v1.0-trainval --out-dir data/nuscenes
    python tools/create_data.py nuscenes --root-path data/nuscenes-synth --version v1.0-mini \
        --out-dir data/nuscenes-synth

Writes <out-dir>/<extra-tag>_infos_train.pkl and ..._val.pkl (..._test.pkl for v1.0-test), only once every
split has been converted, all files replaced together: a failure leaves the previous pkls as they were. Tables
are checked for the fields the conversion reads, image headers and point-file sizes for what the loaders need;
errors name the file, record, field and value. The fields are
documented in projects/sparsevit_bevdet/datasets/nuscenes_converter.py (mmdet3d's v2 nuScenes infos plus
ego-frame boxes and per-camera ego poses for BEVDet).
"""
import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from projects.sparsevit_bevdet.datasets.nuscenes_converter import (  # noqa: E402
    VERSIONS,
    create_nuscenes_infos,
    load_nuscenes,
    summarize_infos,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Create info pkls for a dataset.')
    sub = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET')
    nus = sub.add_parser('nuscenes', help='nuScenes (real or synthetic root) -> mmdet3d 1.x info pkls',
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                         description='Convert a nuScenes root into mmdet3d 1.x info pkls with the devkit.')
    nus.add_argument('--root-path', required=True, help='nuScenes root (holds <version>/, samples/, maps/)')
    nus.add_argument('--version', required=True, choices=VERSIONS, help='database version to convert')
    nus.add_argument('--out-dir', required=True, help='where to write the pkls')
    nus.add_argument('--extra-tag', default='nuscenes', help='pkl name prefix: <extra-tag>_infos_<split>.pkl')
    nus.add_argument('--no-check-files', action='store_true',
                     help='do not verify that every referenced image and point cloud exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        print(f'loading {args.version} from {args.root_path} ...')
        nusc = load_nuscenes(args.root_path, args.version, verbose=False)
        paths = create_nuscenes_infos(args.root_path, args.version, args.out_dir, extra_tag=args.extra_tag,
                                      check_files=not args.no_check_files, progress=True, nusc=nusc)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'\ndone in {time.perf_counter() - start:.1f} s')
    for path in paths.values():
        print(summarize_infos(path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
