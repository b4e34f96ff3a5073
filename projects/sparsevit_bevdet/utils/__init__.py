"""Utilities shared by the plugin."""
from .safe_checkpoint import (
    TRUSTED_GLOBALS_ENV,
    CheckpointSecurityError,
    install_safe_checkpoint_loading,
    safe_torch_load,
    trust_checkpoint_globals,
)

__all__ = [
    'TRUSTED_GLOBALS_ENV',
    'CheckpointSecurityError',
    'install_safe_checkpoint_loading',
    'safe_torch_load',
    'trust_checkpoint_globals',
]
