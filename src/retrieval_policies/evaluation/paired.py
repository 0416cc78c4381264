"""Paired comparisons of two evaluations of the same task from mteb's saved predictions (``--predictions-dir``):
per-query nDCG@10 for a retrieval task, the per-pair similarities for an STS task, and how sure a difference is
(bootstrap interval over queries or pairs, sign test over queries). The evidence's claims are made with these."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..common.statistics import bootstrap_ci, paired_bootstrap_ci, sign_test


def load_predictions(folder: str | Path, task: str) -> dict | list:
    """What mteb saved for ``task`` in ``folder`` (its only subset and split)."""
    path = Path(folder) / f"{task}_predictions.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved predictions (evaluate with --predictions-dir {folder})")
    saved = json.loads(path.read_text())
    subsets = [v for k, v in saved.items() if k != "mteb_model_meta"]
    if len(subsets) != 1 or len(subsets[0]) != 1:
        raise ValueError(f"{path}: expected one subset with one split, found {list(saved)}")
    return next(iter(subsets[0].values()))


def _task(name: str):
    from .local_tasks import LOCAL_TASKS

    if name not in LOCAL_TASKS:
        raise ValueError(f"paired comparisons cover the local tasks {sorted(LOCAL_TASKS)}, not {name!r}")
    task = LOCAL_TASKS[name]()
    task.load_data()
    return task


def ndcg_at_10(predictions: dict[str, dict[str, float]], relevant: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 of every query, by pytrec_eval as mteb computes it (a query nothing was retrieved for scores 0)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(relevant, {"ndcg_cut.10"})
    scores = evaluator.evaluate({q: {d: float(s) for d, s in docs.items()} for q, docs in predictions.items()})
    return {q: float(scores.get(q, {}).get("ndcg_cut_10", 0.0)) for q in relevant}


def item_scores(task_name: str, folders: Sequence[str | Path]) -> dict:
    """The items of a task under each evaluation in ``folders``: ``{"kind": "retrieval", "scores": [per-query
    nDCG@10 arrays]}`` or ``{"kind": "sts", "gold": [...], "similarities": [per-pair cosine arrays]}``."""
    task = _task(task_name)
    if task.metadata.type == "STS":
        split = task.dataset["test"]
        gold = np.array([task._normalize(s) for s in split["score"]])
        sims = [np.asarray(load_predictions(f, task_name)["cosine_scores"], dtype=np.float64) for f in folders]
        if any(len(s) != len(gold) for s in sims):
            raise ValueError(f"{task_name}: saved similarities do not match the task's {len(gold)} pairs")
        return {"kind": "sts", "gold": gold, "similarities": sims}
    relevant = {
        q: {d: int(r) for d, r in docs.items()} for q, docs in task.dataset["default"]["test"]["relevant_docs"].items()
    }
    queries = sorted(relevant)
    per_folder = [ndcg_at_10(load_predictions(f, task_name), relevant) for f in folders]
    return {"kind": "retrieval", "queries": queries, "scores": [np.array([s[q] for q in queries]) for s in per_folder]}


def _spearman(gold: np.ndarray, values: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(gold, values)[0])


def compare(task_name: str, baseline: str | Path, systems: Sequence[str | Path], *, resamples: int = 10_000) -> dict:
    """``systems`` (several seeds of one trained model, say) against ``baseline`` on the same items: the mean
    score of each, the difference of the systems' mean from the baseline, its 95% bootstrap interval over the
    task's items (queries or pairs), and for retrieval the sign test over queries of the seed-mean difference."""
    items = item_scores(task_name, [baseline, *systems])
    if items["kind"] == "retrieval":
        base, runs = items["scores"][0], items["scores"][1:]
        differences = np.mean(runs, axis=0) - base
        return {
            "items": len(base),
            "unit": "queries",
            "baseline": float(base.mean()),
            "systems": [float(r.mean()) for r in runs],
            "difference": float(differences.mean()),
            "ci95": paired_bootstrap_ci(differences, resamples=resamples),
            "sign_test": sign_test(differences),
        }
    gold, base, runs = items["gold"], items["similarities"][0], items["similarities"][1:]

    def gain(idx: np.ndarray) -> float:
        return float(np.mean([_spearman(gold[idx], r[idx]) for r in runs]) - _spearman(gold[idx], base[idx]))

    systems_scores = [_spearman(gold, r) for r in runs]
    return {
        "items": len(gold),
        "unit": "pairs",
        "baseline": _spearman(gold, base),
        "systems": systems_scores,
        "difference": float(np.mean(systems_scores) - _spearman(gold, base)),
        "ci95": bootstrap_ci(gain, len(gold), resamples=resamples),
        "sign_test": None,  # a correlation is not a mean over pairs: no per-pair sign to count
    }
