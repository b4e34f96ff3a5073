"""Search SparseViT's per-group pruning ratios of a trained detector under an image-encoder latency budget.

The search itself is the library function ``projects.sparsevit_bevdet.search.run_search`` (a config, a
checkpoint and ``SearchOptions``, one field per option below); this tool parses the options and prints the
summary.

Latency. The encoder is profiled once per machine and setting into a per-block latency table
(``<work-dir>/latency_table.json``, re-profiled when the device, thread count, input shape, dtype, torch
version, architecture or ratio choices differ): every block at every ratio choice, on one sample's cameras
at the config's input size. The table is then calibrated against whole configurations timed without the
profiler's hooks (dense, the middle and the largest ratio choice, ``--calibration-repeats`` interleaved
rounds), and the calibration is kept in the table's file with what it was measured on. A candidate's latency
is *predicted* from the calibrated table, so candidates over the budget are discarded without running the
model. The budget is either absolute (``--latency-budget-ms``) or relative to the dense encoder
(``--latency-ratio``, times the calibrated dense latency, i.e. the dense encoder measured here). The table is
checked against interleaved measurements of ``--check-samples`` random configurations, and the final results
are re-measured with ``--final-repeats`` interleaved rounds against dense.

Scoring. Each candidate is scored with the config's evaluator (``--metric``, NDS by default) on the full
validation split, or with ``--proxy-samples N`` on N evenly spread validation samples; then the top
``--rescore-top`` candidates of each search are re-scored on the full split and the reported results come
from full-split scores. The nuScenes database is loaded once per run, not per candidate. With
``--cache-inputs`` the scored samples' preprocessed images are kept in memory after the first candidate, so
later candidates skip decoding and resizing (the test pipeline is deterministic).

Baselines. Beside the evolutionary search: a random search with as many scored evaluations (its own seed),
and uniform ratios (the densest uniform ratio within the budget, plus ``--uniform-ratios``), all scored and
measured alike.

Resuming. Every evaluation is saved at once (``search_state.json``, ``random_state.json``,
``scores_full.json``, ``scores_proxy.json``): re-running the same command resumes without repeating any.
A state made with another checkpoint, metric, evaluation set, budget or ratio choices is refused (one that
holds no evaluation yet is started afresh), and so is a state file of another shape (naming the field). One
process at a time per work dir: a second one is refused, naming the holder of ``<work-dir>/.lock``.

Refused before any work: a checkpoint whose weights do not fit the model (``--allow-partial-load`` to
accept), a non-finite or non-positive budget, and a ``--metric`` the evaluator does not produce (the
evaluator is run on one validation sample first, which gives its keys).

Many workers. With ``--storage URL --study-name NAME`` the evaluations live in an Optuna study instead of
those files (``sqlite:///PATH.db``, ``postgresql://...``, ``mysql://...`` or ``journal://PATH.log``), and
every process started with the same storage and name works on one search: a candidate is scored by one
worker only, the trial of a killed worker is retried once its heartbeat is older than ``--grace-period``,
and the evolution's generations are built from every worker's scores (see
``projects/sparsevit_bevdet/search/shared_study.py``). The first worker stores its fingerprint and latency
table in the study; the others use that table and are refused if their fingerprint (also the search's
seeds and sizes) differs. Each worker writes the outputs below to its own ``--work-dir`` (atomically) from
the shared history when the search is complete; only the final latency measurements are its own.

Outputs in the work dir: ``best.json`` (top level: the evolutionary best, its per-block ratios ready for
``--cfg-options model.img_backbone.pruning_ratios=...``; ``evolution`` / ``random`` / ``uniform`` entries
with ratios, score, predicted and measured latency; the budget; the latency table's calibration and check),
``latency_table.json`` (with its calibration), ``latency_table_check.json``, ``search_history.json`` and
``search_pareto.png`` (every trial, the baselines, dense and the budget).

Example::

    python tools/search.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_adapt.py work_dirs/adapt/epoch_24.pth \\
        --latency-ratio 0.6 --population 10 --parents 5 --generations 4 --proxy-samples 50 \\
        --work-dir work_dirs/search
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def proxy_indices(num_samples: int, proxy_samples: int) -> list[int]:
    """``proxy_samples`` validation indices evenly spread over ``num_samples`` (the library's, see scoring.py)."""
    from projects.sparsevit_bevdet.search import proxy_indices as indices

    return indices(num_samples, proxy_samples)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options; an option left out takes ``SearchOptions``' default (listed in brackets below)."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument('--latency-budget-ms', type=float,
                        help='image-encoder latency budget for one sample, in ms, on this machine')
    budget.add_argument('--latency-ratio', type=float,
                        help='budget as a fraction of the dense encoder latency (all ratios 0) measured here, '
                             'e.g. 0.6')
    parser.add_argument('--metric', help='evaluator key to maximise [NuScenes/NDS]')
    parser.add_argument('--population', type=int, help='[10]')
    parser.add_argument('--parents', type=int, help='[5]')
    parser.add_argument('--generations', type=int, help='[4]')
    parser.add_argument('--mutation-prob', type=float, help='[0.2]')
    parser.add_argument('--ratio-choices', type=float, nargs='+', help='[0.0 0.1 ... 0.8]')
    parser.add_argument('--proxy-samples', type=int,
                        help='score the searches on this many evenly spread validation samples (default: all)')
    parser.add_argument('--rescore-top', type=int,
                        help='with --proxy-samples: re-score the best K of each search on the full split [3]')
    parser.add_argument('--uniform-ratios', type=float, nargs='*',
                        help='uniform ratios scored for the plot, besides the densest one within the budget '
                             '(default: those of 0.2 0.4 0.6 0.8 among --ratio-choices)')
    parser.add_argument('--cache-inputs', action='store_true',
                        help='keep every scored sample\'s preprocessed inputs in memory after the first '
                             'candidate, so later candidates skip image decoding (memory: one sample\'s '
                             'images per sample scored; use with --proxy-samples on a real split)')
    parser.add_argument('--random-seed', type=int, help='seed of the random search (default: seed+1)')
    parser.add_argument('--table-repeats', type=int,
                        help='interleaved rounds of profiling each uniform ratio for the latency table [3]')
    parser.add_argument('--calibration-repeats', type=int,
                        help='interleaved rounds of timing dense and two uniform ratios whole, which calibrate '
                             'the latency table (once per table: kept in its file) [5]')
    parser.add_argument('--check-samples', type=int,
                        help='random configurations timed to check the latency table (0: no check) [8]')
    parser.add_argument('--check-repeats', type=int, help='[3]')
    parser.add_argument('--final-repeats', type=int,
                        help='interleaved rounds of timing the results against dense at the end [15]')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, help='[0]')
    parser.add_argument('--work-dir', type=Path, help='[work_dirs/search_<config name>]')
    parser.add_argument('--latency-table', type=Path,
                        help='the latency table\'s file, which searches of one encoder on one machine may share '
                             '[<work-dir>/latency_table.json]')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='key=value overrides of the config')
    parser.add_argument('--storage',
                        help='Optuna storage shared by the workers of one search: sqlite:///PATH.db, '
                             'postgresql://USER:PASSWORD@HOST/DB, mysql://USER:PASSWORD@HOST/DB or journal://PATH.log')
    parser.add_argument('--study-name', help='the study of --storage (workers with the same one share)')
    parser.add_argument('--heartbeat-interval', type=int,
                        help='with --storage: seconds between the heartbeats of a running evaluation [30]')
    parser.add_argument('--grace-period', type=int,
                        help='with --storage: seconds without a heartbeat after which an evaluation is retried [120]')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='search even if the checkpoint does not fit the model (refused without it)')
    args = parser.parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            parser.error(f'{what} file {path} does not exist')
    from projects.sparsevit_bevdet.search import SearchError, SearchOptions, cli_flag

    given = {f.name: getattr(args, f.name) for f in fields(SearchOptions) if getattr(args, f.name) is not None}
    try:
        options = SearchOptions(**given).checked()
    except SearchError as err:
        parser.error(err.message(cli_flag))
    for name, value in vars(options).items():  # every option resolved, as the search will use it
        setattr(args, name, list(value) if isinstance(value, tuple) else value)
    return args


def run_search(cfg: Config, checkpoint: str, args: argparse.Namespace) -> dict:
    """The library's ``run_search`` with the parsed options (work dir by default ``work_dirs/search_<config>``);
    prints the summary and returns the record (``best.json``). A refused search exits with its reason."""
    from projects.sparsevit_bevdet.search import SearchError, SearchOptions, cli_flag, format_summary
    from projects.sparsevit_bevdet.search import run_search as search

    options = SearchOptions.from_namespace(args)
    if options.work_dir is None:
        options = replace(options, work_dir=Path('work_dirs') / f'search_{Path(args.config).stem}')
    try:
        report = search(cfg, checkpoint, options)
    except SearchError as err:
        raise SystemExit(f'tools/search.py: {err.message(cli_flag)}') from err
    print(format_summary(report.record, report.best_json))
    return report.record


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from mmengine.config import Config

    import projects.sparsevit_bevdet  # noqa: F401  (registers the plugin, safe checkpoint loading)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    run_search(cfg, args.checkpoint, args)


if __name__ == '__main__':
    main()
