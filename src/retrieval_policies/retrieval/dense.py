"""Dense and BM25 retrieval over a passage corpus; each question gets DPR-style ``ctxs``.

Corpus embeddings are computed once and saved next to the corpus (keyed by encoder and corpus content), so a
re-run reuses them; they are built in saved chunks, so an interrupted build resumes. Search is exact inner product;
with ``faiss-cpu`` installed, corpora above ``faiss_threshold`` passages use an HNSW index instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..common.passages import as_passages
from .labels import has_answer

logger = logging.getLogger(__name__)
FAISS_THRESHOLD = 1_000_000


def corpus_fingerprint(corpus: list[dict]) -> str:
    digest = hashlib.sha256()
    for passage in corpus:
        digest.update(json.dumps([passage["id"], passage.get("title", ""), passage["text"]]).encode())
    return digest.hexdigest()[:16]


def passage_text(passage: dict) -> str:
    """What the dense encoder sees: "title. text" when there is a title (DPR convention)."""
    title = (passage.get("title") or "").strip()
    return f"{title}. {passage['text']}" if title else passage["text"]


def _faiss_or_none(embeddings: np.ndarray):
    try:
        from .encoded import faiss_index

        return faiss_index(embeddings, hnsw_above=0)
    except ImportError:
        logger.warning(
            "%d passages and faiss-cpu is not installed: exact search (pip install faiss-cpu)", len(embeddings)
        )
        return None


def _encode_fn(encoder, batch_size: int, grace_options: dict | None = None) -> Callable[..., np.ndarray]:
    """A sentence-transformers model or a GRACE embedder → texts to L2-normalised float32 vectors (``grace_options``:
    the encode settings the corpus was embedded with, so queries are embedded alike). With ``rationales=True`` it
    returns (vectors, the GRACE rationales or None per text)."""

    def encode(texts: list[str], rationales: bool = False):
        kwargs = {"batch_size": batch_size, "show_progress_bar": len(texts) > 4 * batch_size}
        written = [None] * len(texts)
        if hasattr(encoder, "grace_config"):
            vectors = encoder.encode(texts, **kwargs, **(grace_options or {}), return_rationales=rationales)
            if rationales:
                vectors, written = vectors
        else:
            vectors = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True, **kwargs)
        vectors = np.asarray(vectors, dtype=np.float32)
        return (vectors, list(written)) if rationales else vectors

    return encode


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file renamed into place: an interrupted write never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class DenseRetriever:
    """Inner-product search with a sentence-transformers model or a GRACE embedder; ``corpus``: passages in any form
    :func:`~retrieval_policies.common.passages.as_passages` accepts (strings, dicts, the corpus readers' records)."""

    def __init__(
        self,
        encoder,
        corpus,
        *,
        encoder_id: str,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        faiss_threshold: int = FAISS_THRESHOLD,
        embeddings: np.ndarray | None = None,
        grace_options: dict | None = None,
        chunk_size: int = 256,
    ):
        """``embeddings``: the corpus's vectors when already computed (``from_encoded``); ``grace_options``: the GRACE
        encode settings the queries are embedded with; ``chunk_size``: passages per saved chunk of the corpus."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.corpus, self.encoder_id, self.chunk_size = as_passages(corpus), encoder_id, chunk_size
        self._encode = _encode_fn(encoder, batch_size, grace_options)
        self.embeddings = self._corpus_embeddings(cache_dir) if embeddings is None else embeddings
        self._index = None
        if len(corpus) > faiss_threshold:
            self._index = _faiss_or_none(self.embeddings)

    @classmethod
    def from_encoded(
        cls,
        folder: str | os.PathLike,
        encoder=None,
        *,
        batch_size: int = 32,
        faiss_threshold: int = FAISS_THRESHOLD,
        **encoder_options,
    ) -> DenseRetriever:
        """Search the output of ``retrieval-policies grace encode`` without re-embedding the corpus. The queries are
        embedded by ``encoder`` (default: the manifest's model, with its settings; ``encoder_options`` are
        ``GraceEmbedder.from_pretrained``'s placement arguments)."""
        from .encoded import load_encoded

        passages, embeddings, manifest = load_encoded(folder)
        settings = manifest["settings"]
        if encoder is None:
            from ..assets import resolve_model
            from ..models.grace import GraceEmbedder

            encoder = GraceEmbedder.from_pretrained(resolve_model(settings["model"]), **encoder_options)
        options = {k: settings[k] for k in ("rationale", "max_new_tokens", "temperature", "top_p", "seed")}
        return cls(
            encoder,
            passages,
            encoder_id=f"{settings['model']}@{settings['revision']}",
            batch_size=batch_size,
            faiss_threshold=faiss_threshold,
            embeddings=embeddings,
            grace_options=options if hasattr(encoder, "grace_config") else None,
        )

    def cache_path(self, cache_dir: str | os.PathLike) -> Path:
        key = hashlib.sha256(f"{self.encoder_id}\x00{corpus_fingerprint(self.corpus)}".encode()).hexdigest()[:16]
        return Path(cache_dir) / f"embeddings-{key}.npy"

    def _corpus_embeddings(self, cache_dir) -> np.ndarray:
        """The corpus's vectors, encoded in chunks of ``chunk_size`` passages; with a ``cache_dir`` each chunk is saved
        as it is done (written to a temporary file, then renamed), so an interrupted build resumes at the first
        missing chunk, and the whole is saved as one file at the end."""
        path = self.cache_path(cache_dir) if cache_dir is not None else None
        if path is not None and path.is_file():
            logger.info("reusing corpus embeddings %s", path)
            return np.load(path)
        texts = [passage_text(p) for p in self.corpus]
        parts = path.with_suffix(".parts") if path is not None else None
        starts = range(0, len(texts), self.chunk_size)
        saved = {s for s in starts if parts is not None and (parts / f"{s:09d}.npy").is_file()}
        if saved:
            logger.info("resuming corpus embeddings: %d of %d chunks already in %s", len(saved), len(starts), parts)
        chunks, started, encoded = {}, time.perf_counter(), 0
        bar = tqdm(
            total=len(texts),
            initial=sum(min(self.chunk_size, len(texts) - s) for s in saved),
            unit="passage",
            desc="corpus embeddings",
            disable=len(starts) < 2,
        )
        for start in starts:
            if start in saved:
                chunks[start] = np.load(parts / f"{start:09d}.npy")
                continue
            chunks[start] = self._encode(texts[start : start + self.chunk_size])
            if encoded == 0 and len(texts) > 2 * self.chunk_size:  # after the first chunk encoded now: the cost
                left = len(texts) - sum(len(c) for c in chunks.values())
                per = (time.perf_counter() - started) / len(chunks[start])
                logger.warning(
                    "embedding %d passages at ~%.2f s each: ~%.0f min more%s; for a large corpus use "
                    "`retrieval-policies grace encode` (resumable, one slice per GPU) and search its output",
                    len(texts),
                    per,
                    left * per / 60,
                    " (resumable: chunks are kept)" if parts is not None else "",
                )
            encoded += len(chunks[start])
            if parts is not None:
                _save_atomically(parts / f"{start:09d}.npy", chunks[start])
            bar.update(len(chunks[start]))
        bar.close()
        embeddings = np.concatenate([chunks[s] for s in starts]) if texts else np.zeros((0, 0), np.float32)
        if path is not None:
            _save_atomically(path, embeddings)
            shutil.rmtree(parts, ignore_errors=True)
        return embeddings

    def search(self, questions: list[str], top_n: int = 20) -> list[list[tuple[int, float]]]:
        """(corpus index, score) of the ``top_n`` passages per question, best first."""
        return self.search_explained(questions, top_n)[0]

    def search_explained(self, questions: list[str], top_n: int = 20) -> tuple[list[list[tuple[int, float]]], list]:
        """``search``, plus what a GRACE encoder wrote about each question (None per question for other encoders)."""
        queries, rationales = self._encode(questions, rationales=True)
        return self._top(queries, top_n), rationales

    def _top(self, queries: np.ndarray, top_n: int) -> list[list[tuple[int, float]]]:
        top_n = min(top_n, len(self.corpus))
        if self._index is not None:
            scores, indices = self._index.search(queries, top_n)
            return [list(zip(map(int, i), map(float, s))) for i, s in zip(indices, scores)]
        scores = queries @ self.embeddings.T
        out = []
        for row in scores:
            top = np.argpartition(-row, top_n - 1)[:top_n]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(int(i), float(row[i])) for i in top])
        return out


class BM25Retriever:
    """BM25 (bm25s, English stopwords) over "title. text"; ``corpus`` as :class:`DenseRetriever` takes it.
    ``cache_dir``: the index is saved there (keyed by the corpus's content) and loaded on the next use."""

    def __init__(self, corpus, *, cache_dir: str | os.PathLike | None = None):
        import bm25s

        self.corpus, self._bm25s = as_passages(corpus), bm25s
        folder = Path(cache_dir) / f"bm25-{corpus_fingerprint(self.corpus)}" if cache_dir is not None else None
        self.loaded_from_cache = folder is not None and (folder / "params.index.json").is_file()
        if self.loaded_from_cache:
            logger.info("reusing the BM25 index %s", folder)
            self._retriever = bm25s.BM25.load(str(folder))
            return
        self._retriever = bm25s.BM25()
        self._retriever.index(
            bm25s.tokenize([passage_text(p) for p in self.corpus], stopwords="en", show_progress=False),
            show_progress=False,
        )
        if folder is not None:
            tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
            self._retriever.save(str(tmp))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process saved the same index first
                shutil.rmtree(tmp, ignore_errors=True)

    def search(self, questions: list[str], top_n: int = 20) -> list[list[tuple[int, float]]]:
        top_n = min(top_n, len(self.corpus))
        tokens = self._bm25s.tokenize(questions, stopwords="en", show_progress=False)
        indices, scores = self._retriever.retrieve(tokens, k=top_n, show_progress=False)
        return [list(zip(map(int, i), map(float, s))) for i, s in zip(indices, scores)]


def attach_ctxs(questions: list[dict], retriever, *, top_n: int = 20, queries: list[str] | None = None) -> list[dict]:
    """Copies of ``questions`` (each with ``question`` and ``answers``) with ``ctxs``: {id, title, text, score, has_answer}.
    ``queries``: what the retriever searches with, one per question (default: the questions themselves)."""
    if queries is not None and len(queries) != len(questions):
        raise ValueError(f"{len(queries)} queries for {len(questions)} questions")
    hits = retriever.search(queries if queries is not None else [q["question"] for q in questions], top_n=top_n)
    out = []
    for question, ranked in zip(questions, hits):
        answers = question.get("answers") or []
        ctxs = [
            {
                "id": str(retriever.corpus[i]["id"]),
                "title": retriever.corpus[i].get("title", ""),
                "text": retriever.corpus[i]["text"],
                "score": score,
                "has_answer": has_answer(retriever.corpus[i]["text"], answers),
            }
            for i, score in ranked
        ]
        out.append({**question, "ctxs": ctxs})
    return out
