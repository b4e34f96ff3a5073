"""Latency-constrained search of SparseViT's per-group pruning ratios.

The public entry point is :func:`run_search` (``runner.py``): a config, a checkpoint and
:class:`SearchOptions` in, a :class:`SearchReport` (its ``record`` is ``best.json``) out; ``tools/search.py``,
``tools/demo.py`` and scripts call it alike. Underneath: the evolutionary search and its random-search baseline
(``evolution.py``), the calibrated per-block latency table that predicts a configuration's latency
(``latency_table.py``), validation scoring on the full split or a proxy subset (``scoring.py``), an in-memory
cache of the scored samples' inputs (``cached_loader.py``), the resumable state files (``state.py``), a search
shared by many workers through an Optuna study (``shared_study.py``, imported on demand: it needs optuna) and
the summary and plot of a finished search (``report.py``).
"""
from .cached_loader import CachedLoader
from .evolution import (
    Evaluation,
    EvolutionarySearch,
    NoCandidateInBudgetError,
    RandomSearch,
    SearchResult,
    sample_group_ratios,
)
from .latency_table import (
    CalibrationMismatchError,
    LatencyCalibration,
    LatencyTable,
    calibrate,
    ensure_calibrated,
    load_or_profile,
    measure_interleaved,
    prediction_check,
    profile_encoder,
)
from .options import SearchError, SearchOptions, cli_flag
from .report import format_summary, plot_search
from .runner import BudgetInfeasibleError, SearchReport, build_search_runner, default_work_dir, run_search
from .scoring import MetricNotProducedError, proxy_indices
from .state import GroupRatios, ScoreStore, StateMismatchError, canonical, check_fingerprint

__all__ = [
    'BudgetInfeasibleError',
    'CachedLoader',
    'CalibrationMismatchError',
    'Evaluation',
    'EvolutionarySearch',
    'GroupRatios',
    'LatencyCalibration',
    'LatencyTable',
    'MetricNotProducedError',
    'NoCandidateInBudgetError',
    'RandomSearch',
    'ScoreStore',
    'SearchError',
    'SearchOptions',
    'SearchReport',
    'SearchResult',
    'StateMismatchError',
    'build_search_runner',
    'calibrate',
    'canonical',
    'check_fingerprint',
    'cli_flag',
    'default_work_dir',
    'ensure_calibrated',
    'format_summary',
    'load_or_profile',
    'measure_interleaved',
    'plot_search',
    'prediction_check',
    'profile_encoder',
    'proxy_indices',
    'run_search',
    'sample_group_ratios',
]
