"""The prepared GPU check of GRACE (one CUDA GPU, bf16, under 8 minutes; no download: tiny random Llama and Qwen2
models and a byte-level tokenizer are built here).

1. ``GraceEmbedder.from_pretrained`` with nothing given lands on the GPU in bf16 (never silently CPU fp32), and its
   vectors agree with the CPU fp32 ones: cosine >= 0.99 per text for the prompt-only embedding, and for rationale
   embeddings on the texts whose greedy rationale is the same in both precisions (the share is printed).
2. One GRPO step of the supervised recipe (GraceGRPOTrainer + the GRACE reward) in bf16 with the reward's
   embeddings on the GPU.
3. ``grace encode`` of 20,000 texts (HF backend, rationales of 16 tokens), texts/s printed.

Run on the device machine (trl and datasets travel as wheels; see docs/gpu.md):
    PYTHONPATH=src python3 benchmarks/gpu_check_grace.py
On a CPU (to test the script itself): ``--device cpu --texts 200``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

COSINE_TOLERANCE = 0.99
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    """A small byte-level BPE tokenizer with ChatML special tokens and template (trained here, in a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [
        f"The {a} {b} near the {c} river while the {d} was reading about {e}."
        for a in ("quick", "lazy", "red", "old", "young")
        for b in ("fox", "dog", "cat", "bird")
        for c in ("cold", "wide", "long")
        for d in ("child", "teacher", "doctor")
        for e in ("history", "science", "music", "rationales", "embeddings")
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def build_model(arch: str, tokenizer):
    torch.manual_seed(0)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))


def texts(n: int) -> list[str]:
    words = "river forest quantum embedding teacher history music protein market planet language theorem".split()
    return [
        f"Text {i}: the {words[i % 12]} and the {words[(i * 7) % 12]} of item {i % 97} are {words[(i * 5) % 12]}."
        for i in range(n)
    ]


def check_encode(folder: Path, device: str, report: dict) -> None:
    from retrieval_policies.models.grace import GraceEmbedder

    sample = texts(64)
    placed = (
        GraceEmbedder.from_pretrained(folder)
        if device == "cuda"
        else GraceEmbedder.from_pretrained(folder, device_map=device, dtype="bfloat16")
    )
    if device == "cuda":
        assert placed.device.type == "cuda" and placed.model.dtype == torch.bfloat16, (
            placed.device,
            placed.model.dtype,
        )
    reference = GraceEmbedder.from_pretrained(folder, device_map="cpu", dtype="float32")
    prompt_only = (placed.encode(sample, rationale=False) * reference.encode(sample, rationale=False)).sum(1)
    gpu, gpu_rationales = placed.encode(sample, temperature=0, return_rationales=True, batch_size=16)
    cpu, cpu_rationales = reference.encode(sample, temperature=0, return_rationales=True, batch_size=16)
    same = [i for i in range(len(sample)) if gpu_rationales[i] == cpu_rationales[i]]
    with_rationale = (gpu[same] * cpu[same]).sum(1) if same else np.array([1.0])
    report[folder.name] = {
        "device": str(placed.device),
        "dtype": str(placed.model.dtype),
        "prompt_only_min_cosine": round(float(prompt_only.min()), 5),
        "same_greedy_rationale_share": round(len(same) / len(sample), 3),
        "rationale_min_cosine_where_same": round(float(with_rationale.min()), 5),
    }
    assert prompt_only.min() >= COSINE_TOLERANCE and with_rationale.min() >= COSINE_TOLERANCE, report[folder.name]


def check_grpo_step(folder: Path, device: str, report: dict, out: Path) -> None:
    from datasets import Dataset
    from trl import GRPOConfig

    from retrieval_policies.grace.grpo import (
        GraceContrastiveReward,
        GraceGRPOTrainer,
        grace_chat_template_kwargs,
        to_grpo_rows,
    )
    from retrieval_policies.grace.training import load_grace_policy

    dtype = torch.bfloat16
    model, tokenizer, grace_config = load_grace_policy(str(folder), dtype=dtype)
    sample = texts(16)
    rows = [{"query": f"about {t[:20]}", "positive": t, "negative": sample[(i + 5) % 16]} for i, t in enumerate(sample)]
    config = GRPOConfig(
        output_dir=str(out / "grpo"),
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        report_to="none",
        max_steps=1,
        per_device_train_batch_size=16,
        generation_batch_size=16,
        num_generations=4,
        max_completion_length=16,
        beta=0.0,
        scale_rewards="none",
        loss_type="dapo",
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        chat_template_kwargs=grace_chat_template_kwargs(grace_config, None),
    )
    reward = GraceContrastiveReward("supervised", grace_config=grace_config)
    trainer = GraceGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(to_grpo_rows(rows, "supervised", grace_config)),
    )
    reward.bind(trainer)
    devices = []
    original = reward.embed_unique
    # whatever the reward passes on (embedder, sequences and, since the shared-prefix rollouts, the kept hidden states)
    reward.embed_unique = lambda embedder, *rest: devices.append(str(embedder.device)) or original(embedder, *rest)
    started = time.perf_counter()
    trainer.train()
    logged = trainer.state.log_history[0]
    report["grpo_step"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "reward_embeddings_on": sorted(set(devices)),
        "grace/reward": logged.get("grace/reward"),
        "policy_dtype": str(next(model.parameters()).dtype),
    }
    assert devices and all(d.startswith(device) for d in devices), devices


def check_corpus_encode(folder: Path, device: str, n: int, report: dict, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retrieval_policies.grace.corpus import encode_corpus
    from retrieval_policies.models.grace import GraceEmbedder
    from retrieval_policies.retrieval.encoded import load_encoded

    data = out / "corpus.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts(n)}), data)
    embedder = GraceEmbedder.from_pretrained(folder, **({} if device == "cuda" else {"device_map": device}))
    started = time.perf_counter()
    manifest = encode_corpus(
        embedder,
        str(data),
        out / "encoded",
        model_name=str(folder),
        batch_size=256,
        shard_size=5000,
        max_new_tokens=16,
        temperature=0,
        show_progress_bar=False,
    )
    seconds = time.perf_counter() - started
    _, vectors, _ = load_encoded(out / "encoded")
    report["grace_encode"] = {
        "texts": manifest["rows"],
        "seconds": round(seconds, 2),
        "texts_per_s": round(n / seconds, 1),
        "device": str(embedder.device),
        "dtype": str(embedder.model.dtype),
    }
    assert vectors.shape == (n, embedder.embedding_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--output", help="also write the report as JSON here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu to test the script itself")
    report = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none",
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

        tokenizer = build_tokenizer()
        folders = {}
        for arch in ("llama", "qwen2"):
            folders[arch] = tmp / f"tiny-{arch}"
            GraceEmbedder(
                build_model(arch, tokenizer), tokenizer, GraceConfig(max_new_tokens=24, temperature=0.0)
            ).save_pretrained(folders[arch])
            check_encode(folders[arch], args.device, report)
            print(json.dumps({arch: report[folders[arch].name]}), flush=True)
        check_grpo_step(folders["llama"], args.device, report, tmp)
        print(json.dumps({"grpo_step": report["grpo_step"]}), flush=True)
        check_corpus_encode(folders["qwen2"], args.device, args.texts, report, tmp)
        print(json.dumps({"grace_encode": report["grace_encode"]}), flush=True)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
