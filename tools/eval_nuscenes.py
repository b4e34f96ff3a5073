"""Evaluate a nuScenes detection results file (standard submission JSON) with the official devkit.

    python tools/eval_nuscenes.py work_dirs/bevdet/results_nusc.json --data-root data/nuscenes-synth \
        --version v1.0-mini --eval-set mini_val --out-dir work_dirs/bevdet/nusc_eval

The results file is checked first (every eval sample present, no NaN/inf, valid names); then the
devkit's DetectionEval runs unchanged. Prints mAP, NDS, the TP errors and per-class AP, and writes
<out-dir>/metrics_summary.json.
"""
import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from projects.sparsevit_bevdet.datasets.nuscenes_converter import VERSIONS, load_nuscenes  # noqa: E402
from projects.sparsevit_bevdet.evaluation.nuscenes_devkit_eval import (  # noqa: E402
    EVAL_SET_BY_VERSION,
    format_summary,
    run_detection_eval,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Run the nuScenes detection evaluation on a results file.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('results', help='results JSON in the nuScenes submission format')
    parser.add_argument('--data-root', required=True, help='nuScenes root (holds <version>/)')
    parser.add_argument('--version', required=True, choices=VERSIONS, help='database version')
    parser.add_argument('--eval-set', default=None,
                        help='devkit split, e.g. mini_val, val (default: mini_val for v1.0-mini, val for '
                             'v1.0-trainval)')
    parser.add_argument('--out-dir', default=None,
                        help='where metrics_summary.json and the devkit plots folder go '
                             '(default: <results dir>/nuscenes_eval)')
    parser.add_argument('--config-name', default='detection_cvpr_2019', help='devkit detection config')
    parser.add_argument('--verbose', action='store_true', help="show the devkit's own progress output")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    eval_set = args.eval_set or EVAL_SET_BY_VERSION.get(args.version)
    if eval_set is None:
        print(f'error: no default eval set for {args.version}; pass --eval-set', file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.results).resolve().parent / 'nuscenes_eval'
    try:
        nusc = load_nuscenes(args.data_root, args.version)
        summary = run_detection_eval(nusc, args.results, eval_set, out_dir, args.config_name,
                                     verbose=args.verbose)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f'\nmetrics summary written to {out_dir / "metrics_summary.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
