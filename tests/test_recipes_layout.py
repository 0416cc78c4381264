"""The accelerate launch configs that the recipes are run with parse as the kind they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs"


@pytest.mark.parametrize("name, kind, precision, zero_stage", [
    ("cpu", "NO", "no", None), ("ddp", "MULTI_GPU", "bf16", None), ("fsdp", "FSDP", "bf16", None),
    ("zero2", "DEEPSPEED", "bf16", 2), ("zero3", "DEEPSPEED", "bf16", 3),
])
def test_accelerate_configs(name, kind, precision, zero_stage):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.mixed_precision == precision
    assert (config.deepspeed_config or {}).get("zero_stage") == zero_stage
    assert config.use_cpu == (name == "cpu")
