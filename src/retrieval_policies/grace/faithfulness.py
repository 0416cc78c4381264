"""Does a GRACE embedding depend on what its rationale says? A retrieval task is scored three ways: each text with
its own rationale, with the rationale of another text of the task (a fixed random derangement), and with none; and
the embeddings with the own and the swapped rationale are compared directly. A model whose rationales matter loses
score when they are swapped; one that ignores them does not (neither the paper nor the release measures this).
"""

from __future__ import annotations

import math
import random

import numpy as np

from ..common.statistics import paired_bootstrap_ci, sign_test
from ..models.grace import GraceEmbedder

RETRIEVAL_TASKS = ("LocalWordNetDefinitionRetrieval", "LocalWikipediaSectionRetrieval")


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of range(n) that moves every index (n >= 2), from ``seed``."""
    if n < 2:
        raise ValueError(f"swapping rationales needs at least 2 texts, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    at = {index: place for place, index in enumerate(order)}
    return [order[(at[i] + 1) % n] for i in range(n)]  # each index goes to its successor in one random cycle


def ndcg_per_query(query_vectors: np.ndarray, corpus_vectors: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """nDCG@10 of each query with binary relevance (the local tasks' main score), ranking by cosine (the vectors
    are normalised)."""
    scores = query_vectors @ corpus_vectors.T
    out = []
    for row, wanted in zip(scores, relevant):
        top = np.argsort(-row, kind="stable")[:10]
        dcg = sum(1 / math.log2(rank + 2) for rank, doc in enumerate(top) if int(doc) in wanted)
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(wanted), 10)))
        out.append(dcg / ideal if ideal else 0.0)
    return np.array(out)


def ndcg_at_10(query_vectors: np.ndarray, corpus_vectors: np.ndarray, relevant: list[set[int]]) -> float:
    """Mean nDCG@10 over the queries."""
    return float(ndcg_per_query(query_vectors, corpus_vectors, relevant).mean())


def load_retrieval_task(name: str, max_queries: int | None = None) -> tuple[list[str], list[str], list[set[int]]]:
    """(query texts, corpus texts, relevant corpus positions per query) of a local retrieval task."""
    from ..evaluation.local_tasks import LOCAL_TASKS

    if name not in RETRIEVAL_TASKS:
        raise ValueError(f"faithfulness runs on the local retrieval tasks {list(RETRIEVAL_TASKS)}, not {name!r}")
    task = LOCAL_TASKS[name]()
    task.load_data()
    split = task.dataset["default"]["test"]
    queries = list(split["queries"])[:max_queries]
    corpus = list(split["corpus"])
    position = {row["id"]: i for i, row in enumerate(corpus)}
    relevant = [{position[d] for d, score in split["relevant_docs"][q["id"]].items() if score > 0} for q in queries]
    return [q["text"] for q in queries], [row["text"] for row in corpus], relevant


def rationale_faithfulness(
    embedder: GraceEmbedder,
    task: str,
    *,
    max_queries: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    show_progress_bar: bool = False,
    **encode_options,
) -> dict:
    """nDCG@10 with own, swapped and no rationales, and the mean cosine between each text's embeddings with its own
    and with a swapped rationale (1.0: the rationale's content does not matter). ``encode_options``: greedy by
    default (``temperature=0``), e.g. ``max_new_tokens``."""
    queries, corpus, relevant = load_retrieval_task(task, max_queries)
    texts = queries + corpus
    options = {"temperature": 0.0, "batch_size": batch_size, "show_progress_bar": show_progress_bar, **encode_options}
    _, rationales = embedder.encode(texts, return_rationales=True, **options)
    # own and swapped pooled the same way (prompt + rationale tokens), so only the rationale's content differs
    own = embedder.encode_with_rationales(texts, rationales, batch_size=batch_size)
    swap = derangement(len(texts), seed)
    swapped = embedder.encode_with_rationales(texts, [rationales[j] for j in swap], batch_size=batch_size)
    bare = embedder.encode(texts, rationale=False, batch_size=batch_size, show_progress_bar=show_progress_bar)
    q = len(queries)
    per_query = {
        name: ndcg_per_query(vectors[:q], vectors[q:], relevant)
        for name, vectors in (("own_rationale", own), ("swapped_rationale", swapped), ("no_rationale", bare))
    }
    scores = {name: float(values.mean()) for name, values in per_query.items()}
    loss = per_query["own_rationale"] - per_query["swapped_rationale"]
    return {
        "task": task,
        "queries": q,
        "documents": len(corpus),
        "ndcg_at_10": scores,
        "swap_loss": scores["own_rationale"] - scores["swapped_rationale"],
        "swap_loss_ci95": paired_bootstrap_ci(loss, seed=seed),  # over queries: how sure the loss is
        "sign_test": sign_test(loss),  # queries better with the own rationale than with a swapped one, and worse
        "cosine_own_vs_swapped": float(np.mean(np.sum(own * swapped, axis=1))),
        "cosine_own_vs_none": float(np.mean(np.sum(own * bare, axis=1))),
        "seed": seed,
        "decoding": {k: v for k, v in options.items() if k not in ("batch_size", "show_progress_bar")},
    }
