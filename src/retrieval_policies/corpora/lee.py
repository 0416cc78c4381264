"""The Lee document-similarity benchmark shipped in the gensim wheel.

50 short Australian news documents (``lee.cor``) and the mean of human pairwise similarity ratings, rescaled to
0–1 (``similarities0-1.txt``, stored as an upper-triangular 50×50 matrix). Lee, Pincombe & Welsh (2005). The 300
``lee_background.cor`` documents are from the same source and are meant for unsupervised training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from ._paths import CorpusNotAvailableError, gensim_test_data

LEE_DOCUMENTS_FILE = "lee.cor"
LEE_SIMILARITIES_FILE = "similarities0-1.txt"
LEE_BACKGROUND_FILE = "lee_background.cor"


@dataclass(frozen=True)
class LeeBenchmark:
    documents: tuple[str, ...]
    similarities: tuple[tuple[float, ...], ...]  # symmetric, 1.0 on the diagonal

    def pairs(self) -> Iterator[tuple[int, int, float]]:
        """Every unordered pair of distinct documents with its human score (1225 pairs for 50 documents)."""
        for i, j in combinations(range(len(self.documents)), 2):
            yield i, j, self.similarities[i][j]


def _read_documents(path: Path) -> tuple[str, ...]:
    return tuple(
        line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
    )


def load_lee() -> LeeBenchmark:
    documents = _read_documents(gensim_test_data(LEE_DOCUMENTS_FILE))
    path = gensim_test_data(LEE_SIMILARITIES_FILE)
    rows = [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]
    n = len(documents)
    if len(rows) != n or any(len(row) != n for row in rows):
        raise CorpusNotAvailableError(
            f"{path}: expected a {n}×{n} matrix matching {LEE_DOCUMENTS_FILE}, got {len(rows)} rows"
        )
    # The file fills the upper triangle only; mirror it.
    matrix = tuple(tuple(rows[min(i, j)][max(i, j)] for j in range(n)) for i in range(n))
    return LeeBenchmark(documents, matrix)


def iter_lee_background() -> Iterator[str]:
    yield from _read_documents(gensim_test_data(LEE_BACKGROUND_FILE))
