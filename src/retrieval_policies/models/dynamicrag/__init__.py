"""DynamicRAG reranker: Hub-facing code (copied into model repos; torch, transformers and stdlib only)."""

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

__all__ = ["GENERATOR_SYSTEM_PROMPT", "RERANKER_SYSTEM_PROMPT", "TASK_INSTRUCTIONS", "ParsedSelection", "format_passages",
           "format_selection", "generator_messages", "parse_selection", "reranker_messages"]
