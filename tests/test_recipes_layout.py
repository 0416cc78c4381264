"""The accelerate launch configs that the recipes are run with parse as the kind they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from testing_utils import load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs"


@pytest.mark.parametrize(
    "name, kind, precision, zero_stage",
    [
        ("cpu", "NO", "no", None),
        ("ddp", "MULTI_GPU", "bf16", None),
        ("fsdp2", "FSDP", "bf16", None),
        ("zero2", "DEEPSPEED", "bf16", 2),
        ("zero3", "DEEPSPEED", "bf16", 3),
    ],
)
def test_accelerate_configs(name, kind, precision, zero_stage):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.mixed_precision == precision
    assert (config.deepspeed_config or {}).get("zero_stage") == zero_stage
    assert config.use_cpu == (name == "cpu")


RECIPES = CONFIGS.parent


RECIPE_CONFIGS = sorted(RECIPES.glob("*/*/config_*.yaml"))


def _stage_of(path):
    """The entry script a config is for: config_<stage>.yaml, except GRACE's one stage (config_<mode>.yaml)."""
    method = path.parents[1].name
    return load_recipe(
        method, "grpo" if method == "grace" else path.stem.removeprefix("config_").removeprefix("evidence_")
    )  # config_evidence_<stage>.yaml


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_config_names_only_fields_of_its_stage(path):
    import dataclasses

    import yaml

    arguments = _stage_of(path).ARGUMENTS
    known = {f.name for cls in arguments for f in dataclasses.fields(cls)}
    unknown = sorted(set(yaml.safe_load(path.read_text())) - known)
    assert not unknown, f"{path}: not a field of {[c.__name__ for c in arguments]}: {unknown}"


@pytest.mark.parametrize("path", [p for p in RECIPE_CONFIGS if "SmolLM2" in str(p)], ids=lambda p: p.name)
def test_cpu_recipe_configs_parse_with_trl(path):
    from trl import TrlParser

    parsed = TrlParser(_stage_of(path).ARGUMENTS).parse_args_and_config(args=["--config", str(path)])
    for value in parsed:
        if hasattr(value, "use_cpu"):  # the demo recipes run in fp32 on the CPU
            assert value.use_cpu and not value.bf16 and not value.gradient_checkpointing


def test_grace_paper_configs_carry_the_published_settings():
    import yaml

    models = ("Qwen2.5-1.5B-Instruct", "Llama-3.2-3B-Instruct", "Qwen2.5-3B-Instruct", "Qwen3-4B-Instruct-2507")
    for model in models:
        for mode in ("supervised", "unsupervised"):
            c = yaml.safe_load((RECIPES / "grace" / model / f"config_{mode}.yaml").read_text())
            assert c["mode"] == mode and c["num_generations"] == 8 and c["generation_batch_size"] == 512
            assert (c["scale_rewards"], c["beta"], c["epsilon"], c["learning_rate"]) == ("none", 0.0, 0.2, 1e-6)
            assert c["max_completion_length"] == 2048 and c["bf16"] and c["use_vllm"] and c["tau"] == 0.1


def test_dynamicrag_paper_configs_carry_the_published_settings():
    import yaml

    for model, passages in (("Llama-3-8B", 40), ("Llama-2-7B", 20)):
        sft = yaml.safe_load((RECIPES / "dynamicrag" / model / "config_sft.yaml").read_text())
        dpo = yaml.safe_load((RECIPES / "dynamicrag" / model / "config_dpo.yaml").read_text())
        assert sft["max_passages"] == passages and sft["learning_rate"] == 1e-5 and sft["num_train_epochs"] == 3
        assert dpo["learning_rate"] == 5e-6 and dpo["beta"] == 0.1 and dpo["loss_type"] == ["sigmoid"]
        assert sft["bf16"] and dpo["bf16"] and sft["seed"] == 42


GRACE_PAPER_CONFIGS = [p for p in RECIPE_CONFIGS if p.parents[1].name == "grace" and "SmolLM2" not in str(p)]


@pytest.mark.parametrize("path", GRACE_PAPER_CONFIGS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_grace_paper_configs_batch_and_vllm_settings(path):
    """The published run: 64 prompts x 8 per generation, 4 optimiser steps of 128, on the GPU count the YAML names;
    vLLM's context fits prompt + completion, and no importance-sampling correction (the published objective has none)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    per_step = (
        config["per_device_train_batch_size"] * config["num_processes"] * config.get("gradient_accumulation_steps", 1)
    )
    assert per_step == 128 and config["generation_batch_size"] == 512 and config["num_generations"] == 8
    assert config["vllm_max_model_length"] == 3072 and config["vllm_importance_sampling_correction"] is False
    assert f"--num_processes {config['num_processes']}" in path.read_text()
    assert config["dataset_name"].endswith(path.parent.name)  # the length filter used this backbone's tokenizer


def test_a_recipe_refuses_another_process_count():
    from types import SimpleNamespace

    from retrieval_policies.common.training import check_process_count

    args = SimpleNamespace(per_device_train_batch_size=32, gradient_accumulation_steps=1)
    check_process_count(None, args)
    check_process_count(1, args)  # this test runs as one process
    with pytest.raises(ValueError, match="set for 4 processes, launched with 1: .* 128 / 1"):
        check_process_count(4, args)


@pytest.mark.parametrize("model, context, passages", [("Llama-3-8B", 8192, 40), ("Llama-2-7B", 4096, 20)])
def test_paper_dynamicrag_configs_generate_with_vllm_and_score_as_published(model, context, passages):
    import yaml

    folder = RECIPES / "dynamicrag" / model
    sample = yaml.safe_load((folder / "config_sample.yaml").read_text())
    assert sample["use_vllm"] and sample["vllm_max_model_length"] == context and sample["max_passages"] == passages
    assert sample["dataset_split"] == "dpo"  # trajectories on questions held out from SFT
    rewards = yaml.safe_load((folder / "config_rewards.yaml").read_text())
    assert rewards["judge_backend"] == "vllm" and "Instruct" in rewards["judge_model"]
    assert (rewards["bertscore_model"], rewards["bertscore_num_layers"]) == ("FacebookAI/roberta-large", 17)
    assert all(rewards[f"weight_{t}"] == 0.2 for t in ("em", "rougel", "bertscore", "length", "judge"))
    pairs = yaml.safe_load((folder / "config_pairs.yaml").read_text())
    assert pairs["generator_questions"] == 10000 and not pairs["require_correct_answer"] and "task" not in pairs
