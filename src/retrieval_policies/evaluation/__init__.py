"""Evaluation of retrieval policies: mteb encoders, offline mteb tasks and their held-out split."""

from .local_tasks import (
    LOCAL_TASKS,
    LocalLeeSTS,
    LocalWikipediaSectionRetrieval,
    LocalWordNetDefinitionRetrieval,
    heldout_ids,
    heldout_texts,
)
from .mteb_encoder import GraceMtebEncoder, grace_model_meta

__all__ = [
    "LOCAL_TASKS",
    "GraceMtebEncoder",
    "LocalLeeSTS",
    "LocalWikipediaSectionRetrieval",
    "LocalWordNetDefinitionRetrieval",
    "grace_model_meta",
    "heldout_ids",
    "heldout_texts",
]
