"""What the DynamicRAG SFT and DPO recipes share: loading the policy (merging a LoRA adapter first), making every
save a DynamicRAG repo, and exporting the final model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel, add_auto_map, write_repo_files
from ..training import RepoFilesCallback, export_policy, load_chat_lm



def load_policy(name_or_path: str, *, dtype=torch.float32):
    """(causal LM, tokenizer, DynamicRAG settings) from a base model, a DynamicRAG repo or a LoRA adapter folder
    (merged, so a DPO reference built from the result is the SFT model itself)."""
    folder, model, tokenizer = load_chat_lm(name_or_path, method="DynamicRAG", dtype=dtype)
    settings_file = folder / DYNAMICRAG_CONFIG_NAME
    settings = DynamicRAGConfig.load(settings_file) if settings_file.is_file() else DynamicRAGConfig()
    add_auto_map(model.config)  # every save of the trainer then points AutoModel at the DynamicRAG code
    return model, tokenizer, settings


def repo_callback(settings: DynamicRAGConfig) -> RepoFilesCallback:
    """Each full fine-tune checkpoint becomes a DynamicRAG repo (settings and code next to the weights)."""
    return RepoFilesCallback(lambda folder: write_repo_files(folder, settings))


def export_repo(trainer, tokenizer, settings: DynamicRAGConfig, output_dir: str, *, extra: dict | None = None) -> Path:
    """The trained policy (a LoRA adapter merged) as a DynamicRAG repo in ``output_dir``."""
    return export_policy(trainer, tokenizer, output_dir, wrap=lambda model, tok: DynamicRAGModel(model, tok, settings),
                         auto_model="modeling_dynamicrag.DynamicRAGModel",
                         write_files=lambda folder: write_repo_files(folder, settings), extra=extra)
