"""Small registered components for tests and smoke runs (see :mod:`.toy`)."""
from .toy import ToyRegressionDataset, ToyRegressionMetric, ToyRegressor

__all__ = ['ToyRegressionDataset', 'ToyRegressionMetric', 'ToyRegressor']
