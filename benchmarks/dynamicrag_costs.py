"""DynamicRAG costs on SmolLM2 (2 CPU threads), measured in one run on the same inputs:

(a) trajectory sampling, batched (all samples of a batch of questions in one call) vs one question at a time
    (target: >= 3x faster);
(b) reranking one query: DynamicRAG (one generation over N passages) vs pointwise LLM reranking (one scoring pass per
    passage): tokens processed and wall time.
Run alone: .venv/bin/python benchmarks/dynamicrag_costs.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])

from retrieval_policies import DynamicRAGModel
from retrieval_policies.assets import DEFAULT_BASE_MODEL
from retrieval_policies.corpora import iter_wikipedia_passages
from retrieval_policies.dynamicrag.sampling import sample_trajectories
from retrieval_policies.models.dynamicrag import reranker_messages
from retrieval_policies.retrieval import LLMJudge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--passages", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    passages = [
        {"title": p.title, "text": p.text} for p in islice(iter_wikipedia_passages(), args.questions * args.passages)
    ]
    rows = [
        {
            "id": f"q{i}",
            "question": f"What does the passage say about {passages[i * args.passages]['title']}?",
            "answers": ["x"],
            "ctxs": passages[i * args.passages : (i + 1) * args.passages],
        }
        for i in range(args.questions)
    ]
    model = DynamicRAGModel.from_base(
        DEFAULT_BASE_MODEL, max_passages=args.passages, rerank_max_new_tokens=24, answer_max_new_tokens=24
    )
    model.generate_texts([reranker_messages("warm up", passages[:2])], max_new_tokens=2)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sample_trajectories(
            model,
            rows,
            Path(tmp) / "batched.jsonl",
            num_samples=args.samples,
            batch_size=args.questions,
            show_progress_bar=False,
        )
        batched = time.perf_counter() - start
        start = time.perf_counter()
        for row in rows:  # the baseline: one question, one trajectory at a time
            for s in range(args.samples):
                sample_trajectories(
                    model,
                    [{**row, "id": f"{row['id']}-{s}"}],
                    Path(tmp) / "loop.jsonl",
                    num_samples=1,
                    batch_size=1,
                    show_progress_bar=False,
                )
        loop = time.perf_counter() - start
    print(
        f"(a) sampling {args.questions} questions x {args.samples} trajectories: batched {batched:.1f} s, "
        f"one at a time {loop:.1f} s -> {loop / batched:.1f}x faster (target >= 3x)"
    )

    query, pool = rows[0]["question"], rows[0]["ctxs"]
    tokenizer = model.tokenizer
    rerank_prompt = tokenizer.apply_chat_template(
        reranker_messages(query, pool), add_generation_prompt=True, tokenize=False
    )
    start = time.perf_counter()
    output = model.generate_texts([reranker_messages(query, pool)], max_new_tokens=24)[0]
    t_dynamic = time.perf_counter() - start
    tokens_dynamic = len(tokenizer(rerank_prompt, add_special_tokens=False)["input_ids"]) + len(
        tokenizer(output)["input_ids"]
    )
    judge = LLMJudge(model.model, tokenizer, batch_size=args.passages)
    pairs = [(query, p["text"]) for p in pool]
    start = time.perf_counter()
    judge.scores(pairs)
    t_pointwise = time.perf_counter() - start
    tokens_pointwise = sum(len(tokenizer(judge.prompt(q, p), add_special_tokens=False)["input_ids"]) for q, p in pairs)
    print(
        f"(b) rerank one query over {len(pool)} passages: DynamicRAG {tokens_dynamic} tokens, {t_dynamic:.2f} s | "
        f"pointwise {tokens_pointwise} tokens, {t_pointwise:.2f} s -> tokens ratio {tokens_pointwise / tokens_dynamic:.2f}x, "
        f"time ratio {t_pointwise / t_dynamic:.2f}x"
    )
    write_report(
        "dynamicrag_costs",
        {
            "sampling": {
                "questions": args.questions,
                "samples": args.samples,
                "batched_s": round(batched, 1),
                "one_at_a_time_s": round(loop, 1),
                "ratio": round(loop / batched, 2),
            },
            "rerank_one_query": {
                "passages": len(pool),
                "dynamicrag_tokens": tokens_dynamic,
                "dynamicrag_s": round(t_dynamic, 2),
                "pointwise_tokens": tokens_pointwise,
                "pointwise_s": round(t_pointwise, 2),
                "time_ratio": round(t_pointwise / t_dynamic, 2),
            },
        },
    )


if __name__ == "__main__":
    main()
