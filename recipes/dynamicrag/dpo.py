"""Stage 5 of DynamicRAG: DPO from the SFT model on its own ranked trajectories (method spec §1.8).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/dynamicrag/dpo.py \\
        --config recipes/dynamicrag/SmolLM2-135M-Instruct/config_dpo.yaml

The reference model is the frozen SFT model, built by TRL itself in every launch mode (ZeRO-3 refuses a deep copy of
the policy): with full fine-tuning TRL loads it from the SFT folder (a LoRA SFT adapter is merged first and the
merged model written to ``output_dir/reference-sft-merged`` for it); with ``use_peft`` the reference is the policy
with its adapter disabled, i.e. the merged SFT model and not its base. Sigmoid loss, ``beta`` from the config. The
output folder is a DynamicRAG repo.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser, get_peft_config

from retrieval_policies.common.dataset_io import load_split
from retrieval_policies.common.training import checkpoint_to_resume, compact_fused_lm_head, torch_dtype
from retrieval_policies.dynamicrag.training import (
    align_prompt_options,
    export_repo,
    load_policy,
    prepare_reference,
    repo_callback,
)
from retrieval_policies.dynamicrag.training_examples import refuse_over_length


@dataclass
class DPOScriptArguments:
    dataset_name: str = "outputs/dynamicrag/pairs"
    dataset_config: str = "pairs"
    dataset_train_split: str = "train"
    kinds: list[str] = field(default_factory=lambda: ["reranker", "generator"])
    max_train_samples: int | None = None


ARGUMENTS = (DPOScriptArguments, DPOConfig, ModelConfig)  # what TrlParser reads the YAML config into


def main(script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    compact_fused_lm_head()  # the loss reads ~20 completion tokens of ~650: project only those, on CPU too
    model, tokenizer, settings = load_policy(model_args.model_name_or_path, dtype=torch_dtype(model_args.dtype))
    train = load_split(
        script_args.dataset_name,
        script_args.dataset_config,
        script_args.dataset_train_split,
        limit=script_args.max_train_samples,
        kinds=script_args.kinds,
        columns=["prompt", "chosen", "rejected"],
    )
    refuse_over_length(train, tokenizer, training_args.max_length, name=f"{script_args.dataset_name} (pairs)")
    align_prompt_options(settings, train, name=script_args.dataset_name)  # restate_query: as the data was built
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        prepare_reference(model, tokenizer, model_args.model_name_or_path, training_args.output_dir)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[repo_callback(settings)],
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    folder = export_repo(
        trainer,
        tokenizer,
        settings,
        training_args.output_dir,
        extra={
            "stage": "dpo",
            "script": asdict(script_args),
            "model": asdict(model_args),
            "training": training_args.to_dict(),
        },
    )
    print(f"DPO model written to {folder}")


if __name__ == "__main__":
    main(*TrlParser(ARGUMENTS).parse_args_and_config())
