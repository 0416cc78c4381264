"""One passage type: every corpus reader's records, dataset rows and strings are accepted by every retriever and by
`grace encode`; local paths never reach a published card or training_settings.json."""

from __future__ import annotations

import json
import zlib
from itertools import islice

import numpy as np
import pytest

from retrieval_policies.common.local_paths import portable, portable_name, record_push
from retrieval_policies.common.passages import as_passage, as_passages
from retrieval_policies.corpora import WordNet, iter_lee_background, iter_wikipedia_articles, iter_wikipedia_passages
from retrieval_policies.retrieval import BM25Retriever, DenseRetriever, attach_ctxs


class HashingEncoder:
    """A deterministic bag-of-words encoder (no model): enough to see that a retriever read the right texts."""

    def __init__(self):
        self.seen = []

    def encode(self, texts, **kwargs):
        self.seen.extend(texts)
        out = np.zeros((len(texts), 512), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % 512] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_the_readers_records_work_with_bm25_as_the_issue_tried():
    passages = [p for p in islice(iter_wikipedia_passages(), 300)]
    retriever = BM25Retriever(passages)
    target = passages[123]
    (best, _), *_ = retriever.search([target.text], top_n=3)[0]
    assert retriever.corpus[best]["id"] == target.id and retriever.corpus[best]["title"] == target.title
    [question] = attach_ctxs([{"question": target.text, "answers": []}], retriever, top_n=2)
    assert question["ctxs"][0]["id"] == target.id


@pytest.mark.parametrize("reader", ["passages", "articles", "lee", "wordnet", "rows", "beir"])
def test_every_reader_gives_passages_every_retriever_accepts(reader):
    if reader == "passages":
        records = list(islice(iter_wikipedia_passages(), 50))
    elif reader == "articles":
        records = list(islice(iter_wikipedia_articles(), 5))
    elif reader == "lee":
        records = list(islice(iter_lee_background(), 20))
    elif reader == "wordnet":
        try:
            records = list(islice(WordNet().synsets("n"), 30))
        except Exception as err:  # noqa: BLE001 - WordNet is optional
            pytest.skip(f"WordNet not available: {err}")
    elif reader == "rows":
        records = [
            {"id": f"d{i}", "title": "T", "text": f"row {i} about {w}", "source": "x"}
            for i, w in enumerate("apples boats cats dunes eels ferns gulls hills inks jars".split())
        ]
    else:
        records = [
            {"_id": f"b{i}", "contents": f"beir style {w}"} for i, w in enumerate("kites lamps moss nets oaks".split())
        ]
    passages = as_passages(records)
    assert len(passages) == len(records) and all(isinstance(p["text"], str) and p["text"] for p in passages)
    assert len({p["id"] for p in passages}) == len(passages)
    encoder = HashingEncoder()
    dense, bm25 = DenseRetriever(encoder, records, encoder_id="hash"), BM25Retriever(records)
    query = passages[3]["text"]
    for retriever in (dense, bm25):
        hits = retriever.search([query], top_n=2)[0]
        assert retriever.corpus[hits[0][0]]["text"] == query
    if reader == "wordnet":  # a synset is its definition, titled by its lemmas
        assert passages[0]["text"] == records[0].definition and records[0].lemmas[0] in passages[0]["title"]
    if reader == "rows":
        assert passages[0]["source"] == "x"  # a row's other fields are kept


def test_bad_records_name_the_row_and_the_field():
    with pytest.raises(ValueError, match=r"corpus row 1: the dict has no 'text'"):
        as_passages([{"id": "a", "text": "fine"}, {"id": "b", "body": "no text"}])
    with pytest.raises(ValueError, match=r"corpus row 0: the dict has a int 'text'"):
        as_passage({"id": "a", "text": 3}, 0)
    with pytest.raises(ValueError, match=r"corpus row 2: a int is not a passage"):
        as_passages(["x", "y", 5])
    with pytest.raises(ValueError, match=r"corpus row 1: id 'a' is already the id of row 0"):
        as_passages([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(ValueError, match="corpus row 0"):
        DenseRetriever(HashingEncoder(), [{"title": "t"}], encoder_id="hash")


def test_local_paths_become_repo_ids_or_folder_names(tmp_path):
    pushed, unpushed = tmp_path / "grace-data", tmp_path / "other-data"
    pushed.mkdir()
    unpushed.mkdir()
    record_push(pushed, "org/grace-data", kind="dataset", revision="main", commit="abc")
    assert portable_name(str(pushed)) == "org/grace-data" and portable_name(str(unpushed)) == "other-data"
    assert portable_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_name("https://example.org/a/b") == "https://example.org/a/b" and portable_name(0.5) == 0.5
    settings = portable(
        {
            "script": {"dataset_name": str(pushed), "lr": 1e-5},
            "training": {"output_dir": "/tmp/x/run-7", "logging_dir": "~/runs/r", "tags": [str(unpushed)]},
        }
    )
    assert settings == {
        "script": {"dataset_name": "org/grace-data", "lr": 1e-5},
        "training": {"output_dir": "run-7", "logging_dir": "r", "tags": ["other-data"]},
    }


def test_cards_and_training_settings_carry_no_local_paths(tmp_path):
    """A model folder whose training_settings.json names local folders (as an older export wrote it): neither the
    rendered card nor a training_settings.json written by export carries any of this machine's paths."""
    from retrieval_policies.publishing.cards import _settings

    data = tmp_path / "work" / "grace-data"
    data.mkdir(parents=True)
    record_push(data, "org/grace-data", kind="dataset", revision="main", commit="abc")
    folder = tmp_path / "work" / "model"
    folder.mkdir()
    (folder / "training_settings.json").write_text(
        json.dumps(
            {
                "stage": "grpo-supervised",
                "script": {"dataset_name": str(data)},
                "model": {"model_name_or_path": str(tmp_path / "cache" / "SmolLM2-135M-Instruct")},
                "training": {"learning_rate": 1e-5, "output_dir": str(folder)},
            }
        )
    )
    shown = _settings(folder, ("model_name_or_path", "dataset_name", "learning_rate"))
    assert shown == {
        "stage": "grpo-supervised",
        "model_name_or_path": "SmolLM2-135M-Instruct",
        "dataset_name": "org/grace-data",
        "learning_rate": 1e-5,
    }
    assert str(tmp_path) not in json.dumps(shown)
