"""One retrieval pipeline from the two policies: retrieve (GRACE, any sentence-transformers model, or BM25) →
rerank (DynamicRAG, or the retriever's plain top-k) → answer.

    pipe = RetrievalPolicyPipeline(retriever="org/grace", reranker="org/dynamicrag", corpus="wikipedia")
    out = pipe("Who founded the city?")   # out.answer, out.passages (selected, in order, with ids), out.rationale

The corpus is indexed once and reused: dense embeddings and BM25 indexes are saved under ``cache_dir`` keyed by the
encoder and the corpus's content, and a ``grace encode`` output is searched as it is. Without a reranker, or with
one, the answer comes from ``generator`` when one is given, else from the reranker's own LLM (DynamicRAG inference),
else from the packaged SmolLM2 answering from the top-k.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = (
    Path(os.environ.get("RETRIEVAL_POLICIES_CACHE", Path.home() / ".cache" / "retrieval_policies")) / "rag"
)
PACKAGED_CORPORA = ("wikipedia",)


@dataclass
class RagAnswer:
    question: str
    answer: str
    passages: list[dict]  # the selected passages, in the order the answer saw them: {id, title, text, score, rank}
    # (with a GRACE retriever also "shared": the words and phrases the question and its rationale share with the
    # passage and its own rationale, when the index kept one: why it matched)
    retrieved: list[dict]  # the first stage's top-n, best first (rank is 1-based)
    rationale: str | None = None  # what a GRACE retriever wrote about the question (why it retrieved what it did)
    seconds: dict = field(default_factory=dict)  # retrieve / rerank / answer, this question's share of its batch
    reranker_output: str | None = None  # what the DynamicRAG reranker wrote (None without a reranker)
    malformed: bool = False  # its output was not a well-formed id list and was repaired (ids dropped, or none)
    context_tokens: int = 0  # tokens of passages the generator read (counted with its tokenizer)
    cut: int = 0  # selected passages left out to keep within the budget (max_k / max_context_tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        ids = [p["id"] for p in self.passages]
        return f"RagAnswer(answer={self.answer!r}, passages={ids}, rationale={self.rationale!r})"


def load_corpus(corpus, *, config: str | None = None, split: str = "train") -> list[dict] | Path:
    """Passages (``passages.as_passages``) of records in memory, ``"wikipedia"`` (the packaged passages), a dataset
    folder, file or Hub id; or the folder of a ``grace encode`` output, returned as its path (searched as it is)."""
    from .common.passages import as_passages

    if not isinstance(corpus, (str, os.PathLike)):
        return as_passages(corpus)
    name = str(corpus)
    if name in PACKAGED_CORPORA:
        from .corpora import iter_wikipedia_passages

        return as_passages(iter_wikipedia_passages())
    if (Path(name) / "manifest.json").is_file():
        return Path(name)
    if not Path(name).exists() and (
        name.startswith((".", "/", "~")) or Path(name).suffix in (".jsonl", ".json", ".parquet", ".csv")
    ):
        raise FileNotFoundError(
            f"corpus {name!r}: no such file or folder (give records, 'wikipedia', a dataset folder, "
            "file or Hub id, or a `grace encode` output folder)"
        )
    from .common.dataset_io import load_split

    return as_passages(load_split(name, config, split))


def _is_grace(folder: Path) -> bool:
    return (folder / "grace_config.json").is_file()


def _encoder_id(spec: str, encoder) -> str:
    return f"{spec}@{getattr(encoder, 'revision', None) or 'local'}"


def build_retriever(
    spec, corpus, *, cache_dir=None, rationale: bool = True, batch_size: int = 32, device_map=None, dtype=None
):
    """A retriever over ``corpus`` (what :func:`load_corpus` returns) from ``spec``: ``"bm25"``, a GRACE repo or
    folder, a sentence-transformers model, a retriever object (with ``search`` and ``corpus``) or an encoder object.
    ``rationale``: GRACE writes a rationale per passage and query (the method); False embeds the prompts alone."""
    from .retrieval import BM25Retriever, DenseRetriever

    encoded = corpus if isinstance(corpus, Path) else None
    if hasattr(spec, "search") and hasattr(spec, "corpus"):
        return spec
    if encoded is not None and spec != "bm25":
        encoder = None if spec in (None, "grace") else _load_encoder(spec, device_map=device_map, dtype=dtype)
        return DenseRetriever.from_encoded(encoded, encoder, batch_size=batch_size)
    if encoded is not None:
        from .retrieval.encoded import load_encoded

        corpus = load_encoded(encoded)[0]
    if spec == "bm25":
        return BM25Retriever(corpus, cache_dir=cache_dir)
    encoder = _load_encoder(spec, device_map=device_map, dtype=dtype) if isinstance(spec, (str, os.PathLike)) else spec
    grace = hasattr(encoder, "grace_config")
    name = (
        str(spec)
        if isinstance(spec, (str, os.PathLike))
        else getattr(getattr(encoder, "model", None), "name_or_path", None)
    )
    return DenseRetriever(
        encoder,
        corpus,
        encoder_id=_encoder_id(name, encoder) if name else type(encoder).__name__,
        cache_dir=cache_dir if name else None,
        batch_size=batch_size,
        grace_options={"rationale": rationale} if grace else None,
    )


def _load_encoder(spec, *, device_map=None, dtype=None):
    from .assets import resolve_model

    folder = resolve_model(spec)
    if _is_grace(folder):
        from .models.grace import GraceEmbedder

        return GraceEmbedder.from_pretrained(folder, device_map=device_map, dtype=dtype)
    from sentence_transformers import SentenceTransformer

    device = device_map if isinstance(device_map, str) and device_map != "auto" else None
    return SentenceTransformer(str(folder), device=device, model_kwargs={"torch_dtype": dtype} if dtype else None)


def _load_reranker(spec, *, device_map=None, dtype=None):
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    from .assets import resolve_model
    from .models.dynamicrag import DynamicRAGModel

    return DynamicRAGModel.from_pretrained(resolve_model(spec), device_map=device_map, dtype=dtype)


def load_dynamicrag(spec, *, device_map=None, dtype=None, **settings):
    """A DynamicRAG repo or folder as saved, or any chat LLM as an untrained DynamicRAGModel (``settings``: its
    DynamicRAGConfig fields; given with a DynamicRAG repo they replace the repo's settings)."""
    from .assets import resolve_model
    from .models.dynamicrag import DynamicRAGModel

    folder = resolve_model(spec)
    if (folder / "dynamicrag_config.json").is_file() and not settings:
        return DynamicRAGModel.from_pretrained(folder, device_map=device_map, dtype=dtype)
    return DynamicRAGModel.from_base(str(folder), device_map=device_map, dtype=dtype, **settings)


def _load_generator(spec, *, device_map=None, dtype=None):
    """An answer writer: a DynamicRAG repo, or any chat LLM used through DynamicRAG's generator prompt."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    return load_dynamicrag(spec, device_map=device_map, dtype=dtype)


class RetrievalPolicyPipeline:
    """Question → retrieved passages → DynamicRAG's selection (or the top-k) → answer. See the module docstring."""

    def __init__(
        self,
        retriever="bm25",
        reranker=None,
        corpus=None,
        *,
        generator=None,
        top_n: int = 20,
        top_k: int = 5,
        task: str = "short",
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
        rationale: bool = True,
        batch_size: int = 32,
        device_map=None,
        dtype=None,
        config: str | None = None,
        split: str = "train",
        constrained: bool | None = None,
        max_k: int | None = None,
        max_context_tokens: int | None = None,
    ):
        """``constrained``: the reranker writes only well-formed id lists (default: the reranker's config).
        ``max_k`` / ``max_context_tokens``: the default budget of every question (see :meth:`ask_batch`)."""
        if corpus is None and not (hasattr(retriever, "search") and hasattr(retriever, "corpus")):
            raise ValueError("a corpus is needed: records, 'wikipedia', a dataset, or a `grace encode` output folder")
        if top_n < 1 or top_k < 1:
            raise ValueError(f"top_n and top_k must be >= 1, got {top_n} and {top_k}")
        self.retriever_spec, self.reranker_spec = retriever, reranker
        loaded = load_corpus(corpus, config=config, split=split) if corpus is not None else None
        self.retriever = build_retriever(
            retriever,
            loaded,
            cache_dir=cache_dir,
            rationale=rationale,
            batch_size=batch_size,
            device_map=device_map,
            dtype=dtype,
        )
        self.reranker = _load_reranker(reranker, device_map=device_map, dtype=dtype)
        if generator is not None:
            self.generator = _load_generator(generator, device_map=device_map, dtype=dtype)
        elif self.reranker is not None:
            self.generator = self.reranker
        else:
            self.generator = _load_generator(_default_generator(), device_map=device_map, dtype=dtype)
        self.top_n, self.top_k, self.task = top_n, top_k, task
        self.constrained, self.max_k, self.max_context_tokens = constrained, max_k, max_context_tokens

    @property
    def corpus(self) -> list[dict]:
        return self.retriever.corpus

    def __repr__(self) -> str:
        reranker = "none (top-k)" if self.reranker is None else type(self.reranker).__name__
        return (
            f"RetrievalPolicyPipeline(retriever={type(self.retriever).__name__}({self.retriever_spec!r}), "
            f"reranker={reranker}, passages={len(self.corpus)}, top_n={self.top_n}, top_k={self.top_k})"
        )

    def __call__(self, question, **kwargs):
        """One question → :class:`RagAnswer`; a list of questions → a list of them."""
        if isinstance(question, str):
            return self.ask_batch([question], **kwargs)[0]
        return self.ask_batch(list(question), **kwargs)

    def ask(self, question: str, **kwargs) -> RagAnswer:
        return self.ask_batch([question], **kwargs)[0]

    def ask_batch(
        self,
        questions: list[str],
        *,
        task: str | None = None,
        seed: int | None = None,
        max_k: int | None = None,
        max_context_tokens: int | None = None,
    ) -> list[RagAnswer]:
        """Answers with their passages, the reranker's raw output and the seconds per stage. A budget (``max_k``
        passages, ``max_context_tokens`` tokens; default the pipeline's) cuts the selection, in the reranker's order
        (or the top-k's), to whole passages that fit, counted with the generator's tokenizer; each answer reports
        the tokens of context it was written from."""
        max_k = self.max_k if max_k is None else max_k
        max_context_tokens = self.max_context_tokens if max_context_tokens is None else max_context_tokens
        if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
            raise ValueError("questions must be a non-empty list of non-empty strings")
        started = time.perf_counter()
        if hasattr(self.retriever, "search_explained"):
            hits, rationales = self.retriever.search_explained(questions, top_n=self.top_n)
        else:
            hits, rationales = self.retriever.search(questions, top_n=self.top_n), [None] * len(questions)
        retrieved = [
            [{**self.corpus[i], "score": float(score), "rank": rank} for rank, (i, score) in enumerate(row, 1)]
            for row in hits
        ]
        from .models.dynamicrag.modeling_dynamicrag import fit_to_budget
        from .models.grace.modeling_grace import shared_terms

        for question, rationale, row in zip(questions, rationales, retrieved):
            if rationale is not None:  # a GRACE retriever: why each hit matched
                asked = f"{question} {rationale}"
                for passage in row:
                    written = f"{passage.get('title') or ''} {passage['text']} {passage.get('rationale') or ''}"
                    passage["shared"] = shared_terms(asked, written)
        retrieved_at = time.perf_counter()
        if self.reranker is not None:
            n = self.reranker.dynamicrag_config.max_passages
            reranked = self.reranker.rerank_batch(
                questions,
                [r[:n] for r in retrieved],
                constrained=self.constrained,
                **({} if seed is None else {"seed": seed}),
            )
            selected = [r.passages for r in reranked]
            raw = [(" | ".join(r.raw), bool(r.malformed)) for r in reranked]
        else:
            selected = [r[: self.top_k] for r in retrieved]
            raw = [(None, False)] * len(questions)
        fitted = [
            fit_to_budget(self.generator.tokenizer, s, max_k=max_k, max_context_tokens=max_context_tokens)
            for s in selected
        ]
        cut = [len(s) - kept for s, (kept, _) in zip(selected, fitted)]
        selected = [s[:kept] for s, (kept, _) in zip(selected, fitted)]
        context_tokens = [tokens for _, tokens in fitted]
        reranked_at = time.perf_counter()
        answers = self.generator.answer_batch(
            questions, selected, task=task or self.task, ids=[[p["rank"] for p in s] for s in selected]
        )
        done = time.perf_counter()
        share = {
            "retrieve": (retrieved_at - started),
            "rerank": (reranked_at - retrieved_at),
            "answer": (done - reranked_at),
        }
        share = {k: round(v / len(questions), 4) for k, v in share.items()}
        return [
            RagAnswer(q, a, s, r, rationale, dict(share), output, malformed, n_tokens, n_cut)
            for q, a, s, r, rationale, (output, malformed), n_tokens, n_cut in zip(
                questions, answers, selected, retrieved, rationales, raw, context_tokens, cut
            )
        ]


# ---------------------------------------------------------------------------------------------- evaluation
def cloze_eval_questions(max_questions: int | None = None, split: str = "test") -> list[dict]:
    """The offline evaluation set: the Wikipedia cloze questions of ``split`` (their answers are spans of the
    packaged passages)."""
    from .dynamicrag.cloze_qa import iter_cloze_questions

    rows = [
        {"id": q.id, "question": q.question, "answers": list(q.answers)}
        for q in iter_cloze_questions()
        if q.split == split
    ]
    return rows[:max_questions] if max_questions else rows


def evaluate_pipelines(
    combinations: list[tuple],
    rows: list[dict],
    corpus="wikipedia",
    *,
    generator=None,
    top_n: int = 20,
    top_k: int = 5,
    cache_dir=DEFAULT_CACHE_DIR,
    rationale: bool = True,
    device_map=None,
    dtype=None,
    batch_size: int = 8,
    show_progress_bar: bool = True,
    budgets: list[int] | tuple = (),
    constrained: bool | None = None,
) -> list[dict]:
    """EM, F1, recall of the selected passages (the share of questions with an answer-bearing passage among them),
    mean passages selected and seconds per question, for every (retriever, reranker) combination on ``rows``
    ({question, answers}). The corpus is loaded once and each retriever, reranker and generator built once.
    ``budgets``: tokens of context; each combination is also run within each budget (a row per budget, with the
    mean tokens the generator read), so a reranker's selection and a fixed top-k can be compared at equal cost.
    ``constrained``: the rerankers write only well-formed id lists."""
    from tqdm.auto import tqdm

    from .metrics import load_metric
    from .retrieval import has_answer

    loaded = load_corpus(corpus)
    answer_metric = load_metric("rag_answer")
    place = {"device_map": device_map, "dtype": dtype}
    retrievers, rerankers, table = {}, {}, []
    shared_generator = _load_generator(generator, **place) if generator is not None else None
    for retriever_spec, reranker_spec in combinations:
        if retriever_spec not in retrievers:
            retrievers[retriever_spec] = build_retriever(
                retriever_spec, loaded, cache_dir=cache_dir, rationale=rationale, **place
            )
        if reranker_spec not in rerankers:
            rerankers[reranker_spec] = _load_reranker(reranker_spec, **place)
        reranker = rerankers[reranker_spec]
        if reranker is None and shared_generator is None:  # top-k rows share one plain generator
            shared_generator = _load_generator(_default_generator(), **place)
        pipe = RetrievalPolicyPipeline(
            retrievers[retriever_spec],
            reranker,
            generator=shared_generator if reranker is None or generator is not None else None,
            top_n=top_n,
            top_k=top_k,
            constrained=constrained,
        )
        for budget in (None, *budgets):
            outputs, started = [], time.perf_counter()
            bar = tqdm(
                total=len(rows),
                desc=f"rag evaluate {retriever_spec} x {reranker_spec}" + (f" ({budget} tokens)" if budget else ""),
                unit="question",
                disable=not show_progress_bar,
            )
            for begin in range(0, len(rows), batch_size):
                batch = rows[begin : begin + batch_size]
                outputs += pipe.ask_batch([r["question"] for r in batch], seed=begin, max_context_tokens=budget)
                bar.update(len(batch))
            bar.close()
            seconds = (time.perf_counter() - started) / len(rows)
            scores = answer_metric.compute(
                predictions=[o.answer for o in outputs], references=[r["answers"] for r in rows]
            )
            recall = sum(any(has_answer(p["text"], r["answers"]) for p in o.passages) for o, r in zip(outputs, rows))
            table.append(
                {
                    "retriever": str(retriever_spec),
                    "reranker": str(reranker_spec or "none"),
                    "budget": budget,
                    "exact_match": scores["exact_match"],
                    "f1": scores["f1"],
                    "selection_recall": recall / len(rows),
                    "mean_k": sum(len(o.passages) for o in outputs) / len(rows),
                    "mean_tokens": sum(o.context_tokens for o in outputs) / len(rows),
                    "seconds_per_question": seconds,
                    "questions": len(rows),
                }
            )
    return table


def _default_generator() -> str:
    from .assets import DEFAULT_BASE_MODEL

    return DEFAULT_BASE_MODEL


def format_table(table: list[dict]) -> str:
    columns = [
        ("EM", "exact_match"),
        ("F1", "f1"),
        ("recall", "selection_recall"),
        ("mean k", "mean_k"),
        ("tokens", "mean_tokens"),
        ("s/question", "seconds_per_question"),
    ]
    width = max([len("retriever")] + [len(r["retriever"]) for r in table])
    rwidth = max([len("reranker")] + [len(r["reranker"]) for r in table])
    head = f"{'retriever':<{width}}  {'reranker':<{rwidth}}  {'budget':>7}"
    lines = [head + "".join(f"{title:>11}" for title, _ in columns)]
    for row in table:
        budget = "-" if row.get("budget") is None else str(row["budget"])
        lines.append(
            f"{row['retriever']:<{width}}  {row['reranker']:<{rwidth}}  {budget:>7}"
            + "".join(
                f"{row.get(key, 0):>11.4f}"
                if key not in ("seconds_per_question", "mean_tokens")
                else f"{row.get(key, 0):>11.1f}"
                for _, key in columns
            )
        )
    return "\n".join(lines)
