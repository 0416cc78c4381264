"""Stage 1 of DynamicRAG: SFT of one model as reranker (behaviour cloning) and generator (method spec §1.4).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/dynamicrag/sft.py \\
        --config recipes/dynamicrag/SmolLM2-135M-Instruct/config_sft.yaml

Loss on the completion only (TRL's prompt/completion format). ``use_peft: true`` trains LoRA adapters (add
``lora_modules_to_save: [embed_tokens, lm_head]`` when the base model's chat tokens are untrained). The output
folder (and each full fine-tune checkpoint) is a DynamicRAG repo; a LoRA adapter is merged into it at the end.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from retrieval_policies.common.dataset_io import load_split
from retrieval_policies.common.training import checkpoint_to_resume, compact_fused_lm_head, torch_dtype
from retrieval_policies.dynamicrag.training import align_prompt_options, export_repo, load_policy, repo_callback
from retrieval_policies.dynamicrag.training_examples import refuse_over_length


@dataclass
class SFTScriptArguments:
    dataset_name: str = "outputs/data/dynamicrag-training"
    dataset_config: str = "sft"
    dataset_train_split: str = "train"
    dataset_test_split: str | None = "validation"
    kinds: list[str] = field(default_factory=lambda: ["reranker", "generator"])  # the records' `kind` column
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_passages: int | None = None  # recorded in the repo's DynamicRAG settings (passages shown per reranker call)


ARGUMENTS = (SFTScriptArguments, SFTConfig, ModelConfig)  # what TrlParser reads the YAML config into


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    compact_fused_lm_head()  # the loss reads ~20 completion tokens of ~650: project only those, on CPU too
    model, tokenizer, settings = load_policy(model_args.model_name_or_path, dtype=torch_dtype(model_args.dtype))
    if script_args.max_passages:
        settings.max_passages = script_args.max_passages
    columns = ["prompt", "completion"]
    train = load_split(
        script_args.dataset_name,
        script_args.dataset_config,
        script_args.dataset_train_split,
        limit=script_args.max_train_samples,
        kinds=script_args.kinds,
        columns=columns,
    )
    evaluation = None
    if script_args.dataset_test_split and training_args.eval_strategy != "no":
        evaluation = load_split(
            script_args.dataset_name,
            script_args.dataset_config,
            script_args.dataset_test_split,
            limit=script_args.max_eval_samples,
            kinds=script_args.kinds,
            columns=columns,
        )
    refuse_over_length(train, tokenizer, training_args.max_length, name=f"{script_args.dataset_name} (sft/train)")
    align_prompt_options(settings, train, name=script_args.dataset_name)  # restate_query: as the data was built
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[repo_callback(settings)],
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    folder = export_repo(
        trainer,
        tokenizer,
        settings,
        training_args.output_dir,
        extra={
            "stage": "sft",
            "script": asdict(script_args),
            "model": asdict(model_args),
            "training": training_args.to_dict(),
        },
    )
    print(f"SFT model written to {folder}")


if __name__ == "__main__":
    main(*TrlParser(ARGUMENTS).parse_args_and_config())
