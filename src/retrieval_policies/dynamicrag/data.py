"""DynamicRAG question pools: one schema for every source, row checks, retrieval of the cloze pool, relevance labels.

Schema of a pool row: ``{id, question, answers: [str], ctxs: [{id, title, text, score, has_answer, relevant}], task}``
(+ ``source``, the set a row comes from, and ``split`` for the cloze pool). Field-name variants of the published
files are mapped onto it: passages in ``ctxs`` or ``docs``, answers in ``answers`` or ``answer``, as a string or a
list, the set in ``source`` or ``dataset``. ``task`` is the generator's instruction for the row, chosen from its set
(``SOURCE_TASKS``) unless the row names one.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ..retrieval import BM25Retriever, DenseRetriever, attach_ctxs, has_answer

logger = logging.getLogger(__name__)

# The generator's instruction per source set (method spec §5, §6): a short phrase for the short-answer sets (and
# ASQA, whose str-EM looks for the qa-pairs' short answers), a FEVER label, an ELI5 paragraph, an ARC option.
SOURCE_TASKS = {
    "nq": "short",
    "triviaqa": "short",
    "hotpotqa": "short",
    "2wikimqa": "short",
    "popqa": "short",
    "asqa": "short",
    "wiki_cloze": "short",
    "fever": "fever",
    "eli5": "long",
    "arc": "arc",
}
TASKS = ("short", "fever", "long", "arc")
# Sets whose golds are not short strings found in a relevant passage: "contains a gold answer" is no relevance label
# for them (FEVER golds are labels, ELI5's paragraphs and ASQA's long answers never occur verbatim).
NOT_HAS_ANSWER_SOURCES = ("fever", "eli5", "asqa")


def task_of(source: str | None) -> str:
    return SOURCE_TASKS.get((source or "").lower(), "short")


class BadRowError(ValueError):
    """A source row that cannot be used; ``reason`` is the counter key."""

    def __init__(self, index: int, reason: str, detail: str = ""):
        super().__init__(f"row {index}: {reason}{': ' + detail if detail else ''}")
        self.index, self.reason = index, reason


def normalize_row(row: dict, index: int, source: str | None = None) -> dict:
    """One row in the pool schema; ``source`` is the set it comes from when the row does not say."""
    if not isinstance(row, dict):
        raise BadRowError(index, "not a record", type(row).__name__)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRowError(index, "no question")
    answers = row.get("answers", row.get("answer"))
    answers = [answers] if isinstance(answers, str) else list(answers) if isinstance(answers, (list, tuple)) else []
    answers = [str(a).strip() for a in answers if isinstance(a, (str, int, float)) and str(a).strip()]
    if not answers:
        raise BadRowError(index, "no answer")
    passages = row.get("ctxs", row.get("docs"))
    if not isinstance(passages, (list, tuple)) or not passages:
        raise BadRowError(index, "no passages")
    ctxs = []
    for j, ctx in enumerate(passages):
        if isinstance(ctx, str):
            ctx = {"text": ctx}
        text = ctx.get("text", ctx.get("contents")) if isinstance(ctx, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BadRowError(index, "bad passage", f"passage {j} has no text")
        contained = ctx.get("has_answer")
        contained = has_answer(text, answers) if contained is None else bool(contained)
        ctxs.append(
            {
                "id": str(ctx.get("id", j)),
                "title": str(ctx.get("title") or ""),
                "text": text.strip(),
                "score": float(ctx["score"]) if ctx.get("score") is not None else None,
                "has_answer": contained,
                "relevant": bool(ctx.get("relevant", contained)),
            }
        )
    source = row.get("source") or row.get("dataset") or source
    source = str(source).strip().lower() if source else None
    task = row.get("task") or task_of(source)
    if task not in TASKS:
        raise BadRowError(index, "bad task", f"task {task!r} is not one of {list(TASKS)}")
    out = {
        "id": str(row.get("id", index)),
        "question": question.strip(),
        "answers": answers,
        "ctxs": ctxs,
        "task": task,
    }
    if source:
        out["source"] = source
    for extra in ("split", "qa_pairs"):  # the cloze split; ASQA's qa-pairs (for str-EM)
        if extra in row:
            out[extra] = row[extra]
    return out


def clean_rows(rows, *, strict: bool = False, source: str | None = None) -> tuple[list[dict], Counter]:
    """Normalised rows and a counter of dropped rows by reason; with ``strict`` the first bad row raises. ``source``:
    the set the rows come from when they do not say (an evaluation config's name)."""
    kept, dropped = [], Counter()
    for index, row in enumerate(rows):
        try:
            kept.append(normalize_row(row, index, source))
        except BadRowError as err:
            if strict:
                raise
            dropped[err.reason] += 1
    return kept, dropped


def cloze_pool(
    *,
    encoder=None,
    encoder_id: str = "bm25",
    top_n: int = 20,
    per_section: int = 2,
    max_articles: int | None = None,
    cache_dir: str | Path | None = None,
    first_stage: str = "dense",
    query_words: int | None = None,
    passage_words: int | None = None,
) -> list[dict]:
    """The Wikipedia cloze questions with their top-``top_n`` passages from a first-stage retriever over the
    passages of the same articles (all 106 by default): ``first_stage`` "dense" (``encoder``) or "bm25".
    ``query_words``: the retriever sees only the title and that many words of the sentence (``partial_query``);
    ``passage_words``: passages are first cut into pieces of at most that many words (``passage_chunks``)."""
    from ..corpora import iter_wikipedia_passages
    from .cloze_qa import iter_cloze_questions, partial_query, passage_chunks

    if first_stage not in ("dense", "bm25"):
        raise ValueError(f"first_stage must be 'dense' or 'bm25', got {first_stage!r}")
    questions = [asdict(q) for q in iter_cloze_questions(per_section=per_section, max_articles=max_articles)]
    articles = {q["article_id"] for q in questions}
    corpus = [
        {"id": p.id, "title": p.title, "text": p.text}
        for p in iter_wikipedia_passages()
        if max_articles is None or p.article_id in articles
    ]
    if passage_words:
        corpus = [piece for passage in corpus for piece in passage_chunks(passage, passage_words)]
    if first_stage == "bm25":
        retriever = BM25Retriever(corpus)
    else:
        if encoder is None:
            raise ValueError("a dense first stage needs an encoder")
        retriever = DenseRetriever(encoder, corpus, encoder_id=encoder_id, cache_dir=cache_dir)
    queries = None if query_words is None else [partial_query(q["id"], q["question"], query_words) for q in questions]
    rows = attach_ctxs(
        [{**q, "answers": list(q["answers"])} for q in questions], retriever, top_n=top_n, queries=queries
    )
    keep = ("id", "question", "answers", "ctxs", "split", "answer_type", "title", "section")
    return [{k: row[k] for k in keep} for row in rows]


def first_stage_rates(rows: list[dict]) -> dict[str, float]:
    """Share of questions whose first passage holds an answer, and whose passages hold one at all (``has_answer``)."""
    if not rows:
        return {}
    n = max(len(r["ctxs"]) for r in rows)
    return {
        "answer in passage 1": sum(bool(r["ctxs"]) and bool(r["ctxs"][0].get("has_answer")) for r in rows) / len(rows),
        f"answer in the first {n}": sum(any(c.get("has_answer") for c in r["ctxs"]) for r in rows) / len(rows),
    }


def check_labeler(rows: list[dict], labeler: str, *, force: bool = False) -> None:
    """Refuse ``has_answer`` labels for rows of sets where containing a gold string is no sign of relevance."""
    if labeler != "has_answer" or force:
        return
    bad = Counter(
        r.get("source") or r.get("task")
        for r in rows
        if r.get("source") in NOT_HAS_ANSWER_SOURCES or r.get("task") in ("fever", "long")
    )
    if bad:
        raise ValueError(
            f"has_answer relevance labels do not fit {dict(bad)} rows: FEVER golds are labels (SUPPORTS/REFUTES), "
            "ELI5's are paragraphs and ASQA's long answers, none of which occur verbatim in a relevant passage. "
            "Label them with --labeler monot5 or --labeler llm:<model>, or pass --force-has-answer to keep has_answer."
        )


def label_relevance(rows: list[dict], labeler: str = "has_answer", *, judge=None) -> list[dict]:
    """Set ``ctx["relevant"]``: ``has_answer`` (default) or a judge with ``.labels(pairs)`` (LLM or monoT5)."""
    if labeler == "has_answer":
        for row in rows:
            for ctx in row["ctxs"]:
                ctx["relevant"] = bool(ctx["has_answer"])
        return rows
    if judge is None:
        raise ValueError(f"labeler {labeler!r} needs a judge object with .labels(pairs)")
    pairs = [(row["question"], ctx["text"]) for row in rows for ctx in row["ctxs"]]
    labels = iter(judge.labels(pairs))
    for row in rows:
        for ctx in row["ctxs"]:
            ctx["relevant"] = bool(next(labels))
    return rows


def make_judge(labeler: str):
    """``llm:<model>`` → LLMJudge, ``monot5[:<name>]`` → MonoT5Judge, ``has_answer`` → None."""
    from ..retrieval import LLMJudge, MonoT5Judge

    if labeler == "has_answer":
        return None
    if labeler.startswith("llm:"):
        return LLMJudge.from_pretrained(labeler[4:])
    if labeler == "monot5" or labeler.startswith("monot5:"):
        return MonoT5Judge.from_pretrained(
            labeler.split(":", 1)[1] if ":" in labeler else "castorini/monot5-base-msmarco"
        )
    raise ValueError(f"unknown labeler {labeler!r}: use has_answer, llm:<model> or monot5[:<name>]")
