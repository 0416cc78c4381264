"""The DynamicRAG evaluation: a scripted model against fixed top-k baselines, and the command on SmolLM2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from retrieval_policies.common.dataset_io import write_dataset_folder
from retrieval_policies.dynamicrag.data import clean_rows
from retrieval_policies.dynamicrag.evaluation import evaluate_dynamicrag, format_scores, load_eval_rows
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, format_selection


def _rows():
    rows = []
    for q, (answer, position) in enumerate([("Paris", 2), ("Rome", 0), ("Oslo", 4)]):
        ctxs = [{"id": str(i), "title": f"t{i}", "text": f"filler {i}", "has_answer": False} for i in range(6)]
        ctxs[position] = {"id": str(position), "title": "gold", "text": f"The answer is {answer}.", "has_answer": True}
        rows.append({"id": f"q{q}", "question": f"question {q}?", "answers": [answer], "ctxs": ctxs})
    return rows


class ScriptedModel:
    """Selects the passages that state an answer; answers with the first answer stated in the given passages."""

    dynamicrag_config = DynamicRAGConfig(max_passages=6)

    def __init__(self):
        self.answered = []  # every (query, passage texts) the baselines asked an answer for
        self.calls = []  # (pool sizes, task) of every call_batch

    def call_batch(self, queries, pools, task=None):
        self.calls.append(([len(p) for p in pools], task))
        out = []
        for pool in pools:
            indices = [i for i, p in enumerate(pool) if "answer is" in p["text"]]
            answer = self.answer_batch([""], [[pool[i] for i in indices]])[0]
            out.append(
                {
                    "indices": indices,
                    "answer": answer,
                    "malformed": 0,
                    "raw": [format_selection([i + 1 for i in indices])],
                }
            )
        return out

    def answer_batch(self, queries, passage_lists, task=None, ids=None):
        self.answered += [(q, tuple(p["text"] for p in ps)) for q, ps in zip(queries, passage_lists)]
        found = [re.search(r"answer is (\w+)", " ".join(p["text"] for p in ps)) for ps in passage_lists]
        return [m.group(1) if m else "unknown" for m in found]


def test_scores_against_fixed_top_k(tmp_path):
    write_dataset_folder(
        tmp_path / "eval", {"mini": {"test": _rows()}}, pretty_name="mini", card_body="x", license="mit"
    )
    rows = load_eval_rows(str(tmp_path / "eval"), config="mini")
    model = ScriptedModel()
    report = evaluate_dynamicrag(model, rows, top_ks=(1, 3))
    scores = report["scores"]
    # call_batch's own answers (3, with empty queries) aside, each distinct baseline prompt is answered once: per
    # question top-1 (= same-k, DynamicRAG chose one passage), top-3 and all
    baseline_prompts = [a for a in model.answered if a[0]]
    assert len(baseline_prompts) == len(set(baseline_prompts)) == 3 * 3
    assert scores["dynamicrag"]["exact_match"] == 1.0 and scores["dynamicrag"]["selection_mean_k"] == 1.0
    assert scores["dynamicrag"]["selection_precision"] == 1.0 and scores["dynamicrag"]["selection_recall"] == 1.0
    assert scores["top-1"]["exact_match"] == pytest.approx(1 / 3)  # only "Rome" is at rank 1
    # same-k: the retriever's top-k at the k DynamicRAG chose for each question (1 here), so it equals top-1
    assert scores["same-k"]["selection_mean_k"] == scores["dynamicrag"]["selection_mean_k"]
    assert scores["same-k"]["exact_match"] == pytest.approx(1 / 3) and scores["same-k"][
        "selection_recall"
    ] == pytest.approx(1 / 3)
    assert report["predictions"][2]["same-k"] == {"answer": "unknown", "selected": [0]}
    assert scores["top-3"]["exact_match"] == pytest.approx(2 / 3) and scores["top-3"]["selection_mean_k"] == 3.0
    assert scores["all"]["exact_match"] == 1.0 and scores["all"]["selection_recall"] == 1.0
    assert (
        scores["dynamicrag"]["selection_malformed_rate"] == 0.0 and scores["top-1"]["selection_malformed_rate"] is None
    )
    assert report["predictions"][0]["dynamicrag"] == {"answer": "Paris", "selected": [2]}
    table = format_scores(scores)
    assert table.splitlines()[0].split()[:3] == ["system", "EM", "F1"] and "top-3" in table


def test_reranker_sees_the_first_n_passages_and_the_task_reaches_its_answers():
    model = ScriptedModel()
    model.dynamicrag_config = DynamicRAGConfig(max_passages=4)
    rows, _ = clean_rows(_rows())
    report = evaluate_dynamicrag(model, rows, top_ks=(1,), task="fever", show_progress_bar=False)
    assert model.calls == [([4, 4, 4], ["fever"] * 3)]  # ctxs[:N] in one call, as published; --task reaches DynamicRAG
    assert report["predictions"][2]["dynamicrag"]["selected"] == []  # Oslo's passage is 5th: N = 4 never shows it
    model.calls.clear()
    evaluate_dynamicrag(model, rows, top_ks=(1,), tournament=True, show_progress_bar=False)
    assert model.calls == [([6, 6, 6], ["short"] * 3)]  # the whole pool goes to the tournament; each row's own task


@pytest.mark.slow
def test_dynamicrag_evaluate_command(tmp_path):
    write_dataset_folder(
        tmp_path / "eval", {"mini": {"test": _rows()}}, pretty_name="mini", card_body="x", license="mit"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval_policies.cli",
            "dynamicrag",
            "evaluate",
            "--model",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "--data",
            str(tmp_path / "eval"),
            "--config",
            "mini",
            "--top-k",
            "1",
            "--max-questions",
            "2",
            "--rerank-max-new-tokens",
            "16",
            "--answer-max-new-tokens",
            "16",
            "--output",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 questions from" in result.stdout and "malformed reranker outputs:" in result.stdout
    # a folder without dynamicrag_config.json runs as a released checkpoint: published prompts, T = 0.4 (seeded)
    assert "'prompt_profile': 'published'" in result.stdout and "'temperature': 0.4" in result.stdout
    assert "held an id above the" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["scores"]) == {"dynamicrag", "same-k", "top-1", "all"}
    assert report["settings"]["answer_max_new_tokens"] == 16
    assert report["scores"]["all"]["exact_match"] >= report["scores"]["top-1"]["exact_match"]


def _set_rows(texts_and_golds):
    rows = []
    for q, (text, golds, extra) in enumerate(texts_and_golds):
        ctxs = [
            {"id": "0", "title": "t", "text": text, "has_answer": True},
            {"id": "1", "title": "t", "text": "filler", "has_answer": False},
        ]
        rows.append({"id": f"q{q}", "question": f"claim {q}", "answers": golds, "ctxs": ctxs, **extra})
    return clean_rows(rows)[0]


@pytest.mark.parametrize(
    "eval_set, rows, task, metric, value, column",
    [
        (
            "fever",
            [("The answer is SUPPORTS.", ["SUPPORTS"], {}), ("The answer is REFUTES.", ["SUPPORTS"], {})],
            "fever",
            "label_accuracy",
            0.5,
            "accuracy",
        ),
        (
            "asqa",
            [
                (
                    "The answer is Paris.",
                    ["Paris was the long answer and Lyon too"],
                    {
                        "qa_pairs": [
                            {"question": "a", "short_answers": ["Paris"]},
                            {"question": "b", "short_answers": ["Lyon"]},
                        ]
                    },
                )
            ],
            "short",
            "str_em",
            0.5,
            "str-EM",
        ),
        ("eli5", [("The answer is Paris.", ["Paris"], {})], "long", "rougeL", 1.0, "ROUGE-L"),
    ],
)
def test_evaluation_per_set(eval_set, rows, task, metric, value, column):
    rows = _set_rows(rows)
    model = ScriptedModel()
    model.dynamicrag_config = DynamicRAGConfig(max_passages=2)
    report = evaluate_dynamicrag(model, rows, top_ks=(1,), eval_set=eval_set, show_progress_bar=False)
    assert model.calls[0][1] == [task] * len(rows)  # the set's generator instruction, per row
    assert report["scores"]["dynamicrag"][metric] == pytest.approx(value)
    assert column in format_scores(report["scores"]).splitlines()[0]
    if eval_set == "asqa":  # golds from the qa-pairs' short answers, not the long answer
        assert "exact_match" not in report["scores"]["dynamicrag"]


def test_asqa_without_qa_pairs_is_a_clear_error():
    rows = _set_rows([("The answer is Paris.", ["Paris"], {})])
    with pytest.raises(ValueError, match="has no qa_pairs"):
        evaluate_dynamicrag(ScriptedModel(), rows, eval_set="asqa", show_progress_bar=False)
