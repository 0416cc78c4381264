"""What the DynamicRAG SFT and DPO recipes share: loading the policy (merging a LoRA adapter first), making every
save a DynamicRAG repo, and exporting the final model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..assets import resolve_model
from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel, add_auto_map, write_repo_files
from ..training import RepoFilesCallback, export_policy

logger = logging.getLogger(__name__)


def load_policy(name_or_path: str, *, dtype=torch.float32):
    """(causal LM, tokenizer, DynamicRAG settings) from a base model, a DynamicRAG repo or a LoRA adapter folder.

    An adapter is merged into its base, so a DPO reference built from the result is the SFT model itself.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model(name_or_path)
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        logger.info("%s is a LoRA adapter: merging it into its base model", folder)
        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    settings_file = folder / DYNAMICRAG_CONFIG_NAME
    settings = DynamicRAGConfig.load(settings_file) if settings_file.is_file() else DynamicRAGConfig()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.chat_template is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; DynamicRAG needs a chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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
