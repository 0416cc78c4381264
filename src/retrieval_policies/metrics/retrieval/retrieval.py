"""Ranked retrieval metrics from rankings and binary qrels: nDCG@k, recall@k, MRR@k."""

from __future__ import annotations

import math

import datasets
import evaluate

_DESCRIPTION = """nDCG@k, recall@k and MRR@k of ranked document lists against the relevant documents of each query
(binary relevance), averaged over queries."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the ranked document ids of each query (best first).
    references: the relevant document ids of each query.
    k_values: cut-offs (default [1, 5, 10, 20]).
Returns:
    {"ndcg@k", "recall@k", "mrr@k" for each k}. A query without relevant documents scores 0 on every metric.
Examples:
    >>> from retrieval_policies.metrics import metric_path
    >>> metric = evaluate.load(metric_path("retrieval"))  # or the Space's repo id
    >>> metric.compute(predictions=[["d2", "d1"]], references=[["d1"]], k_values=[1, 2])["mrr@2"]
    0.5
"""


def ranking_scores(ranking: list[str], relevant: set[str], k: int) -> tuple[float, float, float]:
    if not relevant:
        return 0.0, 0.0, 0.0
    top, seen = [], set()
    for doc in ranking:  # a repeated id counts once, at its first rank
        if doc not in seen:
            seen.add(doc)
            top.append(doc)
        if len(top) == k:
            break
    dcg = sum(1.0 / math.log2(rank + 2) for rank, doc in enumerate(top) if doc in relevant)
    idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    recall = sum(doc in relevant for doc in top) / len(relevant)
    mrr = next((1.0 / (rank + 1) for rank, doc in enumerate(top) if doc in relevant), 0.0)
    return dcg / idcg, recall, mrr


class Retrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, k_values=(1, 5, 10, 20)):
        if not predictions:
            raise ValueError("no predictions to score")
        if not k_values or any(int(k) < 1 for k in k_values):
            raise ValueError(f"k_values must be positive integers, got {k_values}")
        out = {}
        for k in k_values:
            scores = [ranking_scores(list(p), set(r), int(k)) for p, r in zip(predictions, references)]
            out[f"ndcg@{k}"] = sum(s[0] for s in scores) / len(scores)
            out[f"recall@{k}"] = sum(s[1] for s in scores) / len(scores)
            out[f"mrr@{k}"] = sum(s[2] for s in scores) / len(scores)
        return out
