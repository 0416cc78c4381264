"""Loading a GRACE policy for training and making every save of the trainer a GRACE repo."""

from __future__ import annotations

from pathlib import Path

import torch

from ..assets import resolve_model
from ..models.grace.configuration_grace import GRACE_CONFIG_NAME, GraceConfig
from ..models.grace.modeling_grace import GraceEmbedder, add_auto_map, write_repo_files
from ..training import RepoFilesCallback, export_policy


def load_grace_policy(name_or_path: str, *, dtype=torch.float32):
    """(causal LM, tokenizer, GRACE settings) from a chat LLM or a GRACE repo (its settings are kept)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.chat_template is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; GRACE needs a chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    settings = folder / GRACE_CONFIG_NAME
    add_auto_map(model.config)  # every save of the trainer then points AutoModel at the GRACE code
    return model, tokenizer, GraceConfig.load(settings) if settings.is_file() else GraceConfig()


def grace_repo_callback(grace_config: GraceConfig) -> RepoFilesCallback:
    return RepoFilesCallback(lambda folder: write_repo_files(folder, grace_config))


def export_grace_repo(trainer, tokenizer, grace_config: GraceConfig, output_dir: str, *, extra: dict | None = None) -> Path:
    return export_policy(trainer, tokenizer, output_dir, wrap=lambda model, tok: GraceEmbedder(model, tok, grace_config),
                         auto_model="modeling_grace.GraceEmbedder",
                         write_files=lambda folder: write_repo_files(folder, grace_config), extra=extra)
