"""DynamicRAG prompt format, the hardened selection parser and behaviour-cloning targets."""

from __future__ import annotations

from collections import Counter

import pytest

from retrieval_policies.dynamicrag.training_examples import BCStats, behaviour_cloning_examples, generator_examples
from retrieval_policies.models.dynamicrag import (
    RERANKER_SYSTEM_PROMPT,
    format_selection,
    generator_messages,
    parse_selection,
    reranker_messages,
)


def test_reranker_prompt_format():
    system, user = reranker_messages(
        " Who wrote Hamlet? ", [{"title": "Hamlet", "text": "A tragedy by Shakespeare."}, "Untitled text."]
    )
    assert (
        system == {"role": "system", "content": RERANKER_SYSTEM_PROMPT} and len(RERANKER_SYSTEM_PROMPT.split("\n")) == 7
    )
    assert user["content"] == (
        "Query: Who wrote Hamlet?\n\nRetrieved Content:\n"
        "1. Topic: Hamlet\nContent: A tragedy by Shakespeare.\n2. Topic: \nContent: Untitled text."
    )
    with pytest.raises(TypeError, match="passage"):
        reranker_messages("q", [3])


def test_generator_prompt_format():
    _, user = generator_messages("Who wrote Hamlet?", [{"title": "Hamlet", "text": "By Shakespeare."}])
    assert user["content"] == (
        "Please answer the question with a short phrase.\nQuery: Who wrote Hamlet?\n\n"
        "Retrieved Content:\n1. Topic: Hamlet\nContent: By Shakespeare."
    )
    _, user = generator_messages("Is the sky green?", [], task="fever")
    assert (
        user["content"].endswith("Query: Is the sky green?\n\nRetrieved Content: None")
        and "SUPPORTS" in user["content"]
    )
    with pytest.raises(ValueError, match="unknown task"):
        generator_messages("q", [], task="poem")


@pytest.mark.parametrize(
    "output, ids, malformed",
    [
        ("[3], [1], [7]", (3, 1, 7), False),
        ("None", (), False),
        ('"None"', (), False),
        ("[2], [2], [1]", (2, 1), True),  # repeats dropped, first occurrence kept
        ("[0], [9], [4]", (4,), True),  # out of range dropped (the published code mapped [0] to the last)
        ("The answer uses [1] and [ 5 ].", (1, 5), True),
        ("I cannot tell.", (), True),
        ("", (), True),
        (None, (), True),
        ("[-1]", (), True),
        ("[1], [2].", (1, 2), False),  # trailing punctuation after a list is not malformed
        ("[3], [1];", (3, 1), False),
        ("[1,2,3]", (1, 2, 3), True),  # several ids in one bracket: read, counted as repaired
        ("[4, 2], [1]", (4, 2, 1), True),
    ],
)
def test_parse_selection_never_raises(output, ids, malformed):
    parsed = parse_selection(output, 8)
    assert parsed.ids == ids and parsed.malformed is malformed
    assert bool(parsed.problems) is malformed


def test_format_round_trip():
    assert format_selection([3, 1]) == "[3], [1]" and format_selection([]) == "None"
    assert parse_selection(format_selection([5, 2, 9]), 10).ids == (5, 2, 9)


def _rows():
    def ctxs(relevant, n=20):
        return [{"title": f"t{i}", "text": f"passage {i}", "has_answer": i in relevant} for i in range(1, n + 1)]

    return [
        {"id": "none", "question": "q0", "answers": ["a"], "ctxs": ctxs(set())},
        {"id": "two", "question": "q2", "answers": "b", "ctxs": ctxs({4, 9})},
        {"id": "many", "question": "q15", "answers": ["c"], "ctxs": ctxs(set(range(1, 16)))},
        {"id": "short", "question": "q1", "answers": ["d"], "ctxs": ctxs({2}, n=5)},
    ]


def test_behaviour_cloning_targets_obey_the_length_rules():
    stats = BCStats()
    examples = behaviour_cloning_examples(_rows(), seed=3, stats=stats)
    by_question = {}
    for ex in examples:
        question = ex["prompt"][1]["content"].split("\n")[0]
        parsed = parse_selection(ex["completion"][0]["content"], 20)
        assert not parsed.malformed and len(parsed.ids) == ex["length"]  # exact length, no duplicates
        by_question.setdefault(question, []).append((ex["length"], parsed.ids))
    assert stats.skipped_too_many_relevant == 1 and "Query: q15" not in by_question
    assert sorted(n for n, _ in by_question["Query: q0"]) == list(range(0, 15))  # None only here
    assert sorted(n for n, _ in by_question["Query: q2"]) == list(range(2, 15))
    assert sorted(n for n, _ in by_question["Query: q1"]) == list(range(1, 6))  # never longer than the pool
    for _length, ids in by_question["Query: q2"]:
        assert set(ids[:2]) == {4, 9} and not {4, 9} & set(ids[2:])  # relevant first
    none_targets = [ex for ex in examples if ex["length"] == 0]
    assert [ex["completion"][0]["content"] for ex in none_targets] == ["None"]
    assert stats.total == len(examples) == 15 + 13 + 5
    again = behaviour_cloning_examples(_rows(), seed=3)
    assert [e["completion"] for e in again] == [e["completion"] for e in examples]  # seeded
    assert [e["completion"] for e in behaviour_cloning_examples(_rows(), seed=4)] != [e["completion"] for e in examples]


def test_behaviour_cloning_caps():
    rows = _rows() * 3
    examples = behaviour_cloning_examples(rows, per_length_cap=2, total_cap=20, seed=0)
    counts = Counter(e["length"] for e in examples)
    assert max(counts.values()) <= 2 and len(examples) <= 20
    with pytest.raises(KeyError, match="row 0: missing field 'ctxs'"):
        behaviour_cloning_examples([{"question": "q"}])


def _shown_passages(example) -> list[str]:
    return [line.split("Topic: ")[1] for line in example["prompt"][1]["content"].split("\n") if "Topic: " in line]


def test_relevant_only_targets_are_the_relevant_ids_or_none():
    stats = BCStats()
    examples = behaviour_cloning_examples(_rows(), seed=3, stats=stats, targets="relevant")
    by_question = {ex["prompt"][1]["content"].split("\n")[0]: ex for ex in examples}
    assert set(by_question) == {"Query: q0", "Query: q2", "Query: q1"} and stats.skipped_too_many_relevant == 1
    assert by_question["Query: q0"]["completion"][0]["content"] == "None" and by_question["Query: q0"]["length"] == 0
    assert set(parse_selection(by_question["Query: q2"]["completion"][0]["content"], 20).ids) == {4, 9}
    assert by_question["Query: q1"]["completion"][0]["content"] == "[2]"
    with pytest.raises(ValueError, match="targets must be one of"):
        behaviour_cloning_examples(_rows(), targets="oracle")


def test_shuffled_orders_renumber_the_target_to_the_passages_shown():
    examples = behaviour_cloning_examples(_rows(), seed=5, shuffled_orders=3)
    paper = behaviour_cloning_examples(_rows(), seed=5)
    assert len(examples) == 3 * len(paper)  # every target, in 3 orders
    moved = 0
    for ex in examples:
        shown = _shown_passages(ex)
        row = next(r for r in _rows() if f"Query: {r['question']}" == ex["prompt"][1]["content"].split("\n")[0])
        assert sorted(shown) == sorted(c["title"] for c in row["ctxs"])  # the same passages, reordered
        ids = parse_selection(ex["completion"][0]["content"], len(shown)).ids
        relevant_titles = {c["title"] for c in row["ctxs"] if c["has_answer"]}
        chosen = [shown[i - 1] for i in ids]
        assert set(chosen[: len(relevant_titles)]) == relevant_titles  # the relevant passages, wherever they now are
        moved += shown != [c["title"] for c in row["ctxs"]]
    assert moved > len(examples) - 2  # the order really changes
    assert ["-order" in ex["id"] for ex in examples] == [True] * len(examples)
    assert [e["completion"] for e in behaviour_cloning_examples(_rows(), seed=5, shuffled_orders=3)] == [
        e["completion"] for e in examples
    ]  # seeded
    # the caps count every shown order
    assert (
        Counter(
            e["length"] for e in behaviour_cloning_examples(_rows(), seed=5, shuffled_orders=3, per_length_cap=2)
        ).most_common(1)[0][1]
        == 2
    )


def test_generator_examples():
    examples = generator_examples(_rows()[:2])
    assert examples[0]["prompt"][1]["content"].endswith("Retrieved Content: None")
    assert "1. Topic: t4\nContent: passage 4\n2. Topic: t9\nContent: passage 9" in examples[1]["prompt"][1]["content"]
    assert [e["completion"][0]["content"] for e in examples] == ["a", "b"]
    with pytest.raises(ValueError, match="row 0: no gold answer"):
        generator_examples([{"question": "q", "ctxs": [], "answers": []}])
