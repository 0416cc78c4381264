"""One GRPO step of the GRACE demo config (SmolLM2, 2 CPU threads), measured in one run:

(a) the share of the step spent on the reward's embeddings (target: <= 15%) and on the whole reward (extra rollouts
    + embeddings);
(b) the embedding part of the reward, once per unique sequence (G main rollouts + the group's query and negative
    once) vs the published approach (a forward pass per member for its query, its negative and its main rollout: the
    query and negative G times over), on the same sequences (target: >= 3x faster).
(c) ``--only-rollouts``: one generation batch of the evidence config (4 prompts x G = 4, <= 96 tokens, T = 0.7,
    top-p 0.95, the evidence system prompt): its rollouts sampled by GraceGRPOTrainer's shared-prefix loop vs TRL's
    ``model.generate`` on the same prompts and weights, then the reward on them (with the loop's rollouts it pools
    the hidden states the loop kept; with generate's it runs its embedding forward), alternating, three seeds each
    (target: rollouts + reward >= 1.3x).
(d) ``--only-loss``: the loss's forward and backward over one generation batch of the evidence config (its rollouts
    and rewards from GraceGRPOTrainer), as TRL's one batch padded to its longest row vs ``micro_batches="by_length"``
    (4 micro-batches of similar length, each cut to its own longest), alternating, three rounds; the same gradient
    (target: >= 1.2x).
Run alone: .venv/bin/python benchmarks/grace_step.py [--only-rollouts | --only-loss]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import torch
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])
from transformers import TrainerCallback

from retrieval_policies.assets import DEFAULT_BASE_MODEL
from retrieval_policies.grace.data import build_rows, wordnet_triplets
from retrieval_policies.grace.grpo import GraceContrastiveReward, to_grpo_rows
from retrieval_policies.grace.rewards import RewardWeights
from retrieval_policies.grace.training import load_grace_policy
from retrieval_policies.models.grace import GraceEmbedder


class StepTimer(TrainerCallback):
    def __init__(self):
        self.steps, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=4, help="prompts (groups) per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--only-rollouts", action="store_true", help="run part (c) alone")
    parser.add_argument("--only-loss", action="store_true", help="run part (d) alone")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.only_rollouts:
        write_report("grace_step_rollouts", {"c_rollouts": rollouts()})
        return
    if args.only_loss:
        write_report("grace_step_loss", {"d_loss_micro_batches": loss_micro_batches()})
        return
    from datasets import Dataset
    from trl import GRPOConfig

    from retrieval_policies.grace.grpo import GraceGRPOTrainer

    model, tokenizer, grace_config = load_grace_policy(DEFAULT_BASE_MODEL)
    rows, _ = build_rows(
        itertools.islice(wordnet_triplets(), 200), mode="supervised", tokenizer=tokenizer, validation_share=0
    )
    train = Dataset.from_list(to_grpo_rows(rows["train"][:64], "supervised", grace_config))
    batch = args.prompts * args.group_size
    reward = GraceContrastiveReward("supervised", grace_config=grace_config)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            report_to="none",
            max_steps=3,
            save_strategy="no",
            per_device_train_batch_size=batch,
            generation_batch_size=batch,
            num_generations=args.group_size,
            max_completion_length=args.max_completion_length,
            beta=0.0,
            scale_rewards="none",
            loss_type="dapo",
            learning_rate=1e-6,
            logging_steps=1,
        )
        trainer = GraceGRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        reward.bind(trainer)
        trainer.train()
    calls = reward.timings["calls"]
    step = sum(timer.steps[1:]) / len(timer.steps[1:])  # the first step warms up
    embed = reward.timings["embeddings"] / calls
    whole = (reward.timings["embeddings"] + reward.timings["extra_rollouts"]) / calls
    print(
        f"GRPO step ({args.prompts} prompts x G={args.group_size}, <= {args.max_completion_length} tokens): {step:.2f} s"
    )
    print(f"  reward embeddings: {embed:.2f} s = {embed / step:.1%} of the step (target <= 15%)")
    print(f"  whole reward (extra rollouts + embeddings): {whole:.2f} s = {whole / step:.1%} of the step")

    # (b) the same sequences, embedded once per unique sequence vs a forward per member for query, negative and main
    embedder = GraceEmbedder(model.eval(), tokenizer, grace_config)
    last = reward.last_call
    ours = last["main"] + list(last["extra"].values())
    per_member = [
        [last["extra"][last["extra_of_group"][g][0]], last["extra"][last["extra_of_group"][g][1]], main]
        for main, g in zip(last["main"], last["groups"])
    ]
    reward.embed_unique(embedder, ours[:2])  # warm-up
    timings = {}
    for name, run in (
        ("once per unique sequence", lambda: reward.embed_unique(embedder, ours)),
        (
            "published (per member: query, negative, main)",
            lambda: [embedder.embed_sequences(s, [embedder.prefix_length(x) for x in s]) for s in per_member],
        ),
    ):
        start = time.perf_counter()
        with torch.no_grad():
            run()
        timings[name] = time.perf_counter() - start
        count = len(set(map(tuple, ours))) if name.startswith("once") else 3 * len(per_member)
        print(f"  {name}: {count} sequences, {timings[name]:.2f} s")
    values = list(timings.values())
    print(f"speed-up of the reward's embeddings: {values[1] / values[0]:.1f}x (target >= 3x)")
    write_report(
        "grace_step",
        {
            "prompts": args.prompts,
            "group_size": args.group_size,
            "max_completion_length": args.max_completion_length,
            "a_step": {
                "step_s": round(step, 2),
                "reward_embeddings_s": round(embed, 2),
                "reward_embeddings_share": round(embed / step, 3),
                "whole_reward_share": round(whole / step, 3),
            },
            "b_embeddings": {
                "once_per_unique_sequence_s": round(values[0], 2),
                "published_per_member_s": round(values[1], 2),
                "ratio": round(values[1] / values[0], 2),
            },
        },
    )


def evidence_trainer(prompts: int, group_size: int, **trainer_kwargs):
    """(the evidence config, a GraceGRPOTrainer of its sampling settings on SmolLM2 with a bound reward, its rows)"""
    from pathlib import Path

    import yaml
    from datasets import Dataset
    from trl import GRPOConfig

    from retrieval_policies.grace.grpo import GraceGRPOTrainer

    evidence = yaml.safe_load(
        (
            Path(__file__).resolve().parents[1] / "recipes" / "grace" / "SmolLM2-135M-Instruct" / "config_evidence.yaml"
        ).read_text()
    )
    model, tokenizer, grace_config = load_grace_policy(DEFAULT_BASE_MODEL)
    grace_config.system_prompt = evidence["system_prompt"]
    rows, _ = build_rows(
        itertools.islice(wordnet_triplets(), 200), mode="supervised", tokenizer=tokenizer, validation_share=0
    )
    train = Dataset.from_list(to_grpo_rows(rows["train"][:64], "supervised", grace_config))
    batch = prompts * group_size
    reward = GraceContrastiveReward(
        "supervised",
        RewardWeights(truncation=evidence["truncation"], contrastive=evidence["contrastive"]),
        grace_config=grace_config,
        extra_temperature=evidence["extra_temperature"],
    )
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            report_to="none",
            max_steps=1,
            save_strategy="no",
            per_device_train_batch_size=batch,
            generation_batch_size=batch,
            num_generations=group_size,
            max_completion_length=evidence["max_completion_length"],
            temperature=evidence["temperature"],
            top_p=evidence["top_p"],
            beta=0.0,
            scale_rewards="none",
            loss_type="dapo",
            logging_steps=1,
            mask_truncated_completions=evidence["mask_truncated_completions"],
        )
        trainer = GraceGRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            grace_config=grace_config,
            **trainer_kwargs,
        )
    reward.bind(trainer)
    return evidence, trainer, train


def rollouts(prompts: int = 4, group_size: int = 4, repeats: int = 3) -> dict:
    """(c): the two rollout decodings of GraceGRPOTrainer on one generation batch, alternating."""
    import statistics

    evidence, trainer, train = evidence_trainer(prompts, group_size)
    reward = trainer.reward_funcs[0]
    batch = prompts * group_size
    batch_rows = [row for row in train.select(range(prompts)) for _ in range(group_size)]
    prompt_ids, images, fields = trainer._tokenize_prompts([row["prompt"] for row in batch_rows])
    decodings = ("generate", "shared_prefix")
    times = {(d, part): [] for d in decodings for part in ("rollouts", "reward")}
    lengths: dict[str, list[float]] = {d: [] for d in decodings}
    for repeat in range(repeats + 1):  # the first round warms up
        for decoding in decodings:
            trainer.rollout_decoding = decoding
            torch.manual_seed(repeat)
            trainer.state.global_step = repeat
            start = time.perf_counter()
            completions, _ = trainer._generate_single_turn(prompt_ids, images, fields, group_size)
            middle = time.perf_counter()
            if trainer.rollouts_decoded_by != decoding:
                raise RuntimeError(f"asked for {decoding}, decoded by {trainer.rollouts_decoded_by}")
            trainer.last_prompt_ids = prompt_ids
            reward(
                [r["prompt"] for r in batch_rows],
                [[{"role": "assistant", "content": ""}]] * batch,
                completions,
                row_index=[r["row_index"] for r in batch_rows],
                query=[r["query"] for r in batch_rows],
                negative=[r["negative"] for r in batch_rows],
            )
            if repeat:
                times[decoding, "rollouts"].append(middle - start)
                times[decoding, "reward"].append(time.perf_counter() - middle)
                lengths[decoding].append(statistics.fmean(len(c) for c in completions))
    print(
        f"{prompts} prompts x G={group_size}, <= {evidence['max_completion_length']} tokens, T={evidence['temperature']}, "
        f"top-p {evidence['top_p']} ({repeats} seeds each, alternating):"
    )
    mean = {key: statistics.fmean(values) for key, values in times.items()}
    for decoding in decodings:
        print(
            f"  {decoding}: rollouts {mean[decoding, 'rollouts']:.1f} s "
            f"({', '.join(f'{t:.1f}' for t in times[decoding, 'rollouts'])}), reward {mean[decoding, 'reward']:.1f} s, "
            f"mean completion {statistics.fmean(lengths[decoding]):.1f} tokens"
        )
    print(
        f"speed-up of the rollouts: {mean['generate', 'rollouts'] / mean['shared_prefix', 'rollouts']:.2f}x, "
        f"of the reward: {mean['generate', 'reward'] / mean['shared_prefix', 'reward']:.2f}x, of both: "
        f"{(mean['generate', 'rollouts'] + mean['generate', 'reward']) / (mean['shared_prefix', 'rollouts'] + mean['shared_prefix', 'reward']):.2f}x"
        " (target >= 1.3x)"
    )
    report = {"prompts": prompts, "group_size": group_size, "repeats": repeats}
    for decoding in decodings:
        report[decoding] = {
            "rollouts_s": round(mean[decoding, "rollouts"], 1),
            "reward_s": round(mean[decoding, "reward"], 1),
            "mean_completion_tokens": round(statistics.fmean(lengths[decoding]), 1),
        }
    report["ratio_rollouts_and_reward"] = round(
        (mean["generate", "rollouts"] + mean["generate", "reward"])
        / (mean["shared_prefix", "rollouts"] + mean["shared_prefix", "reward"]),
        2,
    )
    return report


def loss_micro_batches(prompts: int = 4, group_size: int = 4, micro_batches: int = 4, repeats: int = 3) -> list:
    """(d): the loss's forward and backward over one generation batch, whole vs length-sorted micro-batches."""
    import statistics

    from retrieval_policies.common.training import length_sorted_micro_batches

    evidence, trainer, train = evidence_trainer(prompts, group_size)
    model = trainer.model
    model.train()
    report = []
    for batch_index in range(2):  # two generation batches: other prompts, other rollout lengths
        rows = [
            row
            for row in train.select(range(batch_index * prompts, (batch_index + 1) * prompts))
            for _ in range(group_size)
        ]
        trainer.state.global_step = batch_index
        generation = trainer._generate_and_score_completions(rows)
        whole = [generation]
        parts = length_sorted_micro_batches(generation, micro_batches)

        def positions(batches):
            return sum(b["prompt_ids"].numel() + b["completion_ids"].numel() for b in batches)

        real = int(generation["prompt_mask"].sum() + generation["completion_mask"].sum())
        lengths = generation["completion_mask"].sum(dim=1).tolist()
        print(
            f"batch {batch_index}: {len(lengths)} rollouts of {min(lengths)}-{max(lengths)} tokens (mean "
            f"{statistics.fmean(lengths):.1f}); positions computed: whole {positions(whole)}, by length "
            f"{positions(parts)}, real {real}"
        )
        times: dict[str, list[float]] = {"whole": [], "by_length": []}
        gradients = {}
        for repeat in range(repeats + 1):  # the first round warms up
            for name, batches in (("whole", whole), ("by_length", parts)):
                trainer.current_gradient_accumulation_steps = len(batches)
                trainer.args.steps_per_generation = len(batches)
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                for inputs in batches:
                    trainer._compute_loss(model, inputs).backward()
                if repeat:
                    times[name].append(time.perf_counter() - start)
                gradients[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        difference = float((gradients["whole"] - gradients["by_length"]).abs().max())
        mean = {name: statistics.fmean(values) for name, values in times.items()}
        print(
            f"  forward + backward: whole {mean['whole']:.1f} s ({', '.join(f'{t:.1f}' for t in times['whole'])}), "
            f"by length {mean['by_length']:.1f} s ({', '.join(f'{t:.1f}' for t in times['by_length'])}): "
            f"{mean['whole'] / mean['by_length']:.2f}x (target >= 1.2x); gradients differ by at most {difference:.1e} "
            f"(largest {float(gradients['whole'].abs().max()):.1e})"
        )
        report.append(
            {
                "batch": batch_index,
                "rollout_tokens_min": min(lengths),
                "rollout_tokens_max": max(lengths),
                "whole_s": round(mean["whole"], 1),
                "by_length_s": round(mean["by_length"], 1),
                "ratio": round(mean["whole"] / mean["by_length"], 2),
                "max_gradient_difference": difference,
            }
        )
    return report


if __name__ == "__main__":
    main()
