"""Loading a GRACE policy for training and making every save of the trainer a GRACE repo."""

from __future__ import annotations

from pathlib import Path

import torch

from ..common.training import RepoFilesCallback, export_policy, load_chat_lm
from ..models.grace.configuration_grace import GRACE_CONFIG_NAME, GraceConfig
from ..models.grace.modeling_grace import GraceEmbedder, add_auto_map, write_repo_files


def load_grace_policy(name_or_path: str, *, dtype=torch.float32, attn_implementation: str | None = None):
    """(causal LM, tokenizer, GRACE settings) from a chat LLM or a GRACE repo (its settings are kept)."""
    folder, model, tokenizer = load_chat_lm(
        name_or_path, method="GRACE", dtype=dtype, attn_implementation=attn_implementation
    )
    settings = folder / GRACE_CONFIG_NAME
    add_auto_map(model.config)  # every save of the trainer then points AutoModel at the GRACE code
    return model, tokenizer, GraceConfig.load(settings) if settings.is_file() else GraceConfig()


def grace_repo_callback(grace_config: GraceConfig) -> RepoFilesCallback:
    return RepoFilesCallback(lambda folder: write_repo_files(folder, grace_config))


def export_grace_repo(
    trainer, tokenizer, grace_config: GraceConfig, output_dir: str, *, extra: dict | None = None
) -> Path:
    return export_policy(
        trainer,
        tokenizer,
        output_dir,
        wrap=lambda model, tok: GraceEmbedder(model, tok, grace_config),
        auto_model="modeling_grace.GraceEmbedder",
        write_files=lambda folder: write_repo_files(folder, grace_config),
        extra=extra,
    )
