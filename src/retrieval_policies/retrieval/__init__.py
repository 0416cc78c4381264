"""Retrieval for DynamicRAG data: dense (sentence-transformers or GRACE) and BM25 retrievers, relevance labels."""

from .dense import BM25Retriever, DenseRetriever, attach_ctxs, corpus_fingerprint
from .labels import LLMJudge, MonoT5Judge, has_answer, normalize_answer

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "LLMJudge",
    "MonoT5Judge",
    "attach_ctxs",
    "corpus_fingerprint",
    "has_answer",
    "normalize_answer",
]
