"""GRACE: GRPO with hidden-state contrastive rewards (arXiv 2510.04506; method spec §3–§5).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/grace/grpo.py \\
        --config recipes/grace/SmolLM2-135M-Instruct/config_supervised.yaml

The dataset is a folder or repo built by dataset_builders/grace_triplets.py (supervised) or grace_sentences.py
(unsupervised). The faithful settings are the defaults of the configs: group-mean advantages without std scaling
(``scale_rewards: none``), ``beta: 0``, τ = 0.1, λc = λx = 0.2. Every save, and the final output folder, is a GRACE
repo (``AutoModel`` with remote code, ``AutoModelForCausalLM``, ``SentenceTransformer``); a LoRA adapter is merged at
the end. Training resumes from the last checkpoint in ``output_dir``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config

from retrieval_policies.common.dataset_io import load_split
from retrieval_policies.common.training import check_process_count, checkpoint_to_resume, torch_dtype
from retrieval_policies.grace.grpo import (
    GraceContrastiveReward,
    GraceGRPOTrainer,
    grace_chat_template_kwargs,
    to_grpo_rows,
)
from retrieval_policies.grace.rewards import RewardWeights
from retrieval_policies.grace.training import export_grace_repo, grace_repo_callback, load_grace_policy


@dataclass
class GraceScriptArguments:
    dataset_name: str = "outputs/data/grace-triplets"
    dataset_config: str | None = None  # default: "triplets" (supervised) or "sentences" (unsupervised)
    dataset_train_split: str = "train"
    mode: str = "supervised"  # or "unsupervised"
    max_train_samples: int | None = None
    tau: float = 0.1
    lambda_consistency: float = 0.2
    lambda_cross: float = 0.2
    extra_temperature: float = 0.5  # the query/negative (or second-view) rollouts
    # named deviations (grace.rewards): "exclude" truncated rollouts from the group baseline instead of the −1
    # penalty; "member": per-rollout negative and cross-group terms instead of the published per-group ones
    truncation: str = "penalty"
    contrastive: str = "group"
    system_prompt: str | None = None  # the rationale instruction (None: the published one); saved in the repo
    # who samples the rollouts without vLLM: "shared_prefix" (GraceGRPOTrainer's loop: the system turn once per batch,
    # finished rollouts leave it; same temperature/top-p distribution, per-rollout seeds) or "generate" (TRL's)
    rollout_decoding: str = "shared_prefix"
    # how the loss sees a generation batch: "shuffled" (TRL's split, each micro-batch padded to the batch's longest) or
    # "by_length" (rows of similar length together, each micro-batch cut to its own longest: the same gradient, less
    # padding; needs gradient_accumulation_steps == steps_per_generation, num_iterations 1 and a dapo-style loss)
    micro_batches: str = "shuffled"
    embedding_batch_size: int = 16
    rationales_to_log: int = 2
    num_processes: int | None = None  # the GPU count the batch sizes are set for; checked at launch when given


ARGUMENTS = (GraceScriptArguments, GRPOConfig, ModelConfig)  # what TrlParser reads the YAML config into


def main(script_args: GraceScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_process_count(script_args.num_processes, training_args)
    if training_args.scale_rewards != "none" or training_args.beta != 0:
        logging.getLogger(__name__).warning(
            "scale_rewards=%r, beta=%r: not GRACE's published settings (none, 0)",
            training_args.scale_rewards,
            training_args.beta,
        )
    model, tokenizer, grace_config = load_grace_policy(
        model_args.model_name_or_path,
        dtype=torch_dtype(model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    )
    grace_config.max_new_tokens = training_args.max_completion_length
    if script_args.system_prompt is not None:
        grace_config.system_prompt = script_args.system_prompt
    # the prompts TRL renders carry the embedder's pinned template variables (Llama 3.x's date), so training,
    # the reward and every later encode see the same system prefix
    training_args.chat_template_kwargs = grace_chat_template_kwargs(grace_config, training_args.chat_template_kwargs)
    grace_config.chat_template_kwargs = dict(training_args.chat_template_kwargs)
    mode = script_args.mode
    columns = ["query", "positive", "negative"] if mode == "supervised" else ["text"]
    config = script_args.dataset_config or ("triplets" if mode == "supervised" else "sentences")
    rows = load_split(
        script_args.dataset_name,
        config,
        script_args.dataset_train_split,
        limit=script_args.max_train_samples,
        columns=columns,
    )
    from datasets import Dataset

    train = Dataset.from_list(to_grpo_rows(list(rows), mode, grace_config))
    reward = GraceContrastiveReward(
        mode,
        RewardWeights(
            script_args.tau,
            script_args.lambda_consistency,
            script_args.lambda_cross,
            truncation=script_args.truncation,
            contrastive=script_args.contrastive,
        ),
        grace_config=grace_config,
        extra_temperature=script_args.extra_temperature,
        seed=training_args.seed,
        embedding_batch_size=script_args.embedding_batch_size,
        rationales_to_log=script_args.rationales_to_log,
    )
    trainer = GraceGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[grace_repo_callback(grace_config)],
        grace_config=grace_config,
        rollout_decoding=script_args.rollout_decoding,
        micro_batches=script_args.micro_batches,
    )
    reward.bind(trainer)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    folder = export_grace_repo(
        trainer,
        tokenizer,
        grace_config,
        training_args.output_dir,
        extra={
            "stage": f"grpo-{mode}",
            "script": asdict(script_args),
            "model": asdict(model_args),
            "training": training_args.to_dict(),
        },
    )
    print(f"GRACE model written to {folder}")


if __name__ == "__main__":
    main(*TrlParser(ARGUMENTS).parse_args_and_config())
