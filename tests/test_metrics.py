"""The evaluate metric modules in metrics/, on hand-computed values (loaded offline by path)."""

from __future__ import annotations

import math

import evaluate
import pytest
from testing_utils import PACKAGED_METRICS

METRICS = PACKAGED_METRICS


@pytest.fixture(scope="module")
def rag_answer():
    return evaluate.load(str(METRICS / "rag_answer"))


def test_rag_answer_default(rag_answer):
    out = rag_answer.compute(
        predictions=["The Eiffel Tower!", "paris france", "", "Barack Obama"],
        references=[["Eiffel Tower", "la tour Eiffel"], ["Paris"], ["London"], []],
    )
    # q1 exact after normalisation; q2 F1 = 2*(1/2*1)/(1/2+1) = 2/3, match 1; q3 empty prediction: all 0;
    # q4 no gold = unanswerable, a non-empty prediction scores 0.
    assert out["exact_match"] == pytest.approx(1 / 4)
    assert out["f1"] == pytest.approx((1 + 2 / 3) / 4)
    assert out["match"] == pytest.approx(2 / 4)
    # ROUGE-L keeps articles (rouge_score's tokeniser): "the eiffel tower" vs "eiffel tower": P 2/3, R 1, F 0.8;
    # "paris france" vs "paris": F 2/3.
    assert out["rougeL"] == pytest.approx((0.8 + 2 / 3) / 4)


def test_rag_answer_empty_prediction_and_published_match(rag_answer):
    assert rag_answer.compute(predictions=[""], references=[[]]) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "match": 0.0,
        "rougeL": 1.0,
    }
    standard = rag_answer.compute(predictions=["", "Paris"], references=[["Paris"], ["Paris, France"]])
    published = rag_answer.compute(
        predictions=["", "Paris"], references=[["Paris"], ["Paris, France"]], match_direction="prediction_in_gold"
    )
    assert standard["match"] == 0.0  # "paris france" is not in "paris"; "" contains nothing
    assert published["match"] == 1.0  # reversed: "" and "paris" are both inside their golds
    with pytest.raises(ValueError, match="match_direction"):
        rag_answer.compute(predictions=["a"], references=[["a"]], match_direction="sideways")


def test_rag_answer_fever_and_asqa():
    fever = evaluate.load(str(METRICS / "rag_answer"), "fever")
    out = fever.compute(
        predictions=["SUPPORTS", "The claim is refuted. REFUTES", "not enough info", "maybe"],
        references=[["SUPPORTS"], ["REFUTES"], ["NOT ENOUGH INFO"], ["SUPPORTS"]],
    )
    assert out == {"label_accuracy": 0.75}
    asqa = evaluate.load(str(METRICS / "rag_answer"), "asqa")
    out = asqa.compute(
        predictions=["It was held in Paris and in Lyon.", "No idea."],
        references=[[["Paris"], ["Marseille", "Lyon"], ["Nice"]], [["Rome"]]],
    )
    assert out == {"str_em": pytest.approx((2 / 3 + 0) / 2)}


def test_rerank_selection():
    metric = evaluate.load(str(METRICS / "rerank_selection"))
    out = metric.compute(
        predictions=[[3, 1], [], [2], []], references=[[1], [], [5], [4]], malformed=[False, True, False, False]
    )
    assert out["mean_k"] == pytest.approx(3 / 4)
    assert out["k_distribution"] == {0: 2, 1: 1, 2: 1}
    # precision: 1/2, 1 (empty, nothing relevant), 0, 1 (empty selection) ; recall: 1, 1, 0, 0
    assert out["precision"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert out["recall"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert out["f1"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)
    assert out["ndcg"] == pytest.approx((1 / math.log2(3) + 1 + 0 + 0) / 4)
    assert out["malformed_rate"] == 0.25
    assert metric.compute(predictions=[[1]], references=[[1]])["malformed_rate"] is None


def test_retrieval():
    metric = evaluate.load(str(METRICS / "retrieval"))
    out = metric.compute(
        predictions=[["d2", "d1", "d3"], ["x", "x", "y"], ["a"]], references=[["d1", "d3"], ["y"], []], k_values=[1, 3]
    )
    idcg2 = 1 + 1 / math.log2(3)
    assert out["ndcg@1"] == 0.0 and out["recall@1"] == 0.0 and out["mrr@1"] == 0.0
    assert out["ndcg@3"] == pytest.approx(((1 / math.log2(3) + 1 / math.log2(4)) / idcg2 + 1 / math.log2(3)) / 3)
    assert out["recall@3"] == pytest.approx((1 + 1 + 0) / 3)  # the repeated "x" counts once, so "y" is in the top 3
    assert out["mrr@3"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    with pytest.raises(ValueError, match="k_values"):
        metric.compute(predictions=[["a"]], references=[["a"]], k_values=[0])
