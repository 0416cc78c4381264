"""What the DynamicRAG SFT and DPO recipes share: loading the policy (merging a LoRA adapter first), making every
save a DynamicRAG repo, and exporting the final model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..common.training import RepoFilesCallback, export_policy, load_chat_lm
from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel, add_auto_map, write_repo_files


def load_policy(name_or_path: str, *, dtype=torch.float32):
    """(causal LM, tokenizer, DynamicRAG settings) from a base model, a DynamicRAG repo or a LoRA adapter folder
    (merged, so a DPO reference built from the result is the SFT model itself)."""
    folder, model, tokenizer = load_chat_lm(name_or_path, method="DynamicRAG", dtype=dtype)
    settings_file = folder / DYNAMICRAG_CONFIG_NAME
    settings = DynamicRAGConfig.load(settings_file) if settings_file.is_file() else DynamicRAGConfig()
    add_auto_map(model.config)  # every save of the trainer then points AutoModel at the DynamicRAG code
    return model, tokenizer, settings


def align_prompt_options(settings: DynamicRAGConfig, dataset, *, name: str) -> None:
    """Set ``settings.restate_query`` from the reranker prompts of ``dataset`` (so the repo runs with the prompt it
    was trained on); refuse a dataset that mixes both prompts, or one that drops the option a model was trained with."""
    from ..models.dynamicrag.prompts_dynamicrag import RERANKER_SYSTEM_PROMPT, restates_query

    kinds = {restates_query(row["prompt"]) for row in dataset if row["prompt"][0]["content"] == RERANKER_SYSTEM_PROMPT}
    if len(kinds) > 1:
        raise ValueError(f"{name}: some reranker prompts restate the query after the passages and some do not")
    if not kinds:
        return
    (restated,) = kinds
    if settings.restate_query and not restated:
        raise ValueError(
            f"{name}: the model was trained with restate_query (the query again after the passages) but these "
            "reranker prompts do not restate it: rebuild the data with --restate-query"
        )
    settings.restate_query = restated


REFERENCE_FOLDER = "reference-sft-merged"


def prepare_reference(model, tokenizer, name_or_path: str, output_dir: str) -> Path:
    """Point TRL's own reference loading at the SFT model; returns the folder it will load.

    DPOTrainer (``ref_model=None``, full fine-tuning) loads the reference from ``model.config._name_or_path`` in
    every launch mode, ZeRO-3 included, where a deep copy of the policy is refused. For a full SFT folder that is
    the folder itself. A LoRA SFT adapter was merged in memory (its config names the *base*), so the merged model is
    written once to ``output_dir/reference-sft-merged`` and named there.
    """
    from accelerate import PartialState

    from ..assets import resolve_model

    folder = Path(resolve_model(name_or_path))
    if (folder / "adapter_config.json").is_file():
        merged = Path(output_dir) / REFERENCE_FOLDER
        state = PartialState()
        if state.is_main_process and not (merged / "config.json").is_file():
            model.save_pretrained(merged)
            tokenizer.save_pretrained(merged)
        state.wait_for_everyone()
        folder = merged
    model.config._name_or_path = str(folder)
    return folder


def repo_callback(settings: DynamicRAGConfig) -> RepoFilesCallback:
    """Each full fine-tune checkpoint becomes a DynamicRAG repo (settings and code next to the weights)."""
    return RepoFilesCallback(lambda folder: write_repo_files(folder, settings))


def export_repo(trainer, tokenizer, settings: DynamicRAGConfig, output_dir: str, *, extra: dict | None = None) -> Path:
    """The trained policy (a LoRA adapter merged) as a DynamicRAG repo in ``output_dir``."""
    return export_policy(
        trainer,
        tokenizer,
        output_dir,
        wrap=lambda model, tok: DynamicRAGModel(model, tok, settings),
        auto_model="modeling_dynamicrag.DynamicRAGModel",
        write_files=lambda folder: write_repo_files(folder, settings),
        extra=extra,
    )
