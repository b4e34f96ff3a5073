"""Latency-constrained search of SparseViT's per-group pruning ratios: evolutionary search and its
random-search baseline, a per-block latency table that predicts a configuration's latency, an in-memory
cache of the scored samples' inputs, and the resumable state files the searches use."""
from .cached_loader import CachedLoader
from .evolution import (
    Evaluation,
    EvolutionarySearch,
    NoCandidateInBudgetError,
    RandomSearch,
    SearchResult,
    sample_group_ratios,
)
from .latency_table import LatencyTable, load_or_profile, measure_interleaved, prediction_check, profile_encoder
from .state import GroupRatios, ScoreStore, StateMismatchError, canonical, check_fingerprint

__all__ = [
    'CachedLoader',
    'Evaluation',
    'EvolutionarySearch',
    'GroupRatios',
    'LatencyTable',
    'NoCandidateInBudgetError',
    'RandomSearch',
    'ScoreStore',
    'SearchResult',
    'StateMismatchError',
    'canonical',
    'check_fingerprint',
    'load_or_profile',
    'measure_interleaved',
    'prediction_check',
    'profile_encoder',
    'sample_group_ratios',
]
