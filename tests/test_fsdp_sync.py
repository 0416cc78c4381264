"""GRACE's own decoding loop and the reward's embeddings under FSDP2 (2 CPU processes, gloo): every forward of a
sharded model all-gathers parameters, so ranks with different amounts of work must still run the same number of
forwards (issue 36, defect 4). With ``synced_ranks`` (what GraceGRPOTrainer sets under FSDP or ZeRO-3 without
gathering) they do, and each rank gets exactly what the unsharded model gives; without it the ranks desynchronise."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from testing_utils import smollm2_folder, torchrun_two

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent("""
    import copy, datetime, json, sys
    import torch, torch.distributed as dist, transformers
    from torch.distributed.fsdp import fully_shard
    from retrieval_policies.grace.grpo import GraceContrastiveReward
    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=float(sys.argv[3])))
    rank = dist.get_rank()
    tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, eos_token_id=2, pad_token_id=2)).eval()
    reference = GraceEmbedder(copy.deepcopy(model), tokenizer, GraceConfig())
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    embedder = GraceEmbedder(model, tokenizer, GraceConfig())
    embedder.synced_ranks = sys.argv[2] == "synced"
    # rank 0: one short text, 2 new tokens; rank 1: three texts, 10 new tokens (more decoding steps, more chunks)
    texts = ["a dog"] if rank == 0 else ["the cat sat on the mat", "rivers run to the sea", "a long text about things"]
    steps = 2 if rank == 0 else 10
    prompts = [embedder.prompt_ids(t) for t in texts]
    settings = dict(max_new_tokens=steps, temperature=0.0, top_p=1.0, seed=0)
    kept = []
    out = embedder.generate_rationales(prompts, texts, **settings, hidden_out=kept)
    sampled = embedder.sample_rollouts(prompts, list(range(len(prompts))), max_new_tokens=steps, temperature=1.0, top_p=1.0)
    reward = GraceContrastiveReward("supervised", embedding_batch_size=1)
    vectors = reward.embed_unique(embedder, [p + ids for p, (ids, _) in zip(prompts, out)])
    dist.barrier()
    expected = reference.generate_rationales(prompts, texts, **settings)
    expected_sampled = reference.sample_rollouts(prompts, list(range(len(prompts))), max_new_tokens=steps, temperature=1.0, top_p=1.0)
    expected_vectors = reward.embed_unique(reference, [p + ids for p, (ids, _) in zip(prompts, expected)])
    print(json.dumps({"rank": rank, "same": out == expected, "same_sampled": sampled == expected_sampled,
                      "lengths": [len(ids) for ids, _ in out],
                      "vector_difference": float((vectors - expected_vectors).abs().max())}), flush=True)
    dist.destroy_process_group()
""")


def _launch(tmp_path: Path, mode: str, timeout_s: int) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return torchrun_two(script, str(smollm2_folder()), mode, str(timeout_s), timeout=timeout_s + 240)


def test_ranks_with_different_work_stay_in_step_under_fsdp2(tmp_path):
    result = _launch(tmp_path, "synced", 120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = sorted(
        (json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["same"] and r["same_sampled"] and r["vector_difference"] < 1e-5 for r in reports), reports
    assert reports[0]["lengths"] == [2] and max(reports[1]["lengths"]) > 2  # the ranks really did differ


def test_without_synced_ranks_the_ranks_desynchronise(tmp_path):
    """The defect the flag fixes: the same run unsynced fails (mismatched collectives) or hangs until gloo's timeout."""
    result = _launch(tmp_path, "unsynced", 8)  # gloo timeout: the ranks load the model before their first collective
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode != 0 or not all(r["same"] and r["same_sampled"] for r in reports), result.stdout
