"""GRACE on TRL's GRPOTrainer (method spec §3–§5): the reward is a callable bound to the trainer, because it needs the
live policy's hidden states and rollouts that TRL does not make.

Per reward call (one generation batch of this process):
1. extra rollouts from the current weights, once per group, never trained on: the query and the negative at
   T = 0.5 (supervised) or a second view of the sentence at T = 0.5 (unsupervised); each is seeded by its text and the
   step, so every process that holds members of a group draws the same one;
2. embeddings of prompt ⊕ rollout from the live policy (adapter enabled under LoRA; no grad; eval mode), one forward
   per **unique** sequence, with the GRACE pooling of ``GraceEmbedder.embed_sequences``;
3. rewards over the global batch (``rewards.global_rewards``), this process's slice returned.
Any exception propagates and stops training: a reward is never silently zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import torch
from trl import GRPOTrainer

from ..models.grace.configuration_grace import GraceConfig
from ..models.grace.modeling_grace import GraceEmbedder
from .rewards import RewardWeights, global_rewards

logger = logging.getLogger(__name__)


def grace_prompt(text: str, grace_config: GraceConfig | None = None) -> list[dict]:
    """The conversational prompt TRL renders with the chat template: the same two messages as the embedder's."""
    return [{"role": "system", "content": (grace_config or GraceConfig()).system_prompt}, {"role": "user", "content": text}]


def to_grpo_rows(rows: list[dict], mode: str, grace_config: GraceConfig | None = None) -> list[dict]:
    """Dataset rows (from the GRACE builders) as GRPO rows: the main prompt plus the columns the reward reads; each
    row is its own group (``row_index``), even when two rows share a main text."""
    main = "positive" if mode == "supervised" else "text"
    extra = ("query", "negative") if mode == "supervised" else ("text",)
    return [{"prompt": grace_prompt(row[main], grace_config), "row_index": i, **{k: row[k] for k in extra}}
            for i, row in enumerate(rows)]


class GraceGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer, keeping the prompt ids it generated from for the reward: TRL hands reward functions texts,
    and re-rendering them could differ from what was generated (TRL's ``chat_template_kwargs``, special tokens)."""

    last_prompt_ids: list[list[int]] | None = None

    def _generate(self, prompts: list):
        output = super()._generate(prompts)
        self.last_prompt_ids = [list(map(int, ids)) for ids in output[0]]
        return output


def grace_chat_template_kwargs(grace_config: GraceConfig, user: dict | None) -> dict:
    """GRPOConfig.chat_template_kwargs for a GRACE run: the embedder's pinned variables (the date), the user's on top."""
    return {**(grace_config.chat_template_kwargs or {}), **(user or {})}


class GraceContrastiveReward:
    """TRL reward function computing GRACE's supervised or unsupervised reward with the trainer's live policy."""

    def __init__(self, mode: str, weights: RewardWeights | None = None, *, grace_config: GraceConfig | None = None,
                 extra_temperature: float = 0.5, seed: int = 0, embedding_batch_size: int = 16, rationales_to_log: int = 2):
        if mode not in ("supervised", "unsupervised"):
            raise ValueError(f"mode must be 'supervised' or 'unsupervised', got {mode!r}")
        self.__name__ = f"grace_{mode}"  # TRL names reward columns after it
        self.mode, self.weights = mode, weights or RewardWeights()
        self.grace_config = grace_config or GraceConfig()
        self.extra_temperature, self.seed = extra_temperature, seed
        self.embedding_batch_size, self.rationales_to_log = embedding_batch_size, rationales_to_log
        self.trainer, self.last_call = None, None
        self.timings = {"extra_rollouts": 0.0, "embeddings": 0.0, "calls": 0}

    def bind(self, trainer) -> "GraceContrastiveReward":
        self.trainer = trainer
        return self

    # -------------------------------------------------------------------------------------------------- pieces
    def _embedder(self, policy, tokenizer) -> GraceEmbedder:
        backbone = policy.get_base_model() if hasattr(policy, "get_base_model") else policy  # PEFT: adapter stays enabled
        # the extra rollouts' prompts are rendered with the variables TRL rendered the main prompts with
        trl_kwargs = getattr(self.trainer, "chat_template_kwargs", None)
        config = self.grace_config if trl_kwargs is None else dataclasses.replace(self.grace_config, chat_template_kwargs=dict(trl_kwargs))
        return GraceEmbedder(backbone, tokenizer, config)

    def _sequences(self, embedder: GraceEmbedder, prompt_ids: list[list[int]], rollouts: list[list[int]]) -> list[list[int]]:
        """prompt ⊕ rollout, the EOS kept only when the embedder pools it (GraceConfig.pool_eos)."""
        eos = embedder.eos_ids()
        out = []
        for prompt, ids in zip(prompt_ids, rollouts):
            ids = list(ids)
            if ids and ids[-1] in eos and not self.grace_config.pool_eos:
                ids = ids[:-1]
            out.append(list(prompt) + ids)
        return out

    def _main_prompt_ids(self, count: int) -> list[list[int]]:
        prompt_ids = getattr(self.trainer, "last_prompt_ids", None)
        if prompt_ids is None or len(prompt_ids) != count:
            raise RuntimeError("the GRACE reward embeds the prompt ids TRL generated from: train with "
                               "retrieval_policies.grace.grpo.GraceGRPOTrainer (it keeps them as .last_prompt_ids); got "
                               f"{'none' if prompt_ids is None else len(prompt_ids)} for {count} completions")
        return prompt_ids

    @contextlib.contextmanager
    def _unwrapped_policy(self):
        """The policy as TRL unwraps it for generation (same ZeRO-3 gathering and gradient-checkpointing handling),
        with FSDP1's full parameters summoned as TRL does around ``generate``."""
        from trl.models import unwrap_model_for_generation

        trainer, args = self.trainer, self.trainer.args
        dist = getattr(trainer, "_dist", None)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
                                         gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None)) as policy, \
                (dist.summon_full_params(trainer.model_wrapped, recurse=False) if dist is not None else contextlib.nullcontext()):
            yield policy

    def embed_unique(self, embedder: GraceEmbedder, sequences: list[list[int]]) -> torch.Tensor:
        """One forward per distinct sequence; rows come back in the order of ``sequences``, unit-norm."""
        unique = list(dict.fromkeys(tuple(s) for s in sequences))
        order = sorted(range(len(unique)), key=lambda i: len(unique[i]))  # similar lengths share a batch
        vectors = [None] * len(unique)
        for start in range(0, len(order), self.embedding_batch_size):
            chunk = [unique[i] for i in order[start : start + self.embedding_batch_size]]
            pooled = embedder.embed_sequences([list(s) for s in chunk], [embedder.prefix_length(list(s)) for s in chunk])
            for i, v in zip(order[start : start + self.embedding_batch_size], torch.nn.functional.normalize(pooled, dim=-1)):
                vectors[i] = v
        index = {s: i for i, s in enumerate(unique)}
        return torch.stack([vectors[index[tuple(s)]] for s in sequences])

    # -------------------------------------------------------------------------------------------------- the call
    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        if self.trainer is None:
            raise RuntimeError("GraceContrastiveReward is not bound to a trainer: call reward.bind(trainer) first")
        trainer = self.trainer
        main_prompt_ids = self._main_prompt_ids(len(completion_ids))
        texts = [p[-1]["content"] for p in prompts]
        groups = [int(g) for g in kwargs["row_index"]]
        extra_by_group = {}
        for i, g in enumerate(groups):
            extra_by_group.setdefault(g, (kwargs["query"][i], kwargs["negative"][i]) if self.mode == "supervised" else (kwargs["text"][i],))
        extra_texts = list(dict.fromkeys(t for texts_of_group in extra_by_group.values() for t in texts_of_group))
        step_seed = self.seed + int(trainer.state.global_step)
        with self._unwrapped_policy() as policy:
            embedder = self._embedder(policy, trainer.processing_class)
            was_training = embedder.model.training
            embedder.model.eval()
            try:
                started = time.perf_counter()
                # the query / negative user texts are cut exactly as encode cuts a text (max_text_tokens)
                prompt_ids = [embedder.prompt_ids(embedder.truncate_text(t)) for t in extra_texts]
                generated = embedder.generate_rationales(prompt_ids, extra_texts, max_new_tokens=trainer.args.max_completion_length,
                                                         temperature=self.extra_temperature, top_p=1.0, seed=step_seed)
                extra_rollouts = [ids + ([eos] if eos is not None else []) for ids, eos in generated]
                middle = time.perf_counter()
                sequences = self._sequences(embedder, list(main_prompt_ids) + prompt_ids, list(completion_ids) + extra_rollouts)
                vectors = self.embed_unique(embedder, sequences)
                self.timings["extra_rollouts"] += middle - started
                self.timings["embeddings"] += time.perf_counter() - middle
                self.timings["calls"] += 1
            finally:
                embedder.model.train(was_training)
            eos_ids = embedder.eos_ids()
        n = len(texts)
        # kept for benchmarks/grace_step.py: what this call embedded, per member and per group
        self.last_call = {"main": sequences[:n], "extra": dict(zip(extra_texts, sequences[n:])), "groups": groups,
                          "extra_of_group": extra_by_group}
        extra_vector = {t: vectors[n + i] for i, t in enumerate(extra_texts)}
        device = trainer.accelerator.device
        local = {"d": vectors[:n].to(device),
                 "q": torch.stack([extra_vector[extra_by_group[g][0]] for g in groups]).to(device),
                 "groups": torch.tensor(groups, device=device),
                 "truncated": torch.tensor([not ids or ids[-1] not in eos_ids for ids in completion_ids], device=device)}
        if self.mode == "supervised":
            local["n"] = torch.stack([extra_vector[extra_by_group[g][1]] for g in groups]).to(device)
        several = trainer.accelerator.num_processes > 1
        rewards, terms = global_rewards(self.mode, local, self.weights, gather=trainer.accelerator.gather if several else None,
                                        process_index=trainer.accelerator.process_index)
        self._log(kwargs.get("log_metric"), rewards, terms, local["truncated"], completion_ids, texts, completions)
        return rewards.tolist()

    def _log(self, log_metric, rewards, terms, truncated, completion_ids, texts, completions) -> None:
        if log_metric is not None:
            log_metric("grace/reward", rewards.mean().item())
            for name, values in terms.items():
                log_metric(f"grace/{name}", values.mean().item())
            log_metric("grace/length_penalised_share", truncated.float().mean().item())
            log_metric("grace/rationale_tokens", sum(len(ids) for ids in completion_ids) / max(len(completion_ids), 1))
        step, every = self.trainer.state.global_step, max(int(self.trainer.args.logging_steps or 1), 1)
        if self.rationales_to_log and step % every == 0 and self.trainer.accelerator.is_main_process:
            for text, completion, reward in list(zip(texts, completions, rewards.tolist()))[: self.rationales_to_log]:
                rationale = completion[-1]["content"] if isinstance(completion, list) else completion
                logger.info("step %d reward %.3f | text: %s | rationale: %s", step, reward, text[:120], rationale[:300])
