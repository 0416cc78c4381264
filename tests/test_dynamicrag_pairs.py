"""DPO pair construction (method spec §1.6–§1.7)."""

from __future__ import annotations

import pytest

from retrieval_policies.dynamicrag.pairs import preference_pairs

CTXS = [{"title": f"T{i}", "text": f"passage {i}"} for i in range(1, 5)]


def _record(rid, trajectories, answers=("Paris",)):
    return {
        "id": rid,
        "question": f"question {rid}",
        "answers": list(answers),
        "ctxs": CTXS,
        "trajectories": [{"ids": ids, "answer": answer, "reward": reward} for ids, answer, reward in trajectories],
    }


def test_reranker_pairs_take_the_best_and_worst_lists():
    records = [_record("a", [([2], "Paris", 0.9), ([1, 3], "Rome", 0.1), ([4], "paris", 0.9), ([3], "Lyon", 0.1)])]
    pairs, counts = preference_pairs(records, generator_questions=0)
    assert counts == {"reranker pairs": 1}
    pair = pairs[0]
    assert pair["kind"] == "reranker" and pair["prompt"][1]["content"].startswith("Query: question a")
    assert pair["chosen"] == [{"role": "assistant", "content": "[2]"}]  # first of the tied best
    assert pair["rejected"] == [{"role": "assistant", "content": "[1], [3]"}]  # first of the tied worst
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (0.9, 0.1)


def test_questions_without_signal_are_dropped_and_counted():
    records = [
        _record("same-answers", [([1], "Paris", 0.5), ([2], " paris ", 0.7)]),
        _record("same-rewards", [([1], "Paris", 0.5), ([2], "Rome", 0.5)]),
        _record("same-lists", [([1, 2], "Paris", 0.9), ([1, 2], "Rome", 0.2)]),
        _record("none-vs-list", [([], "Paris", 0.9), ([1], "Rome", 0.2)]),
    ]
    pairs, counts = preference_pairs(records, generator_questions=0)
    assert counts == {
        "dropped: identical answers": 1,
        "dropped: all rewards equal": 1,
        "dropped: equal lists": 1,
        "reranker pairs": 1,
    }
    assert pairs[0]["chosen"][0]["content"] == "None" and pairs[0]["rejected"][0]["content"] == "[1]"


def test_the_first_qualifying_questions_give_generator_pairs_only():
    records = [
        _record("skip", [([1], "Paris", 0.5), ([2], "Paris", 0.5)]),  # does not qualify, does not use up a slot
        _record("g1", [([3], "Paris", 0.9), ([1], "Rome", 0.1), ([2], "Lyon", 0.3)]),
        _record("g2", [([1], "paris", 0.9), ([2], "paris", 0.2), ([4], "Nice", 0.1)], answers=("Paris",)),
        _record("r1", [([1], "Paris", 0.9), ([2], "Rome", 0.1)]),
    ]
    pairs, counts = preference_pairs(records, generator_questions=2)
    assert [p["id"] for p in pairs] == ["g1-gen", "g2-gen", "r1-rerank"]
    g1, g2 = pairs[0], pairs[1]
    assert (
        g1["chosen"][0]["content"] == "Paris" and g1["rejected"][0]["content"] == "Rome"
    )  # first answer differing from gold
    assert g2["rejected"][0]["content"] == "Nice"  # "paris" equals the gold after normalising
    assert "Content: passage 3" in g1["prompt"][1]["content"] and "passage 1" not in g1["prompt"][1]["content"]
    assert counts["generator pairs"] == 2 and counts["reranker pairs"] == 1


def test_unrewarded_records_are_refused_with_their_position():
    record = _record("x", [([1], "a", 0.1)])
    del record["trajectories"][0]["reward"]
    with pytest.raises(ValueError, match=r"record 1 \('x'\).*reward stage"):
        preference_pairs([record])


def test_require_correct_answer_drops_questions_the_length_term_alone_would_order():
    all_wrong = _record("wrong", [([], "Rome", 0.3), ([1, 2], "Lyon", 0.1)])
    one_right = _record("right", [([], "Rome", 0.3), ([1, 2], "in Paris", 0.8)])  # EM is containment either way
    pairs, counts = preference_pairs([all_wrong, one_right], generator_questions=0)
    assert counts == {"reranker pairs": 2}  # faithful default: "None" wins the all-wrong question
    pairs, counts = preference_pairs([all_wrong, one_right], generator_questions=0, require_correct_answer=True)
    assert counts == {"dropped: no correct answer": 1, "reranker pairs": 1}
    assert pairs[0]["id"] == "right-rerank" and pairs[0]["chosen"][0]["content"] == "[1], [2]"


def test_generator_pairs_carry_their_questions_own_instruction():
    fever = {**_record("f", [([1], "SUPPORTS", 0.9), ([2], "REFUTES", 0.1)], answers=("SUPPORTS",)), "task": "fever"}
    short = _record("s", [([1], "Paris", 0.9), ([2], "Rome", 0.1)])  # a record from before tasks: short
    pairs, _ = preference_pairs([fever, short], generator_questions=2)
    assert pairs[0]["prompt"][1]["content"].startswith("Please verify the claim")
    assert pairs[1]["prompt"][1]["content"].startswith("Please answer the question with a short phrase.")
    forced, _ = preference_pairs([fever], generator_questions=1, task="long")
    assert forced[0]["prompt"][1]["content"].startswith("Please answer the question with a paragraph.")
