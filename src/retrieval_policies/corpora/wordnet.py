"""WordNet 3.0 from Debian's ``wordnet-base`` package (``/usr/share/wordnet``), read without NLTK.

Each synset gives lemmas, a definition, usage examples and a part of speech: enough for supervised triplets
(an example sentence → its sense's definition, other senses of the same word as hard negatives).
The database format is documented in wndb(5WN).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ._paths import CorpusNotAvailableError

WORDNET_ENV = "RETRIEVAL_POLICIES_WORDNET_DIR"
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# lexnames(5WN): the lexicographer file of each lex_filenum.
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
_ADJ_MARKER_RE = re.compile(r"\((a|p|ip)\)$")
_EXAMPLE_RE = re.compile(r'"([^"]*)"')


class WordNetNotFoundError(CorpusNotAvailableError):
    pass


@dataclass(frozen=True)
class Synset:
    id: str  # "<8-digit offset>-<pos>", e.g. "02084071-n"
    name: str  # NLTK-style "<first lemma>.<pos>.<sense number>", e.g. "dog.n.01"
    pos: str  # n, v, a, s (satellite adjective) or r
    lexname: str  # e.g. "noun.animal"
    lemmas: tuple[str, ...]  # underscores replaced by spaces
    definition: str
    examples: tuple[str, ...]


def _parse_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """``definition; "example one"; "example two"`` → the definition and the quoted examples."""
    gloss = gloss.strip()
    first_quote = re.search(r'(^|;\s*)"', gloss)
    if first_quote is None:
        return gloss.rstrip("; "), ()
    definition = gloss[: first_quote.start()].strip().rstrip(";").strip()
    examples = tuple(e.strip() for e in _EXAMPLE_RE.findall(gloss[first_quote.start() :]) if e.strip())
    return definition, examples


class WordNet:
    """Random and sequential access to the WordNet database files."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or os.environ.get(WORDNET_ENV) or DEFAULT_WORDNET_DIR)
        missing = [f"data.{name}" for name in POS_FILES.values() if not (self.root / f"data.{name}").is_file()]
        missing += [f"index.{name}" for name in POS_FILES.values() if not (self.root / f"index.{name}").is_file()]
        if missing:
            raise WordNetNotFoundError(
                f"WordNet is not installed: {', '.join(missing)} missing in {self.root}. Install Debian's wordnet-base "
                f"(`apt-get install wordnet-base`; `make` does it where apt is available) or set {WORDNET_ENV} to a "
                "folder holding the WordNet 3.0 dict files."
            )

    def __repr__(self) -> str:
        return f"WordNet(root={str(self.root)!r})"

    @cached_property
    def _index(self) -> dict[tuple[str, str], tuple[int, ...]]:
        """(lemma, file pos) → synset offsets in sense order (most frequent first)."""
        index = {}
        for pos, name in POS_FILES.items():
            with open(self.root / f"index.{name}", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(" "):
                        continue
                    fields = line.split()
                    synset_count = int(fields[2])
                    index[(fields[0], pos)] = tuple(int(x) for x in fields[-synset_count:])
        return index

    def _parse(self, line: str, file_pos: str) -> Synset:
        data, _, gloss = line.partition(" | ")
        fields = data.split()
        offset, lex_filenum, ss_type, word_count = int(fields[0]), int(fields[1]), fields[2], int(fields[3], 16)
        raw_lemmas = [_ADJ_MARKER_RE.sub("", fields[4 + 2 * i]) for i in range(word_count)]
        first = raw_lemmas[0].lower()
        senses = self._index.get((first, file_pos), ())
        sense_number = senses.index(offset) + 1 if offset in senses else 1
        definition, examples = _parse_gloss(gloss)
        return Synset(
            id=f"{offset:08d}-{ss_type}",
            name=f"{first}.{ss_type}.{sense_number:02d}",
            pos=ss_type,
            lexname=LEXNAMES[lex_filenum] if lex_filenum < len(LEXNAMES) else str(lex_filenum),
            lemmas=tuple(lemma.replace("_", " ") for lemma in raw_lemmas),
            definition=definition,
            examples=examples,
        )

    def synsets(self, pos: str | None = None) -> Iterator[Synset]:
        """All synsets (nouns, verbs, adjectives, adverbs; file order), or those of one ``pos`` (n/v/a/r)."""
        for file_pos, name in POS_FILES.items():
            if pos is not None and file_pos != ("a" if pos == "s" else pos):
                continue
            with open(self.root / f"data.{name}", encoding="utf-8") as f:
                for line in f:
                    if not line.startswith(" "):
                        synset = self._parse(line.rstrip("\n"), file_pos)
                        if pos is None or pos == "a" or synset.pos == pos:
                            yield synset

    def synset(self, synset_id: str) -> Synset:
        """The synset with id ``"<offset>-<pos>"``; the offset is a byte offset into the data file."""
        offset, _, pos = synset_id.partition("-")
        file_pos = "a" if pos == "s" else pos
        if file_pos not in POS_FILES or not offset.isdigit():
            raise KeyError(f"invalid synset id {synset_id!r}: expected '<8-digit offset>-<n|v|a|s|r>'")
        with open(self.root / f"data.{POS_FILES[file_pos]}", "rb") as f:
            f.seek(int(offset))
            line = f.readline().decode("utf-8")
        if not line.startswith(offset.zfill(8)):
            raise KeyError(f"no synset {synset_id!r} in {self.root}")
        return self._parse(line.rstrip("\n"), file_pos)

    def senses(self, lemma: str, pos: str | None = None) -> list[Synset]:
        """The synsets of ``lemma`` (spaces or underscores), most frequent sense first, for one or every pos."""
        key = lemma.strip().lower().replace(" ", "_")
        out = []
        for file_pos in POS_FILES:
            if pos is None or file_pos == ("a" if pos == "s" else pos):
                out += [self.synset(f"{offset:08d}-{file_pos}") for offset in self._index.get((key, file_pos), ())]
        return out
