"""bf16 vs fp32 on this CPU, for the CPU default of ``dtype`` (SmolLM2-135M, HF backend, greedy, one run):

(a) raw HF generate, 64 chat prompts x 64 new tokens forced, tokens/s;
(b) GRACE ``encode`` at the evidence run's shape (64 Wikipedia passages, 64 new tokens, batch 64): seconds, the
    share of rationales identical to fp32's and the lowest cosine between the two precisions' vectors.

Whether bf16 pays depends on the CPU (AVX512-BF16 / AMX: ``lscpu | grep -o 'avx512_bf16\\|amx_bf16'``; without them
bf16 matmuls run ~50x slower). Writes benchmarks/results/cpu_bf16.json. Run alone: .venv/bin/python benchmarks/cpu_bf16.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_bf16.json"


def main() -> None:
    import numpy as np
    import torch
    from vllm_vs_hf import passages, timed

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.models.grace import GraceEmbedder
    from retrieval_policies.models.grace.modeling_grace import cpu_has_fast_bf16

    folder = str(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_has_fast_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    if not report["cpu_has_fast_bf16"]:
        report["note"] = "no AVX512-BF16/AMX here: bf16 not measured (it runs ~50x slower than fp32 on such CPUs)"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
    texts = passages(64, 60)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        embedder = GraceEmbedder.from_pretrained(folder, device_map="cpu", dtype=dtype)
        tokenizer = embedder.tokenizer
        tokenizer.padding_side = "left"
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": f"Tell me about {t[:60]}"}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            _, generate_s = timed(
                lambda: embedder.model.generate(
                    **batch, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            )
        (vectors, rationales), encode_s = timed(
            lambda: embedder.encode(
                texts, temperature=0, max_new_tokens=64, batch_size=64, return_rationales=True, show_progress_bar=False
            )
        )
        runs[dtype] = {
            "generate_tokens_per_s": round(64 * 64 / generate_s, 1),
            "encode_s": round(encode_s, 1),
            "vectors": vectors,
            "rationales": rationales,
        }
        print(dtype, {k: v for k, v in runs[dtype].items() if k not in ("vectors", "rationales")}, flush=True)
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    report.update(
        {
            "generate_64x64_tokens_per_s": {
                "float32": fp32["generate_tokens_per_s"],
                "bfloat16": bf16["generate_tokens_per_s"],
                "ratio": round(bf16["generate_tokens_per_s"] / fp32["generate_tokens_per_s"], 2),
            },
            "grace_encode_evidence_shape": {
                "texts": 64,
                "max_new_tokens": 64,
                "float32_s": fp32["encode_s"],
                "bfloat16_s": bf16["encode_s"],
                "ratio": round(fp32["encode_s"] / bf16["encode_s"], 2),
                "same_rationales_as_fp32": round(
                    sum(a == b for a, b in zip(fp32["rationales"], bf16["rationales"])) / 64, 3
                ),
                "min_cosine_to_fp32": round(float((fp32["vectors"] * bf16["vectors"]).sum(1).min()), 4),
                "mean_cosine_to_fp32": round(float(np.mean((fp32["vectors"] * bf16["vectors"]).sum(1))), 4),
            },
        }
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
