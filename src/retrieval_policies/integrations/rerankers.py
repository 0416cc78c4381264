"""DynamicRAG as a `rerankers <https://github.com/AnswerDotAI/rerankers>`_ ranker, which other RAG frameworks wrap.

    from retrieval_policies.integrations.rerankers import DynamicRAGRanker
    ranker = DynamicRAGRanker("org/dynamicrag")
    results = ranker.rank("Who wrote Hamlet?", ["...", "..."])
    [r.text for r in results if r.selected]        # what DynamicRAG chose to read, in its order

DynamicRAG is listwise and chooses how many passages to keep (the variable k), so the results are every document:
the selected ones first, in DynamicRAG's order (ranks 1..k), then the unselected ones in their input order (ranks
k+1..n), each with ``metadata["selected"]``. Scores are derived from that order, not from a pointwise model: the
i-th selected document scores (k - i + 1) / k (1.0 for the first, 1/k for the last), an unselected one 0.0, so
``top_k`` by score and by rank agree and a score above 0 means "selected". ``score(query, doc)`` raises: there is
no score of one document alone.
"""

from __future__ import annotations

from rerankers.documents import Document
from rerankers.models.ranker import BaseRanker
from rerankers.results import RankedResults, Result
from rerankers.utils import prep_docs


class DynamicRAGRanker(BaseRanker):
    def __init__(
        self,
        model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct",
        verbose: int = 1,
        *,
        device_map=None,
        dtype=None,
        seed: int | None = 0,
        **settings,
    ):
        """``model_name_or_path``: a DynamicRAG repo or folder, a chat LLM (an untrained reranker, ``settings`` its
        DynamicRAGConfig fields), or a loaded DynamicRAGModel; placement as ``DynamicRAGModel.from_pretrained``.
        ``seed``: makes a sampling reranker's order reproducible."""
        if hasattr(model_name_or_path, "rerank_batch"):
            self.model = model_name_or_path
        else:
            from ..rag import load_dynamicrag

            self.model = load_dynamicrag(model_name_or_path, device_map=device_map, dtype=dtype, **settings)
        self.verbose, self.seed = verbose, seed

    def __repr__(self) -> str:
        return f"DynamicRAGRanker({self.model!r})"

    def rank(self, query: str, docs, doc_ids=None, metadata=None) -> RankedResults:
        """Every document, the selected ones first (see the module docstring). A document's ``metadata["title"]``,
        when there is one, is shown to the model as the passage's topic."""
        if isinstance(docs, (str, Document)):
            docs = [docs]
        if not docs:
            return RankedResults(results=[], query=query, has_scores=True)
        documents = prep_docs(docs, doc_ids, metadata)
        passages = [{"title": str((d.metadata or {}).get("title") or ""), "text": d.text} for d in documents]
        [reranked] = self.model.rerank_batch([query], [passages], **({} if self.seed is None else {"seed": self.seed}))
        chosen = list(reranked.indices)
        k, results = len(chosen), []
        for position, index in enumerate(chosen, start=1):
            results.append(self._result(documents[index], True, (k - position + 1) / k, position))
        rest = [i for i in range(len(documents)) if i not in set(chosen)]
        for offset, index in enumerate(rest, start=k + 1):
            results.append(self._result(documents[index], False, 0.0, offset))
        return RankedResults(results=results, query=query, has_scores=True)

    @staticmethod
    def _result(document: Document, selected: bool, score: float, rank: int) -> Result:
        marked = Document(
            document.text, doc_id=document.doc_id, metadata={**(document.metadata or {}), "selected": selected}
        )
        return Result(document=marked, score=score, rank=rank)  # a copy: the caller's Documents stay as they were

    def score(self, query: str, doc: str) -> float:
        raise NotImplementedError(
            "DynamicRAG is a listwise reranker: it selects and orders a whole list of passages "
            "and has no score for one document alone; call rank(query, docs) and read each "
            "result's rank, score (derived from the order) and metadata['selected']"
        )


def is_dynamicrag(model_name_or_path) -> bool:
    """Whether a folder or Hub repo holds a DynamicRAG model (its ``dynamicrag_config.json``)."""
    from pathlib import Path

    from transformers.utils import cached_file

    if isinstance(model_name_or_path, (str, Path)) and Path(model_name_or_path).is_dir():
        return (Path(model_name_or_path) / "dynamicrag_config.json").is_file()
    try:
        found = cached_file(
            str(model_name_or_path), "dynamicrag_config.json", _raise_exceptions_for_missing_entries=False
        )
    except OSError:
        return False
    return found is not None


def Reranker(model_name: str, model_type: str | None = None, **kwargs):  # noqa: N802 - rerankers' own spelling
    """``rerankers.Reranker`` that knows DynamicRAG: a DynamicRAG folder or repo gets a :class:`DynamicRAGRanker`
    (rerankers alone picks a class from the name and would load it as a cross-encoder, with a randomly initialised
    score head); asking for it as a ``cross-encoder`` is refused with that explanation; anything else is rerankers'."""
    import rerankers

    if is_dynamicrag(model_name):
        if model_type not in (None, "dynamicrag"):
            raise ValueError(
                f"{model_name} is a DynamicRAG model, a listwise generative reranker, not a {model_type}: it has no "
                "scoring head (as a cross-encoder its score weights would be random). Leave model_type out, or use "
                "retrieval_policies.integrations.rerankers.DynamicRAGRanker"
            )
        return DynamicRAGRanker(model_name, **kwargs)
    return rerankers.Reranker(model_name, model_type=model_type, **kwargs)
