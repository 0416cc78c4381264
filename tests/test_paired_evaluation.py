"""Paired comparisons from mteb's saved predictions (the evidence's confidence intervals), and the FOLDOC task that
measures transfer to a source no training data touches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrieval_policies.corpora import CorpusNotAvailableError
from retrieval_policies.corpora.foldoc import first_sentence, foldoc_files
from retrieval_policies.evaluation.paired import compare, load_predictions, ndcg_at_10


def _save(folder, task: str, predictions) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"mteb_model_meta": {"name": "local/x"}, "default": {"test": predictions}}
    (folder / f"{task}_predictions.json").write_text(json.dumps(saved))


def test_per_query_ndcg_by_hand():
    relevant = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1}, "q3": {"d1": 1}}
    predictions = {"q1": {"d2": 0.9, "d1": 0.8}, "q2": {"d3": 0.7, "d1": 0.6, "d4": 0.5}}
    scores = ndcg_at_10(predictions, relevant)
    assert scores["q1"] == pytest.approx(1 / math.log2(3))  # the relevant document second
    ideal = 1 + 1 / math.log2(3)
    assert scores["q2"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert scores["q3"] == 0.0  # nothing retrieved: 0, not left out


def test_saved_predictions_are_read_and_a_missing_file_is_named(tmp_path):
    _save(tmp_path, "LocalLeeSTS", {"cosine_scores": [0.1]})
    assert load_predictions(tmp_path, "LocalLeeSTS") == {"cosine_scores": [0.1]}
    with pytest.raises(FileNotFoundError, match="LocalFoldocDefinitionRetrieval_predictions.json"):
        load_predictions(tmp_path, "LocalFoldocDefinitionRetrieval")


def test_an_sts_comparison_bootstraps_the_correlation_over_pairs(tmp_path):
    from retrieval_policies.evaluation.local_tasks import LocalLeeSTS

    task = LocalLeeSTS()
    task.load_data()
    gold = np.array([task._normalize(s) for s in task.dataset["test"]["score"]])
    noisy = gold + np.random.default_rng(0).normal(0, 0.3, len(gold))
    _save(tmp_path / "base", "LocalLeeSTS", {"cosine_scores": noisy.tolist()})
    _save(tmp_path / "better", "LocalLeeSTS", {"cosine_scores": gold.tolist()})
    result = compare("LocalLeeSTS", tmp_path / "base", [tmp_path / "better"], resamples=200)
    assert result["items"] == 1225 and result["unit"] == "pairs" and result["systems"] == [pytest.approx(1.0)]
    assert result["difference"] == pytest.approx(1.0 - result["baseline"]) and result["ci95"][0] > 0
    assert result["sign_test"] is None
    _save(tmp_path / "short", "LocalLeeSTS", {"cosine_scores": gold[:10].tolist()})
    with pytest.raises(ValueError, match="1225 pairs"):
        compare("LocalLeeSTS", tmp_path / "base", [tmp_path / "short"], resamples=10)


def test_a_retrieval_comparison_is_per_query_over_the_seeds(tmp_path):
    from retrieval_policies.evaluation.local_tasks import LocalWordNetDefinitionRetrieval

    task = LocalWordNetDefinitionRetrieval()
    try:
        task.load_data()
    except CorpusNotAvailableError as err:
        pytest.skip(str(err))
    relevant = task.dataset["default"]["test"]["relevant_docs"]
    first = {q: {next(iter(docs)): 0.9, "other": 0.5} for q, docs in relevant.items()}
    second = {q: {"other": 0.9, next(iter(docs)): 0.5} for q, docs in relevant.items()}
    _save(tmp_path / "base", task.metadata.name, second)
    _save(tmp_path / "seed-1", task.metadata.name, first)
    _save(tmp_path / "seed-2", task.metadata.name, second)
    result = compare(task.metadata.name, tmp_path / "base", [tmp_path / "seed-1", tmp_path / "seed-2"], resamples=100)
    gain = (1 - 1 / math.log2(3)) / 2  # one seed ranks every relevant synset first, the other second
    assert result["unit"] == "queries" and result["items"] == len(relevant) == 100
    assert result["difference"] == pytest.approx(gain) and result["ci95"] == [pytest.approx(gain)] * 2
    assert result["sign_test"] == {"better": 100, "worse": 0, "p_value": pytest.approx(2 / 2**100)}


def test_a_foldoc_definition_is_its_first_sentence_without_markup():
    body = (
        "Domain Name System\nDNS\n\n   <networking> (DNS) A general-purpose {distributed}, replicated, data query "
        "service.  Used on {Internet}.\n\n   (2006-01-01)\n"
    )
    assert first_sentence(body) == "A general-purpose distributed, replicated, data query service."
    assert first_sentence("cough\n\n   <jargon> /kof/ 1. To {barf}. Loudly.\n") == "To barf."
    assert first_sentence("term only\n") == ""


def test_foldoc_names_the_package_when_missing(tmp_path):
    with pytest.raises(CorpusNotAvailableError, match="apt-get install dict-foldoc"):
        foldoc_files(tmp_path)


def test_the_foldoc_task_never_shows_the_term_in_its_query():
    from retrieval_policies.evaluation.local_tasks import LocalFoldocDefinitionRetrieval

    task = LocalFoldocDefinitionRetrieval()
    try:
        task.load_data()
    except CorpusNotAvailableError as err:
        pytest.skip(str(err))
    split = task.dataset["default"]["test"]
    terms = {row["id"]: row["text"] for row in split["corpus"]}
    assert len(terms) == 240 and len(split["queries"]) == 80 and len(set(map(str.lower, terms.values()))) == 240
    for query in split["queries"]:
        (doc,) = split["relevant_docs"][query["id"]]
        assert terms[doc].lower() not in query["text"].lower() and len(query["text"].split()) >= 6


def test_saved_predictions_next_to_the_results_are_not_read_as_results(tmp_path):
    from retrieval_policies.publishing.cards import mteb_results

    _save(tmp_path / "predictions", "LocalLeeSTS", {"cosine_scores": [0.1]})
    assert mteb_results(tmp_path) == []
