"""Offline mteb tasks built from the packaged corpora, and the held-out split that training data must avoid.

- ``LocalWordNetDefinitionRetrieval``: a WordNet definition → the synset's words (its lemmas).
- ``LocalWikipediaSectionRetrieval``: "article title: section heading" → the passages of that section.
- ``LocalLeeSTS``: the 1225 document pairs of the Lee benchmark with human similarity scores (Spearman, Pearson).
- ``LocalFoldocDefinitionRetrieval``: a FOLDOC definition → its computing term. No training data of the project
  comes from FOLDOC, so it measures transfer to an unseen source (not in the default task list: it needs Debian's
  ``dict-foldoc``, which ``make setup`` installs).

Each item is chosen by a hash of its id, so the held-out set is fixed, independent of task sizes and of the order
of the source files. ``heldout_ids()`` / ``heldout_texts()`` expose it; the GRACE dataset builders drop anything in
it, so no evaluation query (or its relevant documents) is ever trained on.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from ..corpora import WordNet, iter_wikipedia_passages, load_lee
from ..corpora.foldoc import iter_foldoc

# Shares of each source held out for evaluation (per mille of the hashed ids).
WORDNET_HELDOUT_PER_MILLE = 4
WIKIPEDIA_HELDOUT_PER_MILLE = 80


def bucket(key: str) -> int:
    """A stable number in [0, 1000) for an id."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 1000


def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


@lru_cache(maxsize=1)
def _heldout_synsets() -> tuple:
    return tuple(s for s in WordNet().synsets() if bucket(f"wordnet:{s.id}") < WORDNET_HELDOUT_PER_MILLE)


@lru_cache(maxsize=1)
def _heldout_sections() -> dict[tuple[str, str], list]:
    sections: dict[tuple[str, str], list] = {}
    for passage in iter_wikipedia_passages():
        if bucket(f"wikipedia:{passage.article_id}/{passage.section}") < WIKIPEDIA_HELDOUT_PER_MILLE:
            sections.setdefault((passage.article_id, passage.section), []).append(passage)
    return sections


def heldout_ids() -> dict[str, frozenset[str]]:
    """Ids of every item that any local task uses: WordNet synset ids, Wikipedia "<article id>/<section>" keys and
    passage ids, and Lee document indices."""
    return {
        "wordnet_synsets": frozenset(s.id for s in _heldout_synsets()),
        "wikipedia_sections": frozenset(f"{a}/{sec}" for a, sec in _heldout_sections()),
        "wikipedia_passages": frozenset(p.id for ps in _heldout_sections().values() for p in ps),
        "lee_documents": frozenset(f"lee-{i}" for i in range(len(load_lee().documents))),
    }


def heldout_texts() -> frozenset[str]:
    """Every query and document text of the local tasks, lower-cased with spaces collapsed."""
    texts = set()
    for synset in _heldout_synsets():
        texts.update((synset.definition, ", ".join(synset.lemmas), *synset.examples))
    for (_, section), passages in _heldout_sections().items():
        texts.add(f"{passages[0].title}: {section}")
        texts.update(p.text for p in passages)
    texts.update(load_lee().documents)
    return frozenset(normalize_text(t) for t in texts)


_COMMON: dict[str, Any] = {
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "dialect": ["Written"],
    "task_subtypes": [],
    "modalities": ["text"],
    "sample_creation": "found",
}


def _retrieval_split(queries: list[dict], corpus: list[dict], relevant: dict[str, dict[str, int]]) -> dict:
    return {
        "queries": Dataset.from_list(queries),
        "corpus": Dataset.from_list(corpus),
        "relevant_docs": relevant,
        "top_ranked": None,
    }


class _DefinitionRetrieval:
    """A definition → its headword task over ``max_documents`` entries, every ``query_every``-th entry a query."""

    def __init__(self, max_documents: int, query_every: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.max_documents, self.query_every = max_documents, query_every

    def _load(self, entries: list[tuple[str, str, str]]) -> None:
        """``entries``: (document id, headword text, definition), already in the task's order."""
        entries = entries[: self.max_documents]
        corpus = [{"id": doc, "title": "", "text": text} for doc, text, _ in entries]
        chosen = entries[:: self.query_every]
        queries = [{"id": f"q-{doc}", "text": definition} for doc, _, definition in chosen]
        relevant = {f"q-{doc}": {doc: 1} for doc, _, _ in chosen}
        self.dataset = {"default": {"test": _retrieval_split(queries, corpus, relevant)}}
        self.data_loaded = True


class LocalWordNetDefinitionRetrieval(_DefinitionRetrieval, AbsTaskRetrieval):
    metadata = TaskMetadata(
        name="LocalWordNetDefinitionRetrieval",
        description="Retrieve the words (lemmas) of a WordNet 3.0 synset from its definition, among held-out synsets.",
        reference="https://wordnet.princeton.edu/",
        dataset={"path": "local/wordnet-3.0", "revision": "1"},
        type="Retrieval",
        main_score="ndcg_at_10",
        date=("2006-01-01", "2006-12-31"),
        domains=["Written", "Encyclopaedic"],
        license="https://wordnet.princeton.edu/license-and-commercial-use",
        annotations_creators="expert-annotated",
        bibtex_citation="@book{fellbaum1998wordnet, title={WordNet: An Electronic Lexical Database}, author={Fellbaum, Christiane}, year={1998}, publisher={MIT Press}}",
        **_COMMON,
    )

    def __init__(self, max_documents: int = 300, query_every: int = 3, **kwargs):
        super().__init__(max_documents, query_every, **kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        synsets = sorted(_heldout_synsets(), key=lambda s: s.id)
        self._load([(s.id, ", ".join(s.lemmas), s.definition) for s in synsets])


class LocalWikipediaSectionRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(
        name="LocalWikipediaSectionRetrieval",
        description="Retrieve the ~100-word passages of a Wikipedia section from 'article title: section heading', among held-out sections.",
        reference="https://dumps.wikimedia.org/",
        dataset={"path": "local/enwiki-gensim-extract", "revision": "1"},
        type="Retrieval",
        main_score="ndcg_at_10",
        date=("2016-04-01", "2016-04-30"),
        domains=["Written", "Encyclopaedic"],
        license="cc-by-sa-3.0",
        annotations_creators="derived",
        bibtex_citation="",
        **_COMMON,
    )

    def __init__(self, max_queries: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_queries = max_queries

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        sections = sorted(_heldout_sections().items())[: self.max_queries]
        queries, corpus, relevant = [], [], {}
        for (article_id, section), passages in sections:
            qid = f"q-{article_id}/{section}"
            queries.append({"id": qid, "text": f"{passages[0].title}: {section}"})
            corpus += [{"id": p.id, "title": "", "text": p.text} for p in passages]
            relevant[qid] = {p.id: 1 for p in passages}
        self.dataset = {"default": {"test": _retrieval_split(queries, corpus, relevant)}}
        self.data_loaded = True


class LocalLeeSTS(AbsTaskSTS):
    metadata = TaskMetadata(
        name="LocalLeeSTS",
        description="Lee et al. (2005): mean human similarity of 1225 pairs of 50 short news documents (0–1).",
        reference="https://www.researchgate.net/publication/228854813_An_empirical_evaluation_of_models_of_text_document_similarity",
        dataset={"path": "local/lee-2005", "revision": "1"},
        type="STS",
        main_score="cosine_spearman",
        date=("2005-01-01", "2005-12-31"),
        domains=["News", "Written"],
        license="not specified",
        annotations_creators="human-annotated",
        bibtex_citation="@inproceedings{lee2005empirical, title={An empirical evaluation of models of text document similarity}, author={Lee, Michael D and Pincombe, Brandon and Welsh, Matthew}, booktitle={Proceedings of the Annual Meeting of the Cognitive Science Society}, year={2005}}",
        **_COMMON,
    )
    min_score = 0
    max_score = 1

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        lee = load_lee()
        pairs = list(lee.pairs())
        self.dataset = {
            "test": Dataset.from_dict(
                {
                    "sentence1": [lee.documents[i] for i, _, _ in pairs],
                    "sentence2": [lee.documents[j] for _, j, _ in pairs],
                    "score": [score for _, _, score in pairs],
                }
            )
        }
        self.data_loaded = True


class TripletValidationRetrieval(AbsTaskRetrieval):
    """A GRACE triplet dataset's validation split as a retrieval task: each query → its positive, among every positive
    and negative of the split. For choosing training settings without looking at the test tasks."""

    metadata = TaskMetadata(
        name="TripletValidationRetrieval",
        description="The validation split of a GRACE triplet dataset: query -> its positive among the split's positives and negatives.",
        reference="https://arxiv.org/abs/2510.04506",
        dataset={"path": "local/grace-triplets", "revision": "1"},
        type="Retrieval",
        main_score="ndcg_at_10",
        date=("2026-01-01", "2026-12-31"),
        domains=["Written"],
        license="not specified",
        annotations_creators="derived",
        bibtex_citation="",
        **{**_COMMON, "eval_splits": ["test"]},
    )

    def __init__(self, data: str, split: str = "validation", config: str = "triplets", **kwargs):
        super().__init__(**kwargs)
        self.data, self.split, self.config = str(data), split, config

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from ..common.dataset_io import load_split

        try:
            rows = load_split(self.data, self.config, self.split)
        except ValueError as err:  # datasets: unknown split or config
            raise ValueError(f"{self.data}: no {self.split!r} split in config {self.config!r} ({err})") from None
        if len(rows) == 0:
            raise ValueError(f"{self.data}: the {self.split!r} split of config {self.config!r} is empty")
        missing = sorted({"query", "positive", "negative"} - set(rows.column_names))
        if missing:
            raise ValueError(
                f"{self.data}: split {self.split!r} has no column {missing}; columns are {rows.column_names}"
            )
        doc_ids: dict[str, str] = {}
        for row in rows:
            for role in ("positive", "negative"):
                doc_ids.setdefault(row[role], f"d{len(doc_ids)}")
        corpus = [{"id": i, "title": "", "text": text} for text, i in doc_ids.items()]
        queries, relevant = [], {}
        for number, row in enumerate(rows):
            qid = f"q{number}"
            queries.append({"id": qid, "text": row["query"]})
            relevant[qid] = {doc_ids[row["positive"]]: 1}
        self.dataset = {"default": {"test": _retrieval_split(queries, corpus, relevant)}}
        self.data_loaded = True


class LocalFoldocDefinitionRetrieval(_DefinitionRetrieval, AbsTaskRetrieval):
    metadata = TaskMetadata(
        name="LocalFoldocDefinitionRetrieval",
        description="Retrieve a computing term from the first sentence of its FOLDOC definition (a source no training data touches).",
        reference="https://foldoc.org/",
        dataset={"path": "local/foldoc-2023", "revision": "1"},
        type="Retrieval",
        main_score="ndcg_at_10",
        date=("2023-01-01", "2023-12-31"),
        domains=["Written", "Encyclopaedic"],
        license="https://www.gnu.org/licenses/fdl-1.1.html",
        annotations_creators="expert-annotated",
        bibtex_citation="@misc{foldoc, title={The Free On-line Dictionary of Computing}, author={Howe, Denis}, url={https://foldoc.org/}}",
        **_COMMON,
    )

    def __init__(self, max_documents: int = 240, query_every: int = 3, **kwargs):
        super().__init__(max_documents, query_every, **kwargs)

    @staticmethod
    def usable(term: str, definition: str) -> bool:
        """A definition of at least 6 words that neither names its term nor only points elsewhere ("See ...")."""
        return (
            len(definition.split()) >= 6
            and term.lower() not in definition.lower()
            and not definition.lower().startswith(("see ", "an abbreviation", "abbreviation"))
        )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        entries = sorted(
            (e for e in iter_foldoc() if self.usable(e.term, e.definition)),
            key=lambda e: (bucket(f"foldoc:{e.term}"), e.term),
        )
        by_term: dict[str, Any] = {}
        for entry in entries:  # one entry per term, whatever its case ("Domain" and "domain")
            by_term.setdefault(entry.term.lower(), entry)
        self._load([(f"foldoc-{i}", e.term, e.definition) for i, e in enumerate(by_term.values())])


# the default set (`grace evaluate` without --tasks, the demo, the cards); FOLDOC is asked for by name
DEFAULT_LOCAL_TASKS = (LocalWordNetDefinitionRetrieval, LocalWikipediaSectionRetrieval, LocalLeeSTS)
LOCAL_TASKS = {cls.metadata.name: cls for cls in (*DEFAULT_LOCAL_TASKS, LocalFoldocDefinitionRetrieval)}
