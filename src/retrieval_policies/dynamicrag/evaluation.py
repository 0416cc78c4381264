"""``retrieval-policies dynamicrag evaluate``: rerank → answer over an evaluation set, scored with the rag_answer and
rerank_selection metrics, next to baselines computed in the same run with the same generator: the retriever's fixed
top-k (k = 1, 3, 5), the top-k with k set per question to the number DynamicRAG chose ("same-k"), and all passages."""

from __future__ import annotations

import json
from pathlib import Path

from ..metrics import load_metric
from .data import SOURCE_TASKS, clean_rows, task_of

# Per evaluation set (method spec §5): the rag_answer config that scores it; the short-answer sets (NQ, TriviaQA,
# HotpotQA, 2WikiMQA, the offline cloze) use the defaults (EM, F1, match, ROUGE-L). The generator's instruction is
# each row's own (data.SOURCE_TASKS).
SET_METRICS = {"fever": "fever", "asqa": "asqa"}


def references_for(row: dict, eval_set: str | None) -> list:
    """The golds a set is scored against: ASQA's are its qa-pairs' short answers (str-EM), not the long answer."""
    if eval_set != "asqa":
        return row["answers"]
    pairs = row.get("qa_pairs")
    if not pairs:
        raise ValueError(f"ASQA row {row.get('id')!r} has no qa_pairs: str-EM needs them")
    return [[str(a) for a in (p.get("short_answers") or [] if isinstance(p, dict) else p)] for p in pairs]


def load_eval_rows(
    data: str, *, config: str | None = None, split: str = "test", max_questions: int | None = None
) -> list[dict]:
    from ..common.dataset_io import load_split

    dataset = load_split(data, config, split)
    rows, dropped = clean_rows(list(dataset), source=config if config in SOURCE_TASKS else None)
    if not rows:
        raise ValueError(f"{data} ({config or 'default'}/{split}) has no usable rows (dropped: {dict(dropped)})")
    return rows[:max_questions] if max_questions else rows


def evaluate_dynamicrag(
    model,
    rows: list[dict],
    *,
    top_ks=(1, 3, 5),
    batch_size: int = 8,
    task: str | None = None,
    tournament: bool = False,
    show_progress_bar: bool = True,
    eval_set: str | None = None,
    seed: int | None = None,
    answer_metric: str = "rag_answer",
    selection_metric: str = "rerank_selection",
) -> dict:
    """Scores per system ("dynamicrag", "same-k", "top-1", ..., "all") and the per-question predictions.

    As published, the reranker sees each question's first N retrieved passages (``ctxs[:N]``, N = ``max_passages``)
    in one call; ``tournament=True`` reranks the whole pool in windows of N instead. ``task`` (the generator's
    instruction) reaches DynamicRAG's own answers and every baseline's; by default each row's own (from its set:
    a FEVER label, an ELI5 paragraph, a short phrase otherwise), and the set decides the answer metrics (FEVER label
    accuracy, ASQA str-EM, EM/F1/match/ROUGE-L otherwise). ``out_of_range_questions`` counts the questions whose
    reranker output held an id above the passages shown: the published evaluation dropped them from its average, the
    hardened parser keeps them (both numbers are then visible). ``seed`` makes a sampling reranker (the released
    checkpoints' T = 0.4) reproducible: each batch samples with ``seed + its first row``. ``answer_metric`` and
    ``selection_metric`` name the packaged metrics; a metric folder or Hub id with the same inputs overrides them."""
    from tqdm.auto import tqdm

    def row_task(row):  # a row from a named set carries its task; else the set's, if it is one
        if row.get("source") or eval_set not in SOURCE_TASKS:
            return row.get("task") or "short"
        return task_of(eval_set)

    tasks = [task or row_task(r) for r in rows]
    golds = [references_for(r, eval_set) for r in rows]  # before any generation: a bad row fails at once
    answer_metric = load_metric(answer_metric, SET_METRICS.get(eval_set))
    selection_metric = load_metric(selection_metric)
    n = model.dynamicrag_config.max_passages
    names = ["dynamicrag", "same-k", *[f"top-{k}" for k in top_ks], "all"]
    systems: dict[str, dict] = {name: {"answers": [], "selected": []} for name in names}
    malformed, out_of_range = [], 0
    bar = tqdm(total=len(rows), desc="dynamicrag evaluate", unit="question", disable=not show_progress_bar)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        queries, batch_tasks = [r["question"] for r in batch], tasks[start : start + batch_size]
        pools = [r["ctxs"] if tournament else r["ctxs"][:n] for r in batch]
        for out in model.call_batch(
            queries, pools, task=batch_tasks, **({} if seed is None else {"seed": seed + start})
        ):
            systems["dynamicrag"]["answers"].append(out["answer"])
            systems["dynamicrag"]["selected"].append(out["indices"])
            malformed.append(out["malformed"] > 0)
            out_of_range += out.get("out_of_range", 0) > 0
        chosen = [len(s) for s in systems["dynamicrag"]["selected"][start:]]
        # "same-k": the retriever's top-k with each question's k set to the number DynamicRAG chose for it
        fixed = {"same-k": [list(range(min(k, len(p)))) for k, p in zip(chosen, pools)]}
        fixed.update({f"top-{k}": [list(range(min(k, len(p)))) for p in pools] for k in top_ks})
        fixed["all"] = [list(range(min(n, len(p)))) for p in pools]  # all the passages the model can see at once
        # Answers are greedy, so a prompt that several baselines share (top-5 and "all" over 5 passages, same-k and the
        # top-k of the same k) is answered once; each system's new prompts still go in one call of similar lengths.
        answers: dict[tuple, str] = {}
        for name, selections in fixed.items():
            keys = [(q, tuple(s)) for q, s in enumerate(selections)]
            todo = [key for key in dict.fromkeys(keys) if key not in answers]
            answers.update(
                zip(
                    todo,
                    model.answer_batch(
                        [queries[q] for q, _ in todo],
                        [[pools[q][i] for i in s] for q, s in todo],
                        task=[batch_tasks[q] for q, _ in todo],
                        ids=[[i + 1 for i in s] for _, s in todo],
                    ),
                )
            )
            systems[name]["answers"] += [answers[key] for key in keys]
            systems[name]["selected"] += selections
        bar.update(len(batch))
    bar.close()
    relevant = [[i + 1 for i, c in enumerate(r["ctxs"]) if c["relevant"]] for r in rows]
    scores = {}
    for name, system in systems.items():
        answer_scores = answer_metric.compute(predictions=system["answers"], references=golds)
        selection = selection_metric.compute(
            predictions=[[i + 1 for i in s] for s in system["selected"]],
            references=relevant,
            malformed=malformed if name == "dynamicrag" else None,
        )
        scores[name] = {**answer_scores, **{f"selection_{k}": v for k, v in selection.items()}}
    predictions = [
        {
            "id": r["id"],
            "question": r["question"],
            "answers": r["answers"],
            **{name: {"answer": s["answers"][i], "selected": s["selected"][i]} for name, s in systems.items()},
        }
        for i, r in enumerate(rows)
    ]
    return {"scores": scores, "predictions": predictions, "out_of_range_questions": out_of_range}


ANSWER_COLUMNS = {
    "exact_match": "EM",
    "f1": "F1",
    "match": "match",
    "rougeL": "ROUGE-L",
    "label_accuracy": "accuracy",
    "str_em": "str-EM",
}


def format_scores(scores: dict) -> str:
    """One row per system: every answer metric of the set, then the selection metrics."""
    first = next(iter(scores.values()))
    columns = [(title, key) for key, title in ANSWER_COLUMNS.items() if key in first]
    columns += [
        ("mean k", "selection_mean_k"),
        ("precision", "selection_precision"),
        ("recall", "selection_recall"),
        ("nDCG", "selection_ndcg"),
    ]
    lines = [f"{'system':<12}" + "".join(f"{title:>11}" for title, _ in columns)]
    for name, values in scores.items():
        lines.append(f"{name:<12}" + "".join(f"{values[key]:>11.4f}" for _, key in columns))
    malformed = scores.get("dynamicrag", {}).get("selection_malformed_rate")
    if malformed is not None:
        lines.append(f"malformed reranker outputs: {malformed:.1%}")
    return "\n".join(lines)


def write_report(path: str | Path, report: dict, settings: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"settings": settings, **report}, indent=1) + "\n")
