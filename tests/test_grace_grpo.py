"""GRACE on TRL's GRPOTrainer: the reward callable's mechanics (extra rollouts once per group, one forward per unique
sequence, the length penalty, metrics), fatal reward errors, and the recipe end to end on a tiny model: the output
and every checkpoint load as GRACE repos, and training resumes from a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.common.dataset_io import write_dataset_folder
from retrieval_policies.grace.grpo import GraceContrastiveReward, GraceGRPOTrainer, to_grpo_rows
from retrieval_policies.grace.training import load_grace_policy
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {
        "query": "a young dog",
        "positive": "Puppies are young dogs that bark and play.",
        "negative": "Cats purr when content.",
    },
    {"query": "capital of France", "positive": "Paris is the capital of France.", "negative": "Berlin is in Germany."},
    {"query": "boiling water", "positive": "Water boils at 100 degrees Celsius.", "negative": "Ice is frozen water."},
    {"query": "the red planet", "positive": "Mars is called the red planet.", "negative": "Venus is very hot."},
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama(tokenizer, layers=2, max_position_embeddings=512, bos_token_id=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _fake_trainer(model, tokenizer, step=0):
    return SimpleNamespace(
        model_wrapped=model,
        accelerator=Accelerator(cpu=True),
        state=SimpleNamespace(global_step=step),
        args=SimpleNamespace(max_completion_length=6, logging_steps=1),
        processing_class=tokenizer,
    )


def _prompt_ids(tokenizer, prompt, **template_kwargs) -> list[int]:
    """What TRL's GRPOTrainer tokenizes a conversational prompt to (apply_chat_template with the generation header)."""
    return tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True, **template_kwargs
    )["input_ids"]


def _call(reward, rows, completion_ids, metrics):
    members = [row for row in rows for _ in range(len(completion_ids) // len(rows))]
    tokenizer = reward.trainer.processing_class
    reward.trainer.last_prompt_ids = [
        _prompt_ids(tokenizer, r["prompt"], **reward.grace_config.chat_template_kwargs) for r in members
    ]
    return reward(
        [r["prompt"] for r in members],
        [[{"role": "assistant", "content": "…"}]] * len(members),
        completion_ids,
        row_index=[r["row_index"] for r in members],
        query=[r["query"] for r in members],
        negative=[r["negative"] for r in members],
        log_metric=lambda name, value: metrics.setdefault(name, value),
    )


def test_reward_generates_once_per_group_and_embeds_each_unique_sequence_once(tiny_folder):
    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    reward = GraceContrastiveReward("supervised", grace_config=grace_config).bind(_fake_trainer(model, tokenizer))
    generated, embedded = [], []
    original_generate, original_embed = GraceEmbedder.generate_rationales, GraceEmbedder.embed_sequences
    GraceEmbedder.generate_rationales = lambda self, prompts, *a, **k: (
        generated.append(len(prompts)) or original_generate(self, prompts, *a, **k)
    )
    GraceEmbedder.embed_sequences = lambda self, seqs, *a: embedded.append(len(seqs)) or original_embed(self, seqs, *a)
    try:
        metrics = {}
        completions = [[10, 11, 2], [10, 11, 2], [12, 2], [13, 14, 15, 16, 17, 18], [2], [19, 2]]  # 2 groups of 3
        rewards = _call(reward, to_grpo_rows(ROWS[:2], "supervised", grace_config), completions, metrics)
    finally:
        GraceEmbedder.generate_rationales, GraceEmbedder.embed_sequences = original_generate, original_embed
    assert generated == [4]  # query + negative of each group, in one call, none per member
    # the two identical rollouts of group 0 share one forward; the query / negative rollouts are pooled from the
    # hidden states their generation kept
    assert sum(embedded) == 5
    assert len(rewards) == 6 and rewards[3] == -1.0  # 6 tokens without EOS: the length limit was hit
    assert rewards[0] == rewards[1] and all(isinstance(r, float) for r in rewards)
    assert metrics["grace/length_penalised_share"] == pytest.approx(1 / 6)
    assert metrics["grace/rationale_tokens"] == pytest.approx(sum(map(len, completions)) / 6)
    assert {
        "grace/reward",
        "grace/positive_similarity",
        "grace/negative_similarity",
        "grace/consistency",
        "grace/cross",
    } <= set(metrics)


def test_reward_embeddings_are_the_embedders_own(tiny_folder):
    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    embedder = GraceEmbedder(model, tokenizer, grace_config)
    reward = GraceContrastiveReward("supervised", grace_config=grace_config, embedding_batch_size=2)
    sequences = [
        embedder.prompt_ids(text) + [20 + i, 2]
        for i, text in enumerate(["short", "a much longer text than that", "short"])
    ]
    batched = reward.embed_unique(embedder, sequences)
    for row, sequence in zip(batched, sequences):
        alone = embedder.embed_sequences([sequence], [embedder.prefix_length(sequence)])[0]
        torch.testing.assert_close(row, torch.nn.functional.normalize(alone, dim=-1), atol=1e-5, rtol=1e-5)


def test_extra_rollouts_are_seeded_by_text_and_step(tiny_folder):
    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    rows = to_grpo_rows(ROWS[:2], "supervised", grace_config)
    completions = [[10, 2], [11, 2], [12, 2], [13, 2]]
    first = _call(
        GraceContrastiveReward("supervised").bind(_fake_trainer(model, tokenizer, step=5)), rows, completions, {}
    )
    again = _call(
        GraceContrastiveReward("supervised").bind(_fake_trainer(model, tokenizer, step=5)), rows, completions, {}
    )
    assert first == again


def test_an_unbound_reward_refuses():
    with pytest.raises(RuntimeError, match="bind"):
        GraceContrastiveReward("unsupervised")(["p"], ["c"], [[1]], row_index=[0], text=["t"])


def test_a_failing_reward_stops_training(tiny_folder, tmp_path, monkeypatch):
    from datasets import Dataset
    from trl import GRPOConfig

    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    reward = GraceContrastiveReward("supervised", grace_config=grace_config)

    def broken(*args, **kwargs):
        raise RuntimeError("embedding exploded")

    monkeypatch.setattr(reward, "embed_unique", broken)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        beta=0.0,
        scale_rewards="none",
        logging_steps=1,
        save_strategy="no",
    )
    trainer = GraceGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(to_grpo_rows(ROWS, "supervised", grace_config)),
    )
    reward.bind(trainer)
    with pytest.raises(RuntimeError, match="embedding exploded"):
        trainer.train()


LOAD = "import sys; sys.modules['retrieval_policies'] = None\n" + textwrap.dedent("""
    import json, sys
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    vectors = model.encode(["a young dog", "Paris"], max_new_tokens=4)
    st = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu")
    print(json.dumps({"class": type(model).__name__, "shape": list(vectors.shape),
                      "norms": np.linalg.norm(vectors, axis=1).round(4).tolist(),
                      "st_matches": bool(np.allclose(st.encode(["a young dog", "Paris"]), model.encode(["a young dog", "Paris"]), atol=1e-4))}))
""")


def _loads_as_grace(folder: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder)], capture_output=True, text=True, timeout=300, cwd=folder.parent
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_grpo_recipe_saves_grace_repos_and_resumes(tiny_folder, tmp_path):
    rows = [{"id": str(i), **row, "source": "test"} for i, row in enumerate(ROWS)]
    data = write_dataset_folder(
        tmp_path / "data", {"triplets": {"train": rows}}, pretty_name="t", card_body="t", license="other"
    )
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(ROOT / "recipes" / "grace" / "grpo.py"),
        "--config",
        str(ROOT / "recipes" / "grace" / "SmolLM2-135M-Instruct" / "config_supervised.yaml"),
        "--model_name_or_path",
        str(tiny_folder),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--num_generations",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--generation_batch_size",
        "4",
        "--max_completion_length",
        "6",
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
    ]
    trackio_dir = tmp_path / "trackio"
    env = {**os.environ, "TRACKIO_DIR": str(trackio_dir)}
    first = subprocess.run(
        command + ["--max_steps", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )
    assert first.returncode == 0, first.stderr[-6000:]
    assert "grace/positive_similarity" in first.stdout + first.stderr  # the reward's terms are logged
    from retrieval_policies.common.tracking import PROJECT, logged_runs

    assert logged_runs(trackio_dir, PROJECT) == ["smollm2-135m-instruct-grace-supervised"]  # the config's trackio run
    metrics = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackio.cli",
            "list",
            "metrics",
            "--project",
            PROJECT,
            "--run",
            "smollm2-135m-instruct-grace-supervised",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "train/grace/positive_similarity" in json.loads(metrics.stdout)["metrics"]
    for folder in (out, out / "checkpoint-1"):
        loaded = _loads_as_grace(folder)
        assert loaded["class"] == "GraceEmbedder" and loaded["shape"] == [2, 32] and loaded["norms"] == [1.0, 1.0]
        assert loaded["st_matches"]
    assert json.loads((out / "grace_config.json").read_text())["max_new_tokens"] == 6

    resumed = subprocess.run(command + ["--max_steps", "3"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and len([h for h in state["log_history"] if "loss" in h]) == 3


@pytest.mark.slow
def test_grpo_recipe_with_lora_merges_the_adapter_into_a_grace_repo(tiny_folder, tmp_path):
    rows = [{"id": str(i), **row, "source": "test"} for i, row in enumerate(ROWS)]
    data = write_dataset_folder(
        tmp_path / "data", {"triplets": {"train": rows}}, pretty_name="t", card_body="t", license="other"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "grace" / "grpo.py"),
            "--config",
            str(ROOT / "recipes" / "grace" / "SmolLM2-135M-Instruct" / "config_supervised.yaml"),
            "--model_name_or_path",
            str(tiny_folder),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--num_generations",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--generation_batch_size",
            "4",
            "--max_completion_length",
            "6",
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--lora_alpha",
            "8",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert not (out / "adapter_config.json").exists()  # merged: the repo is a plain causal LM again
    assert _loads_as_grace(out)["class"] == "GraceEmbedder"


def test_reward_embeds_the_prompt_ids_trl_generated_from_and_truncates_extra_texts_like_encode(
    tiny_folder, monkeypatch
):
    import trl.models

    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    grace_config.max_text_tokens = 4
    trainer = _fake_trainer(model, tokenizer)
    trainer.chat_template_kwargs = {"date_string": "01 Dec 2026"}  # what TRL rendered the main prompts with
    trainer.args.ds3_gather_for_generation = False
    trainer.args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    unwrapped = []
    real_unwrap = trl.models.unwrap_model_for_generation
    monkeypatch.setattr(
        trl.models, "unwrap_model_for_generation", lambda *a, **k: unwrapped.append(k) or real_unwrap(*a, **k)
    )
    reward = GraceContrastiveReward("supervised", grace_config=grace_config).bind(trainer)
    rows = to_grpo_rows(ROWS[:2], "supervised", grace_config)
    members = [row for row in rows for _ in range(2)]
    trainer.last_prompt_ids = [[1, 5, 6, 7, i] for i in range(4)]  # not what re-rendering the texts would give
    reward(
        [r["prompt"] for r in members],
        [[{"role": "assistant", "content": "…"}]] * 4,
        [[10, 2], [11, 2], [12, 2], [13, 2]],
        row_index=[r["row_index"] for r in members],
        query=[r["query"] for r in members],
        negative=[r["negative"] for r in members],
    )
    assert reward.last_call["main"] == [[1, 5, 6, 7, i, 10 + i, 2] for i in range(4)]
    embedder = GraceEmbedder(
        model, tokenizer, GraceConfig(max_text_tokens=4, chat_template_kwargs=trainer.chat_template_kwargs)
    )
    query = ROWS[0]["query"]
    extra = reward.last_call["extra"][query]
    expected_prompt = embedder.prompt_ids(embedder.truncate_text(query))
    assert extra[: len(expected_prompt)] == expected_prompt
    negative_prompt = embedder.prompt_ids(embedder.truncate_text(ROWS[0]["negative"]))
    assert negative_prompt != embedder.prompt_ids(ROWS[0]["negative"])  # the cut mattered
    assert reward.last_call["extra"][ROWS[0]["negative"]][: len(negative_prompt)] == negative_prompt
    assert unwrapped == [{"gather_deepspeed3_params": False, "gradient_checkpointing_kwargs": {"use_reentrant": False}}]


def test_reward_refuses_a_trainer_that_does_not_keep_prompt_ids(tiny_folder):
    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    reward = GraceContrastiveReward("supervised", grace_config=grace_config).bind(_fake_trainer(model, tokenizer))
    with pytest.raises(RuntimeError, match="GraceGRPOTrainer"):
        reward([[{"role": "user", "content": "x"}]], ["c"], [[2]], row_index=[0], query=["q"], negative=["n"])


def test_lora_export_under_fsdp_or_deepspeed_writes_a_merged_grace_repo(tiny_folder, tmp_path):
    """Under DeepSpeed/FSDP ``save_model`` gathers the weights but, for a PEFT model, writes the adapter only."""
    from peft import LoraConfig, get_peft_model

    from retrieval_policies.grace.training import export_grace_repo

    model, tokenizer, grace_config = load_grace_policy(str(tiny_folder))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path / "out"

    class ShardedTrainer:
        is_deepspeed_enabled, is_fsdp_enabled = False, True
        accelerator = Accelerator(cpu=True)
        state = SimpleNamespace(save_to_json=lambda path: Path(path).write_text("{}"))

        def save_model(self, output_dir):
            peft_model.save_pretrained(output_dir)  # what Trainer.save_model does with a PEFT model

    folder = export_grace_repo(ShardedTrainer(), tokenizer, grace_config, str(out))
    assert not (folder / "adapter_config.json").exists() and (folder / "lora_adapter" / "adapter_config.json").is_file()
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_grace.GraceEmbedder"
    loaded = GraceEmbedder.from_pretrained(folder)
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(
        loaded.model.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight
    )


def _rollout_trainer(folder, tmp_path, **config):
    from datasets import Dataset
    from trl import GRPOConfig

    model, tokenizer, grace_config = load_grace_policy(str(folder))
    decoding = config.pop("rollout_decoding", "shared_prefix")
    micro_batches = config.pop("micro_batches", "shuffled")
    args = GRPOConfig(
        **{
            "output_dir": str(tmp_path / "out"),
            "use_cpu": True,
            "bf16": False,
            "report_to": "none",
            "max_steps": 1,
            "per_device_train_batch_size": 6,
            "num_generations": 3,
            "max_completion_length": 5,
            "temperature": 1.0,
            "top_p": 0.9,
            "beta": 0.0,
            "scale_rewards": "none",
            "save_strategy": "no",
            "seed": 11,
            **config,
        }
    )
    reward = GraceContrastiveReward("supervised", grace_config=grace_config)
    trainer = GraceGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(to_grpo_rows(ROWS, "supervised", grace_config)),
        grace_config=grace_config,
        rollout_decoding=decoding,
        micro_batches=micro_batches,
    )
    members = [row["prompt"] for row in to_grpo_rows(ROWS[:2], "supervised", grace_config) for _ in range(3)]
    prompt_ids, images, fields = trainer._tokenize_prompts(members)
    return trainer, (prompt_ids, images, fields, 3)


def test_rollouts_come_from_the_shared_prefix_loop_one_seeded_stream_per_row(tiny_folder, tmp_path, monkeypatch):
    """GRPO's group repeats each prompt G times: every rollout row draws from its own stream (seeded by the run's
    seed, the step, the call and the row), so the members differ, a row's rollout does not depend on its batch, and
    a rerun of the same step draws the same rollouts. Completions end with the EOS that ended them, as TRL's do."""
    trainer, call = _rollout_trainer(tiny_folder, tmp_path)
    seen = []
    real = GraceEmbedder.sample_rollouts
    monkeypatch.setattr(
        GraceEmbedder,
        "sample_rollouts",
        lambda self, prompts, seeds, **kw: seen.append((seeds, kw)) or real(self, prompts, seeds, **kw),
    )
    completions, logprobs = trainer._generate_single_turn(*call)
    assert trainer.rollouts_decoded_by == "shared_prefix" and logprobs is None
    ((seeds, settings),) = seen
    assert len(settings.pop("hidden_out")) == 6  # kept for the reward
    assert settings == {"max_new_tokens": 5, "temperature": 1.0, "top_p": 0.9, "eos_ids": set(trainer.eos_token_ids)}
    assert len(set(seeds)) == 6
    assert completions[0] != completions[1] or completions[1] != completions[2]  # a group's members differ
    for ids in completions:
        assert 1 <= len(ids) <= 5
        assert not set(ids[:-1]) & set(trainer.eos_token_ids)
        assert len(ids) == 5 or ids[-1] in trainer.eos_token_ids
    prompts = call[0]
    assert [sequence for sequence, _ in trainer.last_rollout_hidden] == [p + c for p, c in zip(prompts, completions)]
    assert [h.shape[0] for _, h in trainer.last_rollout_hidden] == [
        len(p) + len(c) for p, c in zip(prompts, completions)
    ]
    embedder = GraceEmbedder(trainer.model, trainer.processing_class, trainer.grace_config)
    for row in (0, 4):  # alone in its batch: the same rollout
        assert real(embedder, [prompts[row]], [seeds[row]], **settings) == [completions[row]]
    again, _ = trainer._generate_single_turn(*call)  # a second call within the step: other seeds
    assert seen[1][0] != seeds
    rerun, rerun_call = _rollout_trainer(tiny_folder, tmp_path)  # the same step of a new (or resumed) run
    assert rerun._generate_single_turn(*rerun_call)[0] == completions


def test_reward_pools_the_hidden_states_the_rollouts_kept(tiny_folder, tmp_path, monkeypatch):
    """With the shared-prefix rollouts the reward runs no embedding forward at all (main rollouts: the trainer's
    kept states; query / negative: their generation's), and its rewards are those of the forward it skips."""
    trainer, call = _rollout_trainer(tiny_folder, tmp_path)
    reward = trainer.reward_funcs[0].bind(trainer)
    rows = [row for row in to_grpo_rows(ROWS[:2], "supervised", trainer.grace_config) for _ in range(3)]

    def rewards():
        completions, _ = trainer._generate_single_turn(*call)
        trainer.last_prompt_ids = call[0]
        return reward(
            [r["prompt"] for r in rows],
            [[{"role": "assistant", "content": "…"}]] * 6,
            completions,
            row_index=[r["row_index"] for r in rows],
            query=[r["query"] for r in rows],
            negative=[r["negative"] for r in rows],
        )

    real_embed, real_generate = GraceEmbedder.embed_sequences, GraceEmbedder.generate_rationales
    monkeypatch.setattr(GraceEmbedder, "embed_sequences", lambda *a, **k: pytest.fail("an embedding forward ran"))
    pooled = rewards()
    assert trainer.last_rollout_hidden is not None
    monkeypatch.setattr(GraceEmbedder, "embed_sequences", real_embed)
    monkeypatch.setattr(
        GraceEmbedder, "generate_rationales", lambda self, *a, hidden_out=None, **k: real_generate(self, *a, **k)
    )
    trainer._rollout_calls = (None, 0)  # the same seeds again
    trainer.last_rollout_hidden = None
    original = type(trainer)._generate_single_turn

    def without_kept(self, *a, **k):
        out = original(self, *a, **k)
        self.last_rollout_hidden = None
        return out

    monkeypatch.setattr(type(trainer), "_generate_single_turn", without_kept)
    forwarded = rewards()
    assert pooled == pytest.approx(forwarded, abs=1e-4)


@pytest.mark.parametrize(
    "setting",
    [
        {"top_k": 5},
        {"repetition_penalty": 1.2},
        {"min_p": 0.1},
        {"generation_kwargs": {"no_repeat_ngram_size": 2}},
        {"rollout_decoding": "generate"},
    ],
)
def test_rollouts_the_loop_cannot_draw_exactly_go_to_trl_generate(tiny_folder, tmp_path, monkeypatch, setting):
    trainer, call = _rollout_trainer(tiny_folder, tmp_path, **setting)
    monkeypatch.setattr(GraceEmbedder, "sample_rollouts", lambda *a, **k: pytest.fail("the shared-prefix loop ran"))
    completions, _ = trainer._generate_single_turn(*call)
    assert trainer.rollouts_decoded_by == "generate" and len(completions) == 6


def test_rollouts_fall_back_to_generate_when_the_cache_cannot_drop_rows(tiny_folder, tmp_path, monkeypatch):
    import retrieval_policies.models.grace.modeling_grace as modeling

    trainer, call = _rollout_trainer(tiny_folder, tmp_path)
    monkeypatch.setattr(modeling, "_can_select_rows", lambda cache: False)
    completions, _ = trainer._generate_single_turn(*call)
    assert trainer.rollouts_decoded_by == "generate" and len(completions) == 6


def test_an_unknown_rollout_decoding_is_refused(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="rollout_decoding must be one of"):
        _rollout_trainer(tiny_folder, tmp_path, rollout_decoding="vllm-ish")


def _generation_batch():
    """Six rows as TRL hands them over: prompts left-padded to 5, completions right-padded to 6; row 3's completion
    is masked out whole (a truncated rollout under mask_truncated_completions)."""
    prompt_lengths, completion_lengths = [3, 5, 2, 4, 3, 1], [6, 1, 2, 0, 4, 3]
    prompt_mask = torch.tensor([[0] * (5 - n) + [1] * n for n in prompt_lengths])
    completion_mask = torch.tensor([[1] * n + [0] * (6 - n) for n in completion_lengths])
    return {
        "prompt_ids": torch.arange(30).reshape(6, 5),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.arange(100, 136).reshape(6, 6),
        "completion_mask": completion_mask,
        "old_per_token_logps": torch.randn(6, 6),
        "advantages": torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        "num_items_in_batch": torch.tensor(16),
    }


def test_length_sorted_micro_batches_group_rows_of_similar_length_and_cut_each_to_its_longest():
    from retrieval_policies.common.training import length_sorted_micro_batches

    batch = _generation_batch()
    parts = length_sorted_micro_batches(batch, 3)
    # by completion length (6, 1, 2, 0, 4, 3), then prompt length: rows 3, 1 | 2, 5 | 4, 0 (advantages x 10 - 1)
    rows = [[int(r) for r in (part["advantages"] * 10).round()] for part in parts]
    assert rows == [[4, 2], [3, 6], [5, 1]]
    for part, members in zip(parts, rows):
        index = [m - 1 for m in members]
        prompt = max(int(batch["prompt_mask"][i].sum()) for i in index)
        completion = max(1, max(int(batch["completion_mask"][i].sum()) for i in index))
        assert part["prompt_ids"].tolist() == batch["prompt_ids"][index, 5 - prompt :].tolist()
        assert part["prompt_mask"].tolist() == batch["prompt_mask"][index, 5 - prompt :].tolist()
        for key in ("completion_ids", "completion_mask", "old_per_token_logps"):
            assert part[key].tolist() == batch[key][index, :completion].tolist()
        assert part["num_items_in_batch"] is batch["num_items_in_batch"]
    assert [p["completion_ids"].shape[1] for p in parts] == [1, 3, 6]  # row 3 (masked out) pads nothing
    assert [p["prompt_ids"].shape[1] for p in parts] == [5, 2, 3]
    assert sum(int(p["completion_mask"].sum()) for p in parts) == int(batch["completion_mask"].sum())
    masked = {**batch, "completion_mask": torch.zeros(6, 6, dtype=torch.long)}
    assert all(p["completion_ids"].shape[1] == 1 for p in length_sorted_micro_batches(masked, 2))  # never 0 columns


def test_length_sorted_micro_batches_refuse_what_they_cannot_split_or_trim():
    from retrieval_policies.common.training import length_sorted_micro_batches

    with pytest.raises(ValueError, match="6 rows does not split into 4"):
        length_sorted_micro_batches(_generation_batch(), 4)
    with pytest.raises(ValueError, match=r"\['pixel_values'\]"):
        length_sorted_micro_batches({**_generation_batch(), "pixel_values": torch.zeros(6, 3, 2)}, 2)


# completions of very different lengths (the tiny random model would write every one to the limit): two end at an EOS,
# the others are cut at max_completion_length 5
_COMPLETIONS = [
    [11, 12, 13, 14, 15],
    [16, "eos"],
    [17, 18, 19, 20, 21],
    [22, 23, "eos"],
    [24, 25, 26, 27, 28],
    [29, 30, 31, 32, 33],
]


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_length_sorted_micro_batches_give_the_gradient_of_the_whole_batch(
    tiny_folder, tmp_path, monkeypatch, mask_truncated
):
    """One GRPO step (SGD at lr 1, so the update is the gradient) from the same weights, rollouts and rewards: the
    generation batch of 6 as one padded batch, and as 3 length-sorted micro-batches cut to their own longest row."""
    seen = []
    real = GraceGRPOTrainer._compute_loss
    monkeypatch.setattr(
        GraceGRPOTrainer,
        "_compute_loss",
        lambda self, model, inputs: (
            seen.append((inputs["prompt_ids"].shape[1], inputs["completion_ids"].shape[1])) or real(self, model, inputs)
        ),
    )

    def fixed_rollouts(self, prompt_ids, *args, **kwargs):
        eos = self.eos_token_ids[0]
        return [[eos if t == "eos" else t for t in c] for c in _COMPLETIONS[: len(prompt_ids)]], None

    monkeypatch.setattr(GraceGRPOTrainer, "_generate_single_turn", fixed_rollouts)
    updates = {}
    for name, config in {
        "whole": {},
        "by_length": {
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 3,
            "generation_batch_size": 6,
            "micro_batches": "by_length",
        },
    }.items():
        config = {
            "optim": "sgd",
            "learning_rate": 1.0,
            "lr_scheduler_type": "constant",
            "max_grad_norm": 0.0,
            "loss_type": "dapo",
            "mask_truncated_completions": mask_truncated,
            **config,
        }
        trainer, _ = _rollout_trainer(tiny_folder, tmp_path / name, **config)
        trainer.reward_funcs[0].bind(trainer)
        before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        trainer.train()
        updates[name] = {k: before[k] - v.detach() for k, v in trainer.model.named_parameters()}
    whole, by_length = seen[0], seen[1:]
    assert len(by_length) == 3 and all(p <= whole[0] and c <= whole[1] for p, c in by_length)
    assert sorted(c for _, c in by_length)[0] < whole[1]  # some micro-batch is narrower than the padded batch
    assert max(float(u.abs().max()) for u in updates["whole"].values()) > 1e-4  # a real gradient
    for key, update in updates["whole"].items():
        torch.testing.assert_close(updates["by_length"][key], update, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "setting",
    [
        {"per_device_train_batch_size": 2, "generation_batch_size": 6},  # 3 steps a batch
        {
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 3,
            "generation_batch_size": 6,
            "loss_type": "grpo",
        },  # a per-sequence mean
        {
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 3,
            "generation_batch_size": 6,
            "num_iterations": 2,
        },
    ],
)
def test_length_sorted_micro_batches_are_refused_where_they_would_change_the_gradient(tiny_folder, tmp_path, setting):
    with pytest.raises(
        ValueError, match='micro_batches="by_length" needs each generation batch to be one optimizer step'
    ):
        _rollout_trainer(tiny_folder, tmp_path, micro_batches="by_length", **{"loss_type": "dapo", **setting})
    with pytest.raises(ValueError, match="micro_batches must be one of"):
        _rollout_trainer(tiny_folder, tmp_path, micro_batches="sorted")
