"""DynamicRAG reranker: Hub-facing code (copied into model repos; torch, transformers and stdlib only)."""

from .configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from .constrained_dynamicrag import IdListLogitsProcessor
from .modeling_dynamicrag import DynamicRAGModel, RerankResult
from .prompts_dynamicrag import (
    GENERATOR_SYSTEM_PROMPT,
    RERANKER_SYSTEM_PROMPT,
    TASK_INSTRUCTIONS,
    ParsedSelection,
    format_passages,
    format_selection,
    generator_messages,
    parse_selection,
    reranker_messages,
)

__all__ = [
    "DYNAMICRAG_CONFIG_NAME",
    "DynamicRAGConfig",
    "DynamicRAGModel",
    "RerankResult",
    "IdListLogitsProcessor",
    "GENERATOR_SYSTEM_PROMPT",
    "RERANKER_SYSTEM_PROMPT",
    "TASK_INSTRUCTIONS",
    "ParsedSelection",
    "format_passages",
    "format_selection",
    "generator_messages",
    "parse_selection",
    "reranker_messages",
]
