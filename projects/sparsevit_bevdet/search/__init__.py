"""Latency-constrained evolutionary search of SparseViT's per-group pruning ratios."""
from .evolution import Evaluation, EvolutionarySearch, SearchResult

__all__ = ['Evaluation', 'EvolutionarySearch', 'SearchResult']
