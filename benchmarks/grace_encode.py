"""GRACE encode throughput against plain baselines on the same backbone and inputs, measured in one run.

(a) rationale mode vs a bare ``model.generate`` + one forward pass with hidden states (target: GRACE adds <= 10%);
(b) ``rationale=False`` vs sentence-transformers mean pooling (target: >= 0.9x its throughput);
(c) rationale generation tokens/s at batch sizes 8, 32 and 64 against this machine's own fp32 matrix-multiply
    throughput measured in the same run (the roofline: 2 x parameters FLOPs per generated token), and the batch size
    ``grace encode`` picks here;
(d) ``encode`` pooling the hidden states its generation kept against the previous two-pass encode (generate, then a
    pooling forward over prompt + rationale) on the same passages and batch (target: at least 1.5x); the vectors
    must agree (max difference printed);
(e) the shared-prefix decoding loop (the system turn computed once per batch, ended rows leaving the batch) against
    ``model.generate`` decoding every row to the longest, both keeping their hidden states, on 64 WordNet lemma texts
    (the evidence task's short corpus side) and 64 Wikipedia passages, batch 64, 64 greedy tokens (target >= 1.3x
    on the short texts); the rationales and vectors must agree (share of equal rationales, max difference printed).
Prints texts/s, tokens/s and the ratios. Run alone (no other torch job): .venv/bin/python benchmarks/grace_encode.py
"""

from __future__ import annotations

import argparse
import time

import torch
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])
from sentence_transformers import SentenceTransformer, models

from retrieval_policies import GraceEmbedder
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.corpora import iter_wikipedia_passages


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bare_generate_and_forward(grace: GraceEmbedder, texts: list[str], batch_size: int, max_new_tokens: int) -> int:
    """The floor: chat template, left-padded greedy generate, one forward with hidden states, masked mean."""
    model, tokenizer = grace.model, grace.tokenizer
    tokenizer.padding_side = "left"
    tokens = 0
    for start in range(0, len(texts), batch_size):
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "system", "content": grace.grace_config.system_prompt}, {"role": "user", "content": t}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for t in texts[start : start + batch_size]
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            mask = (out != tokenizer.pad_token_id).long()
            hidden = model(input_ids=out, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
            (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        tokens += int(mask.sum())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--skip-batches", action="store_true", help="skip (c), the batch-size sweep")
    parser.add_argument("--only-pooling", action="store_true", help="run (d) alone")
    parser.add_argument("--only-decoding", action="store_true", help="run (e) alone")
    args = parser.parse_args()
    torch.set_num_threads(2)
    texts = [p.text for _, p in zip(range(args.texts), iter_wikipedia_passages())]
    grace = GraceEmbedder.from_base(DEFAULT_BASE_MODEL, temperature=0.0, max_new_tokens=args.max_new_tokens)
    n = len(texts)
    if args.only_pooling:
        write_report("grace_encode_pooling", {"pooling": pooling_pass(grace)})
        return
    if args.only_decoding:
        write_report("grace_encode_decoding", {"decoding": decoding_loop(grace)})
        return

    # Warm-up, then (a).
    grace.encode(texts[:2], batch_size=2)
    _, t_grace = timed(lambda: grace.encode(texts, batch_size=args.batch_size, show_progress_bar=False))
    floor_tokens, t_floor = timed(lambda: bare_generate_and_forward(grace, texts, args.batch_size, args.max_new_tokens))
    print(
        f"(a) GRACE rationale mode: {n / t_grace:6.2f} texts/s | bare generate+forward: {n / t_floor:6.2f} texts/s, "
        f"{floor_tokens / t_floor:7.1f} tokens/s"
    )
    print(
        f"    overhead of GRACE over the floor: {t_grace / t_floor - 1:+.1%} (target <= +10%; GRACE pools the states its"
        " generation kept, the floor runs a second forward)"
    )

    # (b) the fast path against sentence-transformers mean pooling on the same backbone.
    folder = str(resolve_model(DEFAULT_BASE_MODEL))
    transformer = models.Transformer(folder)
    st = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")], device="cpu"
    )
    st.encode(texts[:2])
    _, t_fast = timed(lambda: grace.encode(texts, rationale=False, batch_size=args.batch_size, show_progress_bar=False))
    _, t_st = timed(lambda: st.encode(texts, batch_size=args.batch_size))
    print(
        f"(b) GRACE rationale=False: {n / t_fast:6.2f} texts/s | sentence-transformers mean pooling: {n / t_st:6.2f} texts/s"
    )
    print(f"    throughput ratio GRACE/ST: {t_st / t_fast:.2f}x (target >= 0.9x)")
    report = {
        "texts": n,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "a_rationale_vs_bare_generate_forward": {
            "grace_texts_per_s": round(n / t_grace, 2),
            "floor_texts_per_s": round(n / t_floor, 2),
            "overhead": round(t_grace / t_floor - 1, 3),
        },
        "b_no_rationale_vs_sentence_transformers": {
            "grace_texts_per_s": round(n / t_fast, 2),
            "st_texts_per_s": round(n / t_st, 2),
            "ratio": round(t_st / t_fast, 2),
        },
    }
    if not args.skip_batches:
        report["c_batch_sizes"] = batch_sizes(grace, args.max_new_tokens)
    report["d_pooling"] = pooling_pass(grace)
    report["e_decoding"] = decoding_loop(grace)
    write_report("grace_encode", report)


def decoding_loop(grace: GraceEmbedder, size: int = 64, max_new_tokens: int = 64) -> dict:
    """(e) the shared-prefix loop vs model.generate, both pooling the states they kept, same texts and batch."""
    from retrieval_policies.evaluation.local_tasks import _heldout_synsets

    workloads = {
        "WordNet lemmas": [", ".join(s.lemmas) for s in sorted(_heldout_synsets(), key=lambda s: s.id)[:size]],
        "Wikipedia passages": [p.text for _, p in zip(range(size), iter_wikipedia_passages())],
    }
    settings = dict(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=None)
    grace.encode(workloads["WordNet lemmas"][:2], batch_size=2, **settings)
    results = {}
    for name, texts in workloads.items():
        runs = {}
        for loop in (True, False):
            grace.shared_prefix_decoding = loop
            runs[loop] = timed(
                lambda: grace.encode(
                    texts, batch_size=size, show_progress_bar=False, return_rationales=True, **settings
                )
            )
        grace.shared_prefix_decoding = True
        ((fast, fast_rationales), t_fast), ((slow, slow_rationales), t_slow) = runs[True], runs[False]
        same = sum(a == b for a, b in zip(fast_rationales, slow_rationales)) / len(texts)
        print(
            f"(e) {size} {name}, batch {size}, {max_new_tokens} new tokens: shared-prefix loop {t_fast:.1f} s | "
            f"model.generate {t_slow:.1f} s: {t_slow / t_fast:.2f}x (target >= 1.3x on the lemmas); "
            f"equal rationales {same:.0%}, max vector difference {abs(fast - slow).max():.1e}"
        )
        results[name] = {
            "texts": size,
            "max_new_tokens": max_new_tokens,
            "shared_prefix_s": round(t_fast, 1),
            "generate_s": round(t_slow, 1),
            "ratio": round(t_slow / t_fast, 2),
            "equal_rationales": same,
            "max_vector_difference": float(abs(fast - slow).max()),
        }
    return results


def pooling_pass(grace: GraceEmbedder, size: int = 64, max_new_tokens: int = 64) -> dict:
    """(d) one generation that keeps its hidden states vs generation + a second forward, same texts and batch."""
    passages = [p.text for _, p in zip(range(size), iter_wikipedia_passages())]
    settings = dict(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=None)
    grace.encode(passages[:2], batch_size=2, **settings)

    def two_pass():
        prompts = [grace.prompt_ids(t) for t in passages]
        out = grace.generate_rationales(prompts, passages, **settings)
        sequences = [
            p + ids + ([eos] if eos is not None and grace.grace_config.pool_eos else [])
            for p, (ids, eos) in zip(prompts, out)
        ]
        vectors = grace.embed_sequences(sequences, [grace.prefix_length(p) for p in prompts])
        return torch.nn.functional.normalize(vectors, dim=-1).numpy()

    kept, t_kept = timed(lambda: grace.encode(passages, batch_size=size, show_progress_bar=False, **settings))
    apart, t_apart = timed(two_pass)
    print(
        f"(d) {size} passages, batch {size}, {max_new_tokens} new tokens: pooling the generation's hidden states "
        f"{t_kept:.1f} s | generate + pooling forward {t_apart:.1f} s: {t_apart / t_kept:.2f}x (target >= 1.5x); "
        f"max vector difference {abs(kept - apart).max():.1e}"
    )
    return {
        "passages": size,
        "max_new_tokens": max_new_tokens,
        "kept_states_s": round(t_kept, 1),
        "second_forward_s": round(t_apart, 1),
        "ratio": round(t_apart / t_kept, 2),
        "max_vector_difference": float(abs(kept - apart).max()),
    }


def matmul_flops(size: int = 1024, seconds: float = 2.0) -> float:
    """fp32 FLOP/s of this machine's torch matrix multiply (the roofline of a compute-bound step)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start)


def batch_sizes(grace: GraceEmbedder, max_new_tokens: int) -> dict:
    """(c) generation tokens/s per batch size against the matmul roofline; the batch size grace encode picks."""
    from retrieval_policies.grace.corpus import pick_batch_size

    flops = matmul_flops()
    parameters = sum(p.numel() for p in grace.model.parameters() if p.dim() > 1)
    roofline = flops / (2 * parameters)
    passages = [p.text[:400] for _, p in zip(range(64), iter_wikipedia_passages())]
    print(
        f"(c) fp32 matmul: {flops / 1e9:.1f} GFLOP/s -> roofline {roofline:.0f} generated tokens/s "
        f"({parameters / 1e6:.0f}M matrix parameters)"
    )
    results = {"matmul_gflops": round(flops / 1e9, 1), "roofline_tokens_per_s": round(roofline)}
    for size in (8, 32, 64):
        prompts = [grace.prompt_ids(t) for t in passages[:size]]
        grace.generate_rationales(prompts[:2], passages[:2], max_new_tokens=4, temperature=0, top_p=1.0, seed=0)
        out, seconds = timed(
            lambda: grace.generate_rationales(
                prompts, passages[:size], max_new_tokens=max_new_tokens, temperature=0, top_p=1.0, seed=0
            )
        )
        tokens = sum(len(ids) + (eos is not None) for ids, eos in out)
        print(
            f"    batch {size:3d}: {tokens / seconds:7.1f} generated tokens/s = {tokens / seconds / roofline:.2f} of the roofline"
        )
        results[f"batch_{size}_tokens_per_s"] = round(tokens / seconds, 1)
    results["picked_batch_size"] = pick_batch_size(grace)
    print(f"    grace encode picks batch size {results['picked_batch_size']} on {grace.device}")
    return results


if __name__ == "__main__":
    main()
