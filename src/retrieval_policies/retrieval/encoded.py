"""An encoded corpus on disk (Parquet shards of ids, texts, rationales and vectors, plus a manifest), as
``retrieval-policies grace encode`` writes it, read back for search; and FAISS indexes over its vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "retrieval-policies/grace-encoded-corpus@1"


def load_encoded(folder: str | os.PathLike, *, with_rationales: bool = False) -> tuple[list[dict], np.ndarray, dict]:
    """(passages ``{"id", "text"[, "rationale"]}``, float32 embeddings [n, dim], manifest) of a finished output."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(
            f"{folder} has no {MANIFEST}: not a finished `grace encode` output (rerun it to resume)"
        )
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    passages, blocks = [], []
    for shard in manifest["shards"]:
        columns = ["id", "text", "embedding"] + (["rationale"] if with_rationales else [])
        table = pq.read_table(folder / shard["file"], columns=columns)
        flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        blocks.append(flat.reshape(len(table), manifest["embedding_dim"]).astype(np.float32, copy=False))
        rows = table.select([c for c in columns if c != "embedding"]).to_pylist()
        passages.extend(rows)
    embeddings = np.concatenate(blocks) if blocks else np.zeros((0, manifest["embedding_dim"]), np.float32)
    return passages, embeddings, manifest


def faiss_index(embeddings: np.ndarray, *, hnsw_above: int = 1_000_000):
    """A FAISS inner-product index over the vectors (exact below ``hnsw_above`` rows, HNSW above); needs faiss-cpu."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("a FAISS index needs faiss: pip install faiss-cpu (or faiss-gpu)") from err
    dim = embeddings.shape[1]
    index = (
        faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        if len(embeddings) > hnsw_above
        else faiss.IndexFlatIP(dim)
    )
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index
