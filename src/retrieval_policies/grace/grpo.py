"""GRACE on TRL's GRPOTrainer (method spec §3–§5): the reward is a callable bound to the trainer, because it needs the
live policy's hidden states and rollouts that TRL does not make.

Per reward call (one generation batch of this process):
1. extra rollouts from the current weights, once per group, never trained on: the query and the negative at
   T = 0.5 (supervised) or a second view of the sentence at T = 0.5 (unsupervised); each is seeded by its text and the
   step, so every process that holds members of a group draws the same one;
2. embeddings of prompt ⊕ rollout from the live policy (adapter enabled under LoRA; no grad; eval mode) with the
   GRACE pooling of ``GraceEmbedder.embed_sequences``: pooled from the hidden states the rollout's generation kept
   (the trainer's shared-prefix rollouts, the extra rollouts), else one forward per **unique** sequence;
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

from ..common.training import length_sorted_micro_batches
from ..models.grace.configuration_grace import GraceConfig
from ..models.grace.modeling_grace import GraceEmbedder, text_seed
from .rewards import RewardWeights, global_rewards

logger = logging.getLogger(__name__)


def grace_prompt(text: str, grace_config: GraceConfig | None = None) -> list[dict]:
    """The conversational prompt TRL renders with the chat template: the same two messages as the embedder's."""
    return [
        {"role": "system", "content": (grace_config or GraceConfig()).system_prompt},
        {"role": "user", "content": text},
    ]


def to_grpo_rows(rows: list[dict], mode: str, grace_config: GraceConfig | None = None) -> list[dict]:
    """Dataset rows (from the GRACE builders) as GRPO rows: the main prompt plus the columns the reward reads; each
    row is its own group (``row_index``), even when two rows share a main text."""
    main = "positive" if mode == "supervised" else "text"
    extra = ("query", "negative") if mode == "supervised" else ("text",)
    return [
        {"prompt": grace_prompt(row[main], grace_config), "row_index": i, **{k: row[k] for k in extra}}
        for i, row in enumerate(rows)
    ]


ROLLOUT_DECODING = ("shared_prefix", "generate")
# how a generation batch becomes the loss's micro-batches: TRL's random split, each padded to the whole batch's
# longest row; or rows sorted by length, each micro-batch cut to its own longest (training.length_sorted_micro_batches)
MICRO_BATCHES = ("shuffled", "by_length")
# the losses TRL normalises over the whole generation batch's tokens: their gradient is a sum over micro-batches
_BATCH_NORMALISED_LOSSES = ("dapo", "cispo", "vespo")


@contextlib.contextmanager
def unwrapped_policy(trainer):
    """The policy as TRL unwraps it for generation (same ZeRO-3 gathering and gradient-checkpointing handling), with
    FSDP1's full parameters summoned as TRL does around ``generate``."""
    from trl.models import unwrap_model_for_generation

    args, dist = trainer.args, getattr(trainer, "_dist", None)
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as policy,
        dist.summon_full_params(trainer.model_wrapped, recurse=False) if dist is not None else contextlib.nullcontext(),
    ):
        yield policy


def forwards_are_collective(trainer) -> bool:
    """Whether each forward of the policy all-gathers parameters across ranks (FSDP, or ZeRO-3 unless TRL gathers
    the weights for generation): then decoding and embedding must run the same number of forwards on every rank."""
    accelerator, args = trainer.accelerator, trainer.args
    if accelerator.num_processes == 1:
        return False
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    zero3 = plugin is not None and getattr(plugin, "zero_stage", None) == 3
    return zero3 and not getattr(args, "ds3_gather_for_generation", True)


@contextlib.contextmanager
def policy_embedder(trainer, grace_config: GraceConfig):
    """The live policy, unwrapped as for generation, as a GraceEmbedder in eval mode (no dropout; PEFT: the adapter
    stays enabled), its prompts rendered with the template variables TRL rendered the main prompts with."""
    with unwrapped_policy(trainer) as policy:
        backbone = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        trl_kwargs = getattr(trainer, "chat_template_kwargs", None)
        config = (
            grace_config
            if trl_kwargs is None
            else dataclasses.replace(grace_config, chat_template_kwargs=dict(trl_kwargs))
        )
        embedder = GraceEmbedder(backbone, trainer.processing_class, config)
        embedder.synced_ranks = forwards_are_collective(trainer)
        was_training = embedder.model.training
        embedder.model.eval()
        try:
            yield embedder
        finally:
            embedder.model.train(was_training)


class GraceGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with two hooks. It keeps the prompt ids it generated from for the reward (TRL hands reward
    functions texts, and re-rendering them could differ from what was generated: TRL's ``chat_template_kwargs``,
    special tokens). And on the transformers path (no vLLM) it samples the rollouts through the embedder's
    shared-prefix loop (``rollout_decoding="shared_prefix"``, the default): the system turn is computed once per
    batch and a finished rollout leaves the batch, where ``model.generate`` decodes every row of the G × prompts batch
    to the longest; the loop also keeps the last hidden layer over each rollout, which the reward pools instead of a
    second forward. Same distribution (temperature, top-p; the policy in eval mode), other random numbers: one
    stream per rollout, seeded by ``args.seed``, the step and the row. Any other sampling setting TRL would apply
    (top-k, min-p, repetition penalty, ``generation_kwargs``, a cache implementation), images, tools or a cache that
    cannot drop rows go to TRL's ``model.generate``, as does ``rollout_decoding="generate"``.

    ``micro_batches="by_length"`` feeds the loss micro-batches of rows of similar length, each cut to its own longest
    prompt and completion, instead of TRL's shuffled split padded to the batch's longest: the same gradient (the
    generation batch is one optimizer step and the loss is normalised over its tokens; checked at construction) for
    less forward and backward over padding, which GRACE's rollouts of very different lengths make large."""

    last_prompt_ids: list[list[int]] | None = None
    # per rollout of the latest batch decoded by the shared-prefix loop: (prompt + completion ids, the last hidden
    # layer the loop computed over them), which the reward pools instead of running its embedding forward again
    last_rollout_hidden: list[tuple[list[int], torch.Tensor]] | None = None

    def __init__(
        self,
        *args,
        grace_config: GraceConfig | None = None,
        rollout_decoding: str = "shared_prefix",
        micro_batches: str = "shuffled",
        **kwargs,
    ):
        if rollout_decoding not in ROLLOUT_DECODING:
            raise ValueError(f"rollout_decoding must be one of {list(ROLLOUT_DECODING)}, got {rollout_decoding!r}")
        if micro_batches not in MICRO_BATCHES:
            raise ValueError(f"micro_batches must be one of {list(MICRO_BATCHES)}, got {micro_batches!r}")
        super().__init__(*args, **kwargs)
        if micro_batches == "by_length":
            args = self.args
            if (
                args.steps_per_generation != args.gradient_accumulation_steps
                or self.num_iterations != 1
                or self.loss_type not in _BATCH_NORMALISED_LOSSES
            ):
                raise ValueError(
                    'micro_batches="by_length" needs each generation batch to be one optimizer step with a loss '
                    f"normalised over its tokens (steps_per_generation == gradient_accumulation_steps, num_iterations "
                    f"1, loss_type in {list(_BATCH_NORMALISED_LOSSES)}); got steps_per_generation "
                    f"{args.steps_per_generation}, gradient_accumulation_steps {args.gradient_accumulation_steps}, "
                    f'num_iterations {self.num_iterations}, loss_type {self.loss_type!r}: use micro_batches="shuffled"'
                )
        self.micro_batches = micro_batches
        self.grace_config = grace_config or GraceConfig()
        self.rollout_decoding = rollout_decoding
        self.rollouts_decoded_by: str | None = None  # which path decoded the latest rollouts
        self._rollout_calls = (None, 0)  # (global step, calls within it): the seeds' key

    def _prepare_inputs(self, generation_batch):
        if self.micro_batches == "shuffled" or not self.model.training:
            return super()._prepare_inputs(generation_batch)
        spg = self.args.steps_per_generation
        if self._step % spg == 0 or self._buffered_inputs is None:
            self._buffered_inputs = length_sorted_micro_batches(
                self._generate_and_score_completions(generation_batch), spg
            )
        return self._buffered_inputs[self._step % spg]

    def _generate(self, prompts: list):
        output = super()._generate(prompts)
        self.last_prompt_ids = [list(map(int, ids)) for ids in output[0]]
        return output

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        self.last_rollout_hidden = None
        if self._rollouts_share_prefix(images, multimodal_fields, has_tool_images):
            prompts, kept = [list(map(int, p)) for p in prompt_ids], []
            # eval mode: the kept hidden states are the reward's own (eval-mode) ones
            with policy_embedder(self, self.grace_config) as embedder, torch.no_grad():
                completion_ids = embedder.sample_rollouts(
                    prompts,
                    self._rollout_seeds(len(prompts)),
                    max_new_tokens=self.max_completion_length,
                    temperature=self.temperature,
                    top_p=1.0 if self.top_p is None else self.top_p,
                    eos_ids=set(self.eos_token_ids),
                    hidden_out=kept,
                )
            if completion_ids is not None:
                self.rollouts_decoded_by = "shared_prefix"
                if len(kept) == len(prompts):
                    self.last_rollout_hidden = [(p + c, h) for p, c, h in zip(prompts, completion_ids, kept)]
                return completion_ids, None
        self.rollouts_decoded_by = "generate"
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _rollouts_share_prefix(self, images, multimodal_fields, has_tool_images) -> bool:
        """Whether the shared-prefix loop can draw exactly what TRL's generate would: temperature and top-p only."""
        args = self.args
        return (
            self.rollout_decoding == "shared_prefix"
            and not self.use_vllm
            and not getattr(self, "use_transformers_continuous_batching", False)
            and not images
            and not multimodal_fields
            and not has_tool_images
            and not getattr(self, "tools", None)
            and getattr(self, "environment_factories", None) is None
            and not getattr(self, "_is_vlm", False)
            and (self.temperature or 0) > 0
            and self.top_k in (None, 0)
            and self.min_p is None
            and self.repetition_penalty in (None, 1.0)
            and not args.generation_kwargs
            and args.cache_implementation is None
        )

    def _rollout_seeds(self, count: int) -> list[int]:
        """One seed per rollout row: the run's seed, the step, the call within the step (gradient accumulation),
        the process and the row, so a resumed run draws what the uninterrupted one would have."""
        step = int(self.state.global_step)
        calls = self._rollout_calls[1] + 1 if self._rollout_calls[0] == step else 0
        self._rollout_calls = (step, calls)
        process = self.accelerator.process_index
        return [text_seed(int(self.args.seed), f"rollout {step} {calls} {process} {row}") for row in range(count)]


def grace_chat_template_kwargs(grace_config: GraceConfig, user: dict | None) -> dict:
    """GRPOConfig.chat_template_kwargs for a GRACE run: the embedder's pinned variables (the date), the user's on top."""
    return {**(grace_config.chat_template_kwargs or {}), **(user or {})}


class GraceContrastiveReward:
    """TRL reward function computing GRACE's supervised or unsupervised reward with the trainer's live policy."""

    def __init__(
        self,
        mode: str,
        weights: RewardWeights | None = None,
        *,
        grace_config: GraceConfig | None = None,
        extra_temperature: float = 0.5,
        seed: int = 0,
        embedding_batch_size: int = 16,
        rationales_to_log: int = 2,
    ):
        if mode not in ("supervised", "unsupervised"):
            raise ValueError(f"mode must be 'supervised' or 'unsupervised', got {mode!r}")
        self.__name__ = f"grace_{mode}"  # TRL names reward columns after it
        self.mode, self.weights = mode, weights or RewardWeights()
        self.grace_config = grace_config or GraceConfig()
        self.extra_temperature, self.seed = extra_temperature, seed
        self.embedding_batch_size, self.rationales_to_log = embedding_batch_size, rationales_to_log
        self.trainer, self.last_call = None, None
        self.timings = {"extra_rollouts": 0.0, "embeddings": 0.0, "calls": 0}

    def bind(self, trainer) -> GraceContrastiveReward:
        self.trainer = trainer
        return self

    # -------------------------------------------------------------------------------------------------- pieces
    def _sequences(
        self, embedder: GraceEmbedder, prompt_ids: list[list[int]], rollouts: list[list[int]]
    ) -> list[list[int]]:
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
            raise RuntimeError(
                "the GRACE reward embeds the prompt ids TRL generated from: train with "
                "retrieval_policies.grace.grpo.GraceGRPOTrainer (it keeps them as .last_prompt_ids); got "
                f"{'none' if prompt_ids is None else len(prompt_ids)} for {count} completions"
            )
        return prompt_ids

    def _main_hidden(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[torch.Tensor | None]:
        """The hidden states the trainer's rollout loop kept, per main rollout, where they are over exactly that
        prompt + completion (else None: that rollout is embedded by a forward)."""
        kept = getattr(self.trainer, "last_rollout_hidden", None) or []
        if len(kept) != len(completion_ids):
            return [None] * len(completion_ids)
        return [
            hidden if sequence == list(prompt) + list(ids) else None
            for (sequence, hidden), prompt, ids in zip(kept, prompt_ids, completion_ids)
        ]

    def embed_unique(
        self, embedder: GraceEmbedder, sequences: list[list[int]], kept: list[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """One forward per distinct sequence, none for a sequence whose generation kept its hidden states (``kept``,
        aligned with ``sequences``); rows come back in the order of ``sequences``, unit-norm."""
        unique = list(dict.fromkeys(tuple(s) for s in sequences))
        vectors = [None] * len(unique)
        index = {s: i for i, s in enumerate(unique)}
        for sequence, hidden in zip(sequences, kept or []):
            i = index[tuple(sequence)]
            if hidden is not None and vectors[i] is None:
                vectors[i] = torch.nn.functional.normalize(embedder.pool_hidden(hidden, list(sequence)), dim=-1)
        todo = [i for i in range(len(unique)) if vectors[i] is None]
        order = sorted(todo, key=lambda i: len(unique[i]))  # similar lengths share a batch
        starts = list(range(0, len(order), self.embedding_batch_size))
        forwards = len(starts)
        if embedder.synced():  # every rank runs as many forwards as the rank with the most chunks (idle ones after)
            count = torch.tensor([forwards], device=embedder.device)
            torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
            forwards = int(count.item())
        for n in range(forwards):
            if n >= len(starts):
                embedder.idle_forward()
                continue
            chunk = [unique[i] for i in order[starts[n] : starts[n] + self.embedding_batch_size]]
            pooled = embedder.embed_sequences(
                [list(s) for s in chunk], [embedder.prefix_length(list(s)) for s in chunk]
            )
            for i, v in zip(
                order[starts[n] : starts[n] + self.embedding_batch_size], torch.nn.functional.normalize(pooled, dim=-1)
            ):
                vectors[i] = v
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
            extra_by_group.setdefault(
                g, (kwargs["query"][i], kwargs["negative"][i]) if self.mode == "supervised" else (kwargs["text"][i],)
            )
        extra_texts = list(dict.fromkeys(t for texts_of_group in extra_by_group.values() for t in texts_of_group))
        step_seed = self.seed + int(trainer.state.global_step)
        with policy_embedder(trainer, self.grace_config) as embedder:
            started = time.perf_counter()
            # the query / negative user texts are cut exactly as encode cuts a text (max_text_tokens)
            prompt_ids = [embedder.prompt_ids(embedder.truncate_text(t)) for t in extra_texts]
            extra_hidden: list = []
            generated = embedder.generate_rationales(
                prompt_ids,
                extra_texts,
                max_new_tokens=trainer.args.max_completion_length,
                temperature=self.extra_temperature,
                top_p=1.0,
                seed=step_seed,
                hidden_out=extra_hidden,
            )
            extra_rollouts = [ids + ([eos] if eos is not None else []) for ids, eos in generated]
            middle = time.perf_counter()
            sequences = self._sequences(
                embedder, list(main_prompt_ids) + prompt_ids, list(completion_ids) + extra_rollouts
            )
            kept = self._main_hidden(main_prompt_ids, completion_ids) + (
                extra_hidden if len(extra_hidden) == len(prompt_ids) else [None] * len(prompt_ids)
            )
            vectors = self.embed_unique(embedder, sequences, kept)
            self.timings["extra_rollouts"] += middle - started
            self.timings["embeddings"] += time.perf_counter() - middle
            self.timings["calls"] += 1
            eos_ids = embedder.eos_ids()
        n = len(texts)
        # kept for benchmarks/grace_step.py: what this call embedded, per member and per group
        self.last_call = {
            "main": sequences[:n],
            "extra": dict(zip(extra_texts, sequences[n:])),
            "groups": groups,
            "extra_of_group": extra_by_group,
        }
        extra_vector = {t: vectors[n + i] for i, t in enumerate(extra_texts)}
        device = trainer.accelerator.device
        local = {
            "d": vectors[:n].to(device),
            "q": torch.stack([extra_vector[extra_by_group[g][0]] for g in groups]).to(device),
            "groups": torch.tensor(groups, device=device),
            "truncated": torch.tensor([not ids or ids[-1] not in eos_ids for ids in completion_ids], device=device),
        }
        if self.mode == "supervised":
            local["n"] = torch.stack([extra_vector[extra_by_group[g][1]] for g in groups]).to(device)
        several = trainer.accelerator.num_processes > 1
        rewards, terms = global_rewards(
            self.mode,
            local,
            self.weights,
            gather=trainer.accelerator.gather if several else None,
            process_index=trainer.accelerator.process_index,
        )
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
