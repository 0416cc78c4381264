"""The offline corpora, on the real packaged records."""

from __future__ import annotations

import re

import pytest

from retrieval_policies.corpora import (
    WordNet,
    WordNetNotFoundError,
    iter_lee_background,
    iter_wikipedia_articles,
    iter_wikipedia_passages,
    load_lee,
    strip_wiki_markup,
)
from retrieval_policies.corpora.wikipedia import split_passages

MARKUP_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|<ref|</?[a-z]+[ >]|&[a-z]+;|'''|^=+|\bthumb\|", re.MULTILINE)


@pytest.fixture(scope="module")
def articles():
    return list(iter_wikipedia_articles())


@pytest.fixture(scope="module")
def passages():
    return list(iter_wikipedia_passages())


def test_wikipedia_articles(articles):
    assert len(articles) == 106  # the redirects in the file are skipped
    assert len({a.id for a in articles}) == 106
    anarchism = articles[0]
    assert anarchism.title == "Anarchism" and anarchism.id == "12"
    assert anarchism.sections[0].heading == "Introduction"
    assert anarchism.sections[0].text.startswith(
        "Anarchism is a political philosophy that advocates self-governed societies"
    )
    headings = [s.heading for s in anarchism.sections]
    assert "Etymology and terminology" in headings and "Origins" in headings
    assert not {"References", "External links", "See also", "Further reading"} & {
        h for a in articles for s in a.sections for h in [s.heading]
    }


def test_wikipedia_passages_are_clean_and_sized(passages, articles):
    assert 4500 <= len(passages) <= 5500
    assert len({p.id for p in passages}) == len(passages)
    assert {p.title for p in passages} == {a.title for a in articles}
    lengths = [len(p.text.split()) for p in passages]
    assert min(lengths) >= 20 and max(lengths) < 120
    assert 80 <= sum(lengths) / len(lengths) <= 100
    dirty = [p.id for p in passages if MARKUP_RE.search(p.text)]
    assert dirty == []
    first = passages[0]
    assert (first.id, first.title, first.section) == ("12_0", "Anarchism", "Introduction")


def test_wikipedia_order_is_deterministic(passages):
    again = list(iter_wikipedia_passages())
    assert [p.id for p in again] == [p.id for p in passages] and again[100].text == passages[100].text


def test_strip_wiki_markup():
    raw = (
        "'''Paris''' is the [[capital city|capital]] of [[France]].<ref name=a>{{cite web|url=x}}</ref> "
        "It is {{convert|105|km}} long{{citation needed}}. [[File:Paris.jpg|thumb|The [[Seine]] at night]]\n"
        "* A [http://example.org list item] &nbsp;here\n{| class=wikitable\n|-\n| cell\n|}\n[[Category:Capitals]]<!-- hidden -->"
    )
    assert strip_wiki_markup(raw) == "Paris is the capital of France. It is 105 km long.\nA list item here"


def test_split_passages_merges_a_short_tail():
    words = [str(i) for i in range(210)]
    blocks = split_passages(words, 100, 20)
    assert [len(b) for b in blocks] == [100, 110] and sum(blocks, []) == words
    assert split_passages(words[:10], 100, 20) == []


def test_lee_benchmark():
    lee = load_lee()
    assert len(lee.documents) == 50
    assert lee.documents[0].startswith("The national executive of the strife-torn Democrats")
    assert all(lee.similarities[i][i] == 1.0 for i in range(50))
    assert all(lee.similarities[i][j] == lee.similarities[j][i] for i in range(50) for j in range(50))
    pairs = list(lee.pairs())
    assert len(pairs) == 1225 and pairs[0] == (0, 1, 0.3)
    assert all(0.0 <= score <= 1.0 for _, _, score in pairs)
    assert len(list(iter_lee_background())) == 300


def test_wordnet_reports_a_missing_install(tmp_path):
    with pytest.raises(WordNetNotFoundError, match="apt-get install wordnet-base"):
        WordNet(tmp_path)


@pytest.fixture(scope="module")
def wordnet():
    try:
        return WordNet()
    except WordNetNotFoundError as err:
        pytest.skip(str(err))


def test_wordnet_counts(wordnet):
    synsets = list(wordnet.synsets())
    assert len(synsets) == 117659
    assert sum(1 for s in synsets if s.examples) == 32880
    assert len({s.id for s in synsets}) == len(synsets)
    assert sum(1 for _ in wordnet.synsets("v")) == 13767


def test_wordnet_known_synsets(wordnet):
    dog = wordnet.synset("02084071-n")
    assert dog.name == "dog.n.01" and dog.lexname == "noun.animal"
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
    assert dog.definition.startswith("a member of the genus Canis")
    assert dog.examples == ("the dog barked all night",)
    banks = wordnet.senses("bank", "n")
    assert [s.name for s in banks[:2]] == ["bank.n.01", "depository_financial_institution.n.01"]
    assert banks[0].definition == "sloping land (especially the slope beside a body of water)"
    assert "he cashed a check at the bank" in banks[1].examples
    assert wordnet.senses("dog")[-1].name == "chase.v.01"
    with pytest.raises(KeyError):
        wordnet.synset("00000001-n")
