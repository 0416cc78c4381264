"""What every training recipe shares: dtypes, resuming, and making each save of a TRL trainer a Hub-ready repo of
its method (the causal LM plus the method's settings and code)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def torch_dtype(name: str | None):
    """ModelConfig.dtype ("bfloat16", "float32", "auto" or None) as a torch dtype; fp32 unless asked."""
    if name in (None, "auto"):
        return torch.float32
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return getattr(torch, name)


@contextlib.contextmanager
def whole_model_loading():
    """Load a model whole inside, even while a DeepSpeed ZeRO-3 config is alive (TrainingArguments made one).

    transformers otherwise loads under ``deepspeed.zero.Init``: the parameters come out partitioned and empty (so a
    LoRA ``merge_and_unload`` fails on their shapes), and its broadcasts wait for every rank (so a load on the main
    process alone, as the merged export's, hangs). Inside, ``is_deepspeed_zero3_enabled()`` is False; the config is
    put back after."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def load_chat_lm(name_or_path: str, *, method: str, dtype=torch.float32, attn_implementation: str | None = None):
    """(folder, causal LM, tokenizer) for a recipe: a base chat model, a method repo or a LoRA adapter folder (merged
    into its base, so a reference built from the result is this very model). The tokenizer must have a chat
    template; a missing pad token becomes EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import resolve_model

    folder = resolve_model(name_or_path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        logger.info("%s is a LoRA adapter: merging it into its base model", folder)
        with whole_model_loading():  # merged whole on every rank; the trainer partitions the result under ZeRO-3
            model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **extra).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **extra)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.chat_template is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; {method} needs a chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return folder, model, tokenizer


def check_process_count(expected: int | None, training_args) -> None:
    """A recipe whose batch sizes are set for ``expected`` processes refuses another count: the per-step batch (and
    with it the published optimiser-step size) would silently change."""
    if expected is None:
        return
    from accelerate import PartialState

    actual = PartialState().num_processes
    if actual != expected:
        per_step = expected * training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        raise ValueError(
            f"this recipe is set for {expected} processes, launched with {actual}: set "
            f"per_device_train_batch_size (x gradient_accumulation_steps) to {per_step} / {actual} and "
            f"num_processes: {actual}, or launch with --num_processes {expected}"
        )


def checkpoint_to_resume(training_args) -> str | None:
    """``resume_from_checkpoint`` if given, else the last checkpoint in the output folder (open-r1's behaviour)."""
    from transformers.trainer_utils import get_last_checkpoint

    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    folder = Path(training_args.output_dir)
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    return last


class RepoFilesCallback(TrainerCallback):
    """Adds the method's settings and code to each full-model checkpoint, so a checkpoint loads like the final output
    (LoRA checkpoints hold only an adapter and are left as they are)."""

    def __init__(self, write_files: Callable[[Path], None]):
        self.write_files = write_files

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (folder / "config.json").is_file():
                self.write_files(folder)
        return control


ADAPTER_FOLDER = "lora_adapter"


def _merge_saved_adapter(folder: Path, tokenizer, wrap: Callable) -> None:
    """Replace the adapter that ``save_model`` wrote into ``folder`` by the merged model as a method repo; the adapter
    files move to ``folder/lora_adapter`` (left at the top, transformers would load the repo as an adapter)."""
    import shutil

    from peft import AutoPeftModelForCausalLM

    adapter = folder / ADAPTER_FOLDER
    adapter.mkdir(exist_ok=True)
    for path in list(folder.iterdir()):
        if path.name.startswith(("adapter_", "README")) and path.is_file():
            shutil.move(str(path), adapter / path.name)
    logger.info("merging the LoRA adapter in %s into its base model", adapter)
    with whole_model_loading():  # the main process alone: never under zero.Init, whose broadcasts need every rank
        merged = AutoPeftModelForCausalLM.from_pretrained(str(adapter), dtype="auto").merge_and_unload()
    wrap(merged, tokenizer).save_pretrained(folder)


def export_policy(
    trainer,
    tokenizer,
    output_dir: str,
    *,
    wrap: Callable,
    auto_model: str,
    write_files: Callable[[Path], None],
    extra: dict | None = None,
) -> Path:
    """Write the trained policy as a repo of its method into ``output_dir`` (a LoRA adapter merged into its base).

    ``wrap(model, tokenizer)`` gives the method's model class (with ``save_pretrained``); under DeepSpeed/FSDP every
    rank takes part in gathering the weights, then the main process adds ``auto_map`` and the method's files.
    """
    folder = Path(output_dir)
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        trainer.save_model(output_dir)
        if trainer.accelerator.is_main_process and (folder / "adapter_config.json").is_file():
            # LoRA: save_model gathered and wrote the adapter only; merge it into its base for a full repo
            _merge_saved_adapter(folder, tokenizer, wrap)
        elif trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(output_dir)
            config = json.loads((folder / "config.json").read_text())
            config.setdefault("auto_map", {})["AutoModel"] = auto_model
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            write_files(folder)
    elif trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        wrap(model, tokenizer).save_pretrained(folder)
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(str(folder / "trainer_state.json"))  # the log history the card's curves come from
        if extra:
            from .local_paths import portable

            # a published repo names local datasets and folders by their pushed repo id or folder name, not by path
            settings = portable(json.loads(json.dumps(extra, default=str)))
            (folder / "training_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()
    return folder


def compact_fused_lm_head() -> None:
    """Make TRL's fused LM head score only the labelled positions on CPU too: the same loss and gradients, less work.

    TRL 1.16's ``add_fused_lm_head`` projects through the vocabulary only the positions whose next token has a label on
    CUDA and XPU, and every position elsewhere, to keep tile shapes fixed for compiled backends (Neuron). On eager CPU
    that runs the LM head, its backward recomputation and the log-softmax statistics over every prompt token: for the
    DynamicRAG reranker's ~650-token prompts with ~20-token completions, most of a step's LM-head work is for positions
    the loss ignores (benchmarks/sft_step.py). Compiled and XLA devices keep TRL's choice. Idempotent; refuses with
    the TRL version if the seam it replaces is gone.
    """
    import trl
    from trl.trainer import utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)  # what add_fused_lm_head asks to choose compact scoring
    if decide is None:
        raise RuntimeError(
            f"trl {trl.__version__} has no trl.trainer.utils._use_triton: compact_fused_lm_head needs "
            "updating for this TRL version"
        )
    if hasattr(decide, "trl_choice"):  # already patched
        return

    def compact_scoring(device: torch.device) -> bool:
        return device.type == "cpu" or decide(device)

    compact_scoring.trl_choice = decide  # TRL's own decision: marks the patch, and gives it back to whoever needs it
    trl_utils._use_triton = compact_scoring


# GRPO generation-batch keys aligned with the completion tokens (trimmed with them). Besides these and prompt_ids /
# prompt_mask a batch holds per-row tensors and scalars; anything else of two or more dimensions is refused.
_COMPLETION_KEYS = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
)


def length_sorted_micro_batches(batch: dict, chunks: int) -> list[dict]:
    """Split a GRPO generation batch into ``chunks`` micro-batches of rows of similar length, each cut to its own
    longest prompt and completion (TRL pads every row to the generation batch's longest, then shuffles and splits).

    Only for a generation batch that is one optimizer step (``steps_per_generation == gradient_accumulation_steps``,
    ``num_iterations == 1``) with a loss normalised over the whole batch (``dapo``/``cispo``: TRL divides by the
    batch's token count): there the gradient is the sum over the micro-batches, so neither their order nor the
    padding they drop changes it. Left padding trimmed from a prompt shifts a row's positions uniformly, which
    rotary attention does not see. A completion is kept to at least one column (``logits_to_keep=0`` means all).
    """
    prompt_mask, completion_mask = batch["prompt_mask"], batch["completion_mask"]
    rows = prompt_mask.shape[0]
    if rows % chunks:
        raise ValueError(f"a generation batch of {rows} rows does not split into {chunks} equal micro-batches")
    unknown = sorted(
        k
        for k, v in batch.items()
        if torch.is_tensor(v) and v.ndim >= 2 and k not in _COMPLETION_KEYS and k not in ("prompt_ids", "prompt_mask")
    )
    if unknown:
        raise ValueError(
            f"length-sorted micro-batches cannot trim the generation batch's {unknown}: "
            "use TRL's shuffled split for this batch"
        )
    # by completion length, then prompt length: a group's G rows share their prompt, their completions vary most
    lengths = completion_mask.sum(dim=1) * (prompt_mask.shape[1] + 1) + prompt_mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    size, micro_batches = rows // chunks, []
    for start in range(0, rows, size):
        take = order[start : start + size]
        part = {}
        for key, value in batch.items():
            if torch.is_tensor(value) and value.ndim >= 1:
                part[key] = value[take.to(value.device)]
            elif isinstance(value, list):
                part[key] = [value[i] for i in take.tolist()]
            else:
                part[key] = value
        used = part["prompt_mask"].any(dim=0).nonzero()
        first = int(used[0]) if len(used) else part["prompt_mask"].shape[1] - 1
        part["prompt_ids"], part["prompt_mask"] = part["prompt_ids"][:, first:], part["prompt_mask"][:, first:]
        used = part["completion_mask"].any(dim=0).nonzero()
        width = int(used[-1]) + 1 if len(used) else 1
        for key in _COMPLETION_KEYS:
            value = part.get(key)
            if torch.is_tensor(value) and value.ndim >= 2:
                part[key] = value[:, :width]
        micro_batches.append(part)
    return micro_batches
