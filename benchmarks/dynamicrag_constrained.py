"""Constrained id-list decoding against free decoding, on the cloze test questions the DynamicRAG evidence uses
(BM25 first stage on 2 query words, 40-word passages, 10 per question), greedy, SmolLM2 on 2 CPU threads, in one
run: the malformed share (0 by construction when constrained), EM, selection recall, mean k and seconds per
question, for the untrained SmolLM2 and, with ``--trained FOLDER``, a trained DynamicRAG model.

Run alone: .venv/bin/python benchmarks/dynamicrag_constrained.py [--questions 64] [--trained outputs/demo/dynamicrag]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])

from retrieval_policies import DynamicRAGModel
from retrieval_policies.assets import DEFAULT_BASE_MODEL
from retrieval_policies.dynamicrag.evaluation import evaluate_dynamicrag, load_eval_rows

ROOT = Path(__file__).resolve().parents[1]
FIRST_STAGE = ["--first-stage", "bm25", "--query-words", "2", "--passage-words", "40", "--top-n", "10"]


def build_rows(folder: Path, questions: int) -> list[dict]:
    command = [sys.executable, str(ROOT / "dataset_builders" / "dynamicrag_eval.py"), "--source", "cloze"]
    command += [*FIRST_STAGE, "--output-dir", str(folder)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return load_eval_rows(str(folder), config="wiki_cloze", split="test", max_questions=questions)


def measure(model: DynamicRAGModel, rows: list[dict], constrained: bool) -> dict:
    model.dynamicrag_config.constrained_decoding = constrained
    start = time.perf_counter()
    report = evaluate_dynamicrag(model, rows, top_ks=(1,), batch_size=8, show_progress_bar=False)
    seconds = time.perf_counter() - start
    scores = report["scores"]["dynamicrag"]
    return {
        "malformed_share": round(scores["selection_malformed_rate"], 4),
        "exact_match": round(scores["exact_match"], 4),
        "selection_recall": round(scores["selection_recall"], 4),
        "mean_k": round(scores["selection_mean_k"], 3),
        "seconds_per_question": round(seconds / len(rows), 2),
        "top_1_exact_match": round(report["scores"]["top-1"]["exact_match"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--trained", help="a trained DynamicRAG folder to measure too")
    parser.add_argument("--trained-only", action="store_true", help="measure --trained alone (a file of its own)")
    args = parser.parse_args()
    if args.trained_only and not args.trained:
        parser.error("--trained-only needs --trained")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(Path(tmp) / "eval", args.questions)
    models = {}
    if not args.trained_only:
        models["untrained SmolLM2"] = lambda: DynamicRAGModel.from_base(DEFAULT_BASE_MODEL, max_passages=10)
    if args.trained:
        models["trained"] = lambda: DynamicRAGModel.from_pretrained(args.trained, device_map="cpu", dtype="float32")
    results = {}
    for name, load in models.items():
        model = load()
        model.dynamicrag_config.rerank_max_new_tokens, model.dynamicrag_config.answer_max_new_tokens = 48, 16
        free, constrained = measure(model, rows, False), measure(model, rows, True)
        constrained["cost_ratio"] = round(constrained["seconds_per_question"] / free["seconds_per_question"], 2)
        results[name] = {"max_passages": model.dynamicrag_config.max_passages, "free": free, "constrained": constrained}
        print(name, results[name], flush=True)
    write_report(
        "dynamicrag_constrained_trained" if args.trained_only else "dynamicrag_constrained",
        {
            "questions": len(rows),
            "passages": 10,
            "rerank_max_new_tokens": 48,
            "answer_max_new_tokens": 16,
            "trained": args.trained,
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
