"""LoRA under ZeRO-3 (issue 36, defect 5): while a ZeRO-3 config is alive (TrainingArguments made one), transformers
loads every model under ``deepspeed.zero.Init``, partitioned, empty and with broadcasts that need every rank. The
adapter merges (``load_chat_lm`` and the merged export on the main process) must load whole instead. DeepSpeed does
not run here (no CUDA): a live ZeRO-3 config is stood for by an object whose ``is_zero3()`` is True, which is all
transformers consults, and loading under it is shown to take the zero.Init path the merges must avoid."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from testing_utils import tiny_llama
from transformers import AutoTokenizer
from transformers.integrations import deepspeed as hf_deepspeed

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.common.training import load_chat_lm


class LiveZero3Config:
    def is_zero3(self) -> bool:
        return True


@pytest.fixture
def adapter(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    base = tmp_path / "base"
    tiny_llama(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", lora.merge_and_unload(), tokenizer


@pytest.fixture
def zero3():
    config = LiveZero3Config()
    hf_deepspeed.set_hf_deepspeed_config(config)
    yield config
    hf_deepspeed.unset_hf_deepspeed_config()


def test_a_plain_load_under_a_live_zero3_config_goes_through_zero_init(adapter, zero3):
    """What the merges ran into: transformers reaches for deepspeed.zero.Init (here: deepspeed is not installed)."""
    from peft import AutoPeftModelForCausalLM

    assert hf_deepspeed.is_deepspeed_zero3_enabled()
    with pytest.raises(Exception, match="deepspeed"):
        AutoPeftModelForCausalLM.from_pretrained(str(adapter[0]))


def test_load_chat_lm_merges_an_adapter_whole_under_zero3(adapter, zero3):
    folder, merged, _ = adapter
    _, model, _ = load_chat_lm(str(folder), method="test")
    torch.testing.assert_close(
        model.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight
    )
    assert hf_deepspeed.is_deepspeed_zero3_enabled()  # the config is back for the trainer


def test_the_merged_export_under_deepspeed_loads_whole_on_the_main_process(adapter, zero3, tmp_path):
    from retrieval_policies.dynamicrag.training import export_repo
    from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel

    folder, merged, tokenizer = adapter
    lora = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.peft_config["default"].base_model_name_or_path = str(folder.parent / "base")

    class DeepSpeedTrainer:
        is_deepspeed_enabled, is_fsdp_enabled = True, False
        accelerator = Accelerator(cpu=True)
        state = SimpleNamespace(save_to_json=lambda path: Path(path).write_text("{}"))

        def save_model(self, output_dir):
            lora.save_pretrained(output_dir)  # what Trainer.save_model writes for a PEFT model under ZeRO-3

    out = export_repo(DeepSpeedTrainer(), tokenizer, DynamicRAGConfig(), str(tmp_path / "out"))
    assert (out / "lora_adapter" / "adapter_config.json").is_file() and not (out / "adapter_config.json").exists()
    hf_deepspeed.unset_hf_deepspeed_config()
    loaded = DynamicRAGModel.from_pretrained(out, device_map="cpu", dtype="float32")
    torch.testing.assert_close(
        loaded.model.model.layers[0].self_attn.q_proj.weight,
        lora.merge_and_unload().model.layers[0].self_attn.q_proj.weight,
    )
    assert json.loads((out / "config.json").read_text())["auto_map"]
