"""Wikipedia cloze QA: real questions made offline from the Wikipedia extract (the DynamicRAG training/eval stand-in).

How questions are chosen, per section of every article, in file order:
1. the section is split into sentences; a sentence qualifies when it has 8–40 words;
2. its salient spans are found: years (1000–2099), full dates ("4 July 1776", "July 4, 1776"), numbers with a unit
   or of three or more digits, and names (two to four capitalised words, not at the sentence start);
3. the sentence is used only when it holds exactly **one** salient span, that span occurs once in it and is not
   part of the article title: the span is blanked out ("_____") and becomes the answer;
4. at most ``per_section`` questions per section (the first qualifying sentences), so questions spread over topics.
The question reads ``"{article title}: {sentence with the blank}"``. The split (train / validation / test) is by
question id hash (80 / 10 / 10), so test questions are never in training data.

A cloze question is a sentence of its own passage, so any lexical retriever puts that passage first (BM25: 91% of
the questions): a reranker then has nothing to learn. ``partial_query`` is a weaker first stage that finds the
topic but not the exact passage: it sees the title and a few words of the sentence, chosen by a hash of the
question id (never by the answer); ``passage_chunks`` cuts passages into shorter ones at sentence ends.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..corpora import WikiArticle, iter_wikipedia_articles

BLANK = "_____"
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_SPAN_PATTERNS = [
    ("date", re.compile(rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{3,4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{3,4}})\b")),
    ("year", re.compile(r"\b(?:1\d{3}|20\d{2})\b")),
    (
        "number",
        re.compile(
            r"\b\d{1,3}(?:,\d{3})+\b|\b\d+(?:\.\d+)? (?:percent|million|billion|km|miles|metres|meters|feet|kilometres|people|years)\b|\b\d{3,}\b"
        ),
    ),
    (
        "name",
        re.compile(
            r"(?<!^)(?<![.!?] )\b(?:[A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?: (?:[A-Z][a-z]+(?:-[A-Z][a-z]+)?|de|von|van|of)){1,3}\b(?<! of)(?<! de)"
        ),
    ),
]
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


@dataclass(frozen=True)
class ClozeQuestion:
    id: str
    question: str
    answers: tuple[str, ...]
    answer_type: str
    article_id: str
    title: str
    section: str
    sentence: str
    split: str


def salient_spans(sentence: str) -> list[tuple[str, int, int, str]]:
    """(type, start, end, text) of salient spans; a span inside a longer one (a year inside a date) is dropped."""
    found = []
    for kind, pattern in _SPAN_PATTERNS:
        for match in pattern.finditer(sentence):
            found.append((kind, match.start(), match.end(), match.group(0)))
    found.sort(key=lambda s: (s[1], -(s[2] - s[1])))
    kept = []
    for span in found:
        if not any(span[1] >= k[1] and span[2] <= k[2] for k in kept):
            kept.append(span)
    return kept


def split_of(question_id: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _questions_of(article: WikiArticle, per_section: int) -> Iterator[ClozeQuestion]:
    index = 0
    for section in article.sections:
        made = 0
        for paragraph in section.text.split("\n"):
            for sentence in _SENTENCE_SPLIT.split(paragraph):
                if made >= per_section:
                    break
                words = sentence.split()
                if not 8 <= len(words) <= 40 or BLANK in sentence:
                    continue
                spans = salient_spans(sentence)
                if len(spans) != 1:
                    continue
                kind, start, end, text = spans[0]
                if sentence.count(text) != 1 or text.lower() in article.title.lower():
                    continue
                question_id = f"cloze-{article.id}-{index}"
                index += 1
                made += 1
                cloze = sentence[:start] + BLANK + sentence[end:]
                yield ClozeQuestion(
                    question_id,
                    f"{article.title}: {cloze}",
                    (text,),
                    kind,
                    article.id,
                    article.title,
                    section.heading,
                    sentence,
                    split_of(question_id),
                )


def partial_query(question_id: str, question: str, words: int) -> str:
    """``"{title}: {words} words of the sentence"`` (in their order, the blank never among them), chosen by a hash of
    ``question_id``: the same query on every run, and nothing in the choice depends on the answer."""
    title, _, sentence = question.partition(": ")
    tokens = [w for w in sentence.split() if BLANK not in w]
    rng = random.Random(int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:8], "big"))
    keep = sorted(rng.sample(range(len(tokens)), min(words, len(tokens))))
    return f"{title}: " + " ".join(tokens[i] for i in keep)


def passage_chunks(passage: dict, max_words: int) -> list[dict]:
    """``passage`` cut at sentence ends into pieces of at most ``max_words`` words (a longer sentence stays whole);
    ids ``"{id}#{n}"``, the title kept."""
    pieces, current = [], []
    for sentence in _SENTENCE_SPLIT.split(passage["text"].strip()):
        if current and len(" ".join([*current, sentence]).split()) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        pieces.append(" ".join(current))
    return [{**passage, "id": f"{passage['id']}#{n}", "text": text} for n, text in enumerate(pieces)]


def iter_cloze_questions(*, per_section: int = 2, max_articles: int | None = None) -> Iterator[ClozeQuestion]:
    for n, article in enumerate(iter_wikipedia_articles()):
        if max_articles is not None and n >= max_articles:
            return
        yield from _questions_of(article, per_section)
