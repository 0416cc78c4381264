"""GRACE embedder: Hub-facing code (copied into model repos; torch, transformers and stdlib only)."""

from .configuration_grace import GRACE_CONFIG_NAME, GRACE_SYSTEM_PROMPT, GraceConfig
from .modeling_grace import GraceEmbedder, GraceSentenceTransformerModule, RationaleCache, mean_pool, system_prefix_ids

__all__ = [
    "GRACE_CONFIG_NAME",
    "GRACE_SYSTEM_PROMPT",
    "GraceConfig",
    "GraceEmbedder",
    "GraceSentenceTransformerModule",
    "RationaleCache",
    "mean_pool",
    "system_prefix_ids",
]
