"""Quality of a dynamic reranker's selections: list length k, precision/recall/F1 against relevance labels, nDCG."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """Scores the ordered, variable-length passage lists of a DynamicRAG reranker against binary relevance
labels (method spec §5). Per query: precision, recall and F1 of the selected ids, nDCG of the list (gains 1 for
relevant ids; the ideal list ranks every relevant id first); averaged over queries. Also the mean and the
distribution of k and, when `malformed` flags are given, the share of malformed model outputs."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the selected passage ids of each query, in rank order (an empty list = "None").
    references: the relevant passage ids of each query (an empty list = nothing relevant).
    malformed: optional, one bool per query: whether the raw output needed repair (out-of-range or repeated ids,
        unparseable text).
Returns:
    {"mean_k", "k_distribution" ({k: count}), "precision", "recall", "f1", "ndcg", "malformed_rate" (or None)}.
    Conventions: an empty selection has precision 1; with nothing relevant, recall is 1; nDCG is 1 for an empty
    list when nothing is relevant and 0 for a non-empty one.
Examples:
    >>> from retrieval_policies.metrics import metric_path
    >>> metric = evaluate.load(metric_path("rerank_selection"))  # or the Space's repo id
    >>> metric.compute(predictions=[[3, 1]], references=[[1]])["precision"]
    0.5
"""


def selection_scores(selected: list[int], relevant: list[int]) -> tuple[float, float, float]:
    chosen, gold = set(selected), set(relevant)
    hits = len(chosen & gold)
    precision = hits / len(chosen) if chosen else 1.0
    recall = hits / len(gold) if gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def list_ndcg(selected: list[int], relevant: list[int]) -> float:
    gold = set(relevant)
    if not gold:
        return float(not selected)
    seen, dcg = set(), 0.0
    for rank, pid in enumerate(selected):
        if pid in gold and pid not in seen:
            dcg += 1.0 / math.log2(rank + 2)
        seen.add(pid)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(len(gold)))
    return dcg / ideal


class RerankSelection(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, malformed=None):
        if not predictions:
            raise ValueError("no predictions to score")
        if malformed is not None and len(malformed) != len(predictions):
            raise ValueError(f"malformed has {len(malformed)} flags for {len(predictions)} predictions")
        per_query = [selection_scores(list(p), list(r)) for p, r in zip(predictions, references)]
        n = len(predictions)
        return {
            "mean_k": sum(len(p) for p in predictions) / n,
            "k_distribution": dict(sorted(Counter(len(p) for p in predictions).items())),
            "precision": sum(s[0] for s in per_query) / n,
            "recall": sum(s[1] for s in per_query) / n,
            "f1": sum(s[2] for s in per_query) / n,
            "ndcg": sum(list_ndcg(list(p), list(r)) for p, r in zip(predictions, references)) / n,
            "malformed_rate": None if malformed is None else sum(bool(m) for m in malformed) / n,
        }
