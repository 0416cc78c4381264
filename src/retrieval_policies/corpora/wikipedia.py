"""The Wikipedia extract shipped in the gensim wheel: 106 real articles → sections → ~100-word passages.

The file is a MediaWiki XML export (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``);
redirects and non-article namespaces are skipped. Passages follow the DPR convention (consecutive ~100-word blocks)
but never cross a section boundary, so each passage has one article title and one section heading.
"""

from __future__ import annotations

import bz2
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._paths import gensim_test_data
from .wikitext import HEADING_RE, clean_heading, strip_wiki_markup

WIKIPEDIA_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEAD_SECTION = "Introduction"
# Sections that hold references and navigation rather than prose.
SKIPPED_SECTIONS = frozenset(
    {
        "references",
        "notes",
        "see also",
        "external links",
        "further reading",
        "bibliography",
        "sources",
        "citations",
        "footnotes",
        "notes and references",
        "references and notes",
        "works cited",
        "primary sources",
        "secondary sources",
        "selected bibliography",
        "general references",
    }
)


@dataclass(frozen=True)
class WikiSection:
    heading: str
    level: int  # 1 for the lead, 2 for "==", 3 for "===", ...
    text: str  # paragraphs separated by newlines


@dataclass(frozen=True)
class WikiArticle:
    id: str
    title: str
    sections: tuple[WikiSection, ...]

    @property
    def url(self) -> str:
        return "https://en.wikipedia.org/wiki/" + self.title.replace(" ", "_")

    @property
    def text(self) -> str:
        return "\n".join(section.text for section in self.sections)


@dataclass(frozen=True)
class WikiPassage:
    id: str  # "<article id>_<index within the article>"
    article_id: str
    title: str
    section: str
    text: str


def wikipedia_path() -> Path:
    return gensim_test_data(WIKIPEDIA_FILE)


def _split_sections(wikitext: str) -> Iterator[WikiSection]:
    """Sections in document order; a skipped section also hides its subsections."""
    matches = list(HEADING_RE.finditer(wikitext))
    bounds = [(LEAD_SECTION, 1, 0)] + [(m.group(2), len(m.group(1)), m.end()) for m in matches]
    ends = [m.start() for m in matches] + [len(wikitext)]
    skip_below: int | None = None
    for (raw_heading, level, start), end in zip(bounds, ends):
        heading = clean_heading(raw_heading) if level > 1 else raw_heading
        if skip_below is not None and level > skip_below:
            continue
        skip_below = level if heading.lower() in SKIPPED_SECTIONS else None
        if skip_below is not None:
            continue
        text = strip_wiki_markup(wikitext[start:end])
        if text:
            yield WikiSection(heading, level, text)


def iter_wikipedia_articles(path: str | Path | None = None) -> Iterator[WikiArticle]:
    """Articles (namespace 0, not redirects) in file order, with markup removed."""
    path = Path(path) if path else wikipedia_path()
    with bz2.open(path) as stream:
        namespace = ""
        for _, element in ET.iterparse(stream, events=("end",)):
            tag = element.tag
            if not namespace and tag.startswith("{"):
                namespace = tag[: tag.index("}") + 1]
            if tag != f"{namespace}page":
                continue
            is_article = element.findtext(f"{namespace}ns") == "0" and element.find(f"{namespace}redirect") is None
            if is_article:
                sections = tuple(_split_sections(element.findtext(f"{namespace}revision/{namespace}text") or ""))
                if sections:
                    yield WikiArticle(
                        element.findtext(f"{namespace}id"), element.findtext(f"{namespace}title"), sections
                    )
            element.clear()


def split_passages(words: list[str], words_per_passage: int = 100, min_words: int = 20) -> list[list[str]]:
    """Consecutive blocks of ``words_per_passage`` words; a tail shorter than ``min_words`` joins the block before it."""
    if len(words) < min_words:
        return []
    blocks = [words[i : i + words_per_passage] for i in range(0, len(words), words_per_passage)]
    if len(blocks) > 1 and len(blocks[-1]) < min_words:
        tail = blocks.pop()
        blocks[-1] = blocks[-1] + tail
    return blocks


def iter_wikipedia_passages(
    path: str | Path | None = None, *, words_per_passage: int = 100, min_words: int = 20
) -> Iterator[WikiPassage]:
    """~``words_per_passage``-word passages with their article title and section heading, in file order."""
    for article in iter_wikipedia_articles(path):
        index = 0
        for section in article.sections:
            for block in split_passages(section.text.split(), words_per_passage, min_words):
                yield WikiPassage(f"{article.id}_{index}", article.id, article.title, section.heading, " ".join(block))
                index += 1
