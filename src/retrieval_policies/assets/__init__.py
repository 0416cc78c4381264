"""Offline assets: base models resolved from the Hub or from packages, converted once and cached."""

from .base_models import (
    CACHE_ENV,
    DEFAULT_BASE_MODEL,
    OFFLINE_MODELS,
    ModelNotAvailableError,
    cache_root,
    model_source,
    resolve_model,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_BASE_MODEL",
    "OFFLINE_MODELS",
    "ModelNotAvailableError",
    "cache_root",
    "model_source",
    "resolve_model",
]
