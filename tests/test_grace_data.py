"""GRACE dataset builders on small real samples: WordNet and Wikipedia triplets, Wikipedia sentences, the held-out
exclusion, the length filter, de-duplication and bad rows."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval_policies.corpora import WordNet
from retrieval_policies.evaluation.local_tasks import heldout_ids, heldout_texts, normalize_text
from retrieval_policies.grace.data import (
    BadRowError,
    build_rows,
    wikipedia_sentences,
    wikipedia_triplets,
    wordnet_definition_triplets,
    wordnet_triplets,
)

ROOT = Path(__file__).resolve().parents[1]


def test_wordnet_triplets_pair_an_example_with_its_sense_and_another_sense():
    wordnet = WordNet()
    for row in itertools.islice(wordnet_triplets(), 50):
        sense, other = (wordnet.synset(i) for i in row["_keys"]["wordnet_synsets"])
        assert row["query"] in sense.examples and row["positive"] == sense.definition
        assert row["negative"] == other.definition and other.id != sense.id
        assert set(sense.lemmas) & set(other.lemmas)  # another sense of the same word


def test_wordnet_definition_triplets_pair_a_definition_with_its_words_and_another_senses_words():
    wordnet = WordNet()
    rows = list(itertools.islice(wordnet_definition_triplets(), 50))
    for row in rows:
        sense, other = (wordnet.synset(i) for i in row["_keys"]["wordnet_synsets"])
        assert row["query"] == sense.definition and row["positive"] == ", ".join(sense.lemmas)
        assert row["negative"] == ", ".join(other.lemmas) != row["positive"]
        assert {w.lower() for w in sense.lemmas} & {
            w.lower() for w in other.lemmas
        }  # another sense of one of its words
    assert len({r["_keys"]["wordnet_synsets"][0][-1] for r in rows}) >= 3  # shuffled: several parts of speech
    assert rows == list(itertools.islice(wordnet_definition_triplets(), 50))  # seeded
    assert rows != list(itertools.islice(wordnet_definition_triplets(seed=7), 50))


def test_wikipedia_triplets_use_a_section_and_another_section_of_the_same_article():
    for row in itertools.islice(wikipedia_triplets(), 50):
        (section, other_section), (passage, other) = (
            row["_keys"]["wikipedia_sections"],
            row["_keys"]["wikipedia_passages"],
        )
        assert section != other_section and section.split("/")[0] == other_section.split("/")[0]
        assert passage.split("_")[0] == other.split("_")[0]  # same article
        assert row["query"].endswith(": " + section.split("/", 1)[1])


def test_wikipedia_sentences_are_sentences():
    sentences = list(itertools.islice(wikipedia_sentences(), 200))
    assert all(len(s["text"].split()) >= 6 for s in sentences)
    assert sum(s["text"].endswith((".", "!", "?", '"')) for s in sentences) > 150


def test_heldout_items_are_never_kept(tokenizer):
    ids, texts = heldout_ids(), heldout_texts()
    synset = sorted(ids["wordnet_synsets"])[0]
    heldout_passage_text = next(t for t in sorted(texts) if len(t.split()) > 30)
    rows = [
        {
            "query": "q1",
            "positive": "p1",
            "negative": "n1",
            "_keys": {"wordnet_synsets": ("x", synset)},
        },  # negative's synset
        {"query": "q2", "positive": heldout_passage_text.upper(), "negative": "n2"},  # an eval text (case-insensitive)
        {"query": "q3", "positive": "p3", "negative": "n3", "_keys": {"wordnet_synsets": ("y", "z")}},
    ]
    splits, dropped = build_rows(rows, mode="supervised", tokenizer=tokenizer, heldout=(ids, texts), validation_share=0)
    assert [r["query"] for r in splits["train"]] == ["q3"] and dropped == {"held out for evaluation": 2}


def test_bad_rows_are_dropped_and_counted_or_fail_under_strict(tokenizer):
    rows = [
        {"query": "q", "positive": "p", "negative": "n"},
        {"query": "q", "positive": "p"},
        {"query": "  ", "positive": "p", "negative": "n"},
        {"query": "q", "positive": 7, "negative": "n"},
        {"query": "q", "positive": "p", "negative": "n"},
    ]
    splits, dropped = build_rows(rows, mode="supervised", tokenizer=tokenizer, validation_share=0)
    assert len(splits["train"]) == 1
    assert dropped == {
        "missing 'negative'": 1,
        "empty 'query'": 1,
        "'positive' is int, not a string": 1,
        "duplicate": 1,
    }
    with pytest.raises(BadRowError, match=r"row 2: missing 'negative'"):
        build_rows(rows, mode="supervised", tokenizer=tokenizer, strict=True)


def test_long_main_prompts_are_dropped_with_the_backbones_tokenizer(tokenizer):
    rows = [{"text": "short sentence here"}, {"text": " ".join(["word"] * 200)}]
    splits, dropped = build_rows(
        rows, mode="unsupervised", tokenizer=tokenizer, max_prompt_tokens=100, validation_share=0
    )
    assert [r["text"] for r in splits["train"]] == ["short sentence here"]
    assert dropped == {"main prompt (text) longer than 100 tokens": 1}


def test_split_is_seeded(tokenizer):
    rows = [{"text": f"sentence number {i}"} for i in range(40)]
    a, _ = build_rows(rows, mode="unsupervised", tokenizer=tokenizer, validation_share=0.25, seed=1)
    b, _ = build_rows(rows, mode="unsupervised", tokenizer=tokenizer, validation_share=0.25, seed=1)
    c, _ = build_rows(rows, mode="unsupervised", tokenizer=tokenizer, validation_share=0.25, seed=2)
    assert a == b and a != c and len(a["validation"]) == 10 and len(a["train"]) == 30


@pytest.mark.slow
def test_triplet_builder_offline_end_to_end(tmp_path):
    out = tmp_path / "triplets"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "dataset_builders" / "grace_triplets.py"),
            "--source",
            "offline",
            "--max-rows",
            "300",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "kept    triplets/train" in result.stdout and "dropped held out for evaluation" in result.stdout
    from datasets import load_dataset

    train = load_dataset(str(out), "triplets", split="train")
    validation = load_dataset(str(out), "triplets", split="validation")
    assert len(train) + len(validation) == 300 and set(train["source"]) == {"wordnet", "wikipedia"}
    texts = heldout_texts()
    assert not any(normalize_text(r[k]) in texts for r in train for k in ("query", "positive", "negative"))
    card = (out / "README.md").read_text()
    assert "config_name: triplets" in card and "grace_triplets.py" in card
