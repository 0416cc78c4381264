"""FOLDOC, the Free On-line Dictionary of Computing, from Debian's ``dict-foldoc`` package (``/usr/share/dictd``).

A source no training data of this project touches (computing terms, not WordNet, Wikipedia or Lee), so a task built
from it measures transfer rather than generalisation inside the training generator's distribution. The dictd format:
``foldoc.index`` has one ``headword<TAB>offset<TAB>length`` line per entry (numbers in dictd's base 64), and the
entries are byte ranges of the gzip-compressed ``foldoc.dict.dz``.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._paths import CorpusNotAvailableError

FOLDOC_ENV = "RETRIEVAL_POLICIES_DICTD_DIR"
DEFAULT_DICTD_DIR = "/usr/share/dictd"
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_CATEGORY_RE = re.compile(r"^<[^>]*>\s*")
_LEADING_ABBREVIATION_RE = re.compile(r"^\([^)]*\)\s*")
_PRONUNCIATION_RE = re.compile(r"^/[^/]*/\s*")
_LINK_RE = re.compile(r"\{([^{}]*)\}")
_SENTENCE_END_RE = re.compile(r"(?<=[a-z0-9)\]])\.(\s|$)")


@dataclass(frozen=True)
class FoldocEntry:
    term: str
    definition: str  # the first sentence of the first sense, cross-reference braces removed


def _number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def foldoc_files(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    folder = Path(folder or os.environ.get(FOLDOC_ENV, DEFAULT_DICTD_DIR))
    index, data = folder / "foldoc.index", folder / "foldoc.dict.dz"
    if not (index.is_file() and data.is_file()):
        raise CorpusNotAvailableError(
            f"FOLDOC not found in {folder}: install Debian's dict-foldoc (apt-get install dict-foldoc; `make setup` "
            f"does) or point {FOLDOC_ENV} at a folder with foldoc.index and foldoc.dict.dz"
        )
    return index, data


def first_sentence(body: str) -> str:
    """The first sentence of an entry's first sense: the headword lines, the ``<category>`` tag, a leading
    ``(ABBREVIATION)``, a ``/pronunciation/`` and the ``{cross-reference}`` braces removed; "" for an entry without prose."""
    paragraphs = [" ".join(p.split()) for p in body.split("\n\n")]
    prose = next((p for p in paragraphs[1:] if p.startswith("<") or p[:1].isalpha() or p.startswith("1.")), "")
    prose = re.sub(r"^1\.\s*", "", _PRONUNCIATION_RE.sub("", _CATEGORY_RE.sub("", prose)))
    prose = _LINK_RE.sub(r"\1", _CATEGORY_RE.sub("", _LEADING_ABBREVIATION_RE.sub("", prose)))
    match = _SENTENCE_END_RE.search(prose)
    return (prose[: match.start() + 1] if match else prose).strip()


def iter_foldoc(folder: str | os.PathLike | None = None) -> Iterator[FoldocEntry]:
    """Every entry with a definition sentence, in index order; aliases pointing at the same text come once."""
    index, data = foldoc_files(folder)
    raw = gzip.open(data).read()
    seen: set[int] = set()
    for line in index.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00database"):
            continue
        offset, length = _number(parts[1]), _number(parts[2])
        if offset in seen:
            continue
        seen.add(offset)
        body = raw[offset : offset + length].decode("utf-8", errors="replace")
        term = body.split("\n", 1)[0].strip()
        definition = first_sentence(body)
        if term and definition:
            yield FoldocEntry(term=term, definition=definition)
