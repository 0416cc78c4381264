"""DynamicRAG data: schema mapping, bad rows, the Wikipedia cloze QA, and the two builders on a small real sample."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_dataset

from retrieval_policies.dynamicrag.cloze_qa import (
    BLANK,
    iter_cloze_questions,
    partial_query,
    passage_chunks,
    salient_spans,
)
from retrieval_policies.dynamicrag.data import BadRowError, clean_rows, normalize_row

ROOT = Path(__file__).resolve().parents[1]


def test_field_name_variants_map_onto_one_schema():
    variants = [
        {"id": 1, "question": "Who?", "answer": "Ann", "docs": [{"title": "T", "text": "Ann did it.", "score": 2}]},
        {
            "id": 2,
            "question": "Who?",
            "answers": ["Ann", "Anne"],
            "ctxs": [{"title": "T", "text": "Ann did it.", "has_answer": True}],
        },
        {"question": "Who?", "answers": "Ann", "ctxs": ["Ann did it."]},
        {"question": "Who?", "answer": ["Ann"], "docs": [{"contents": "Ann did it.", "id": "p9"}]},
    ]
    rows = [normalize_row(v, i) for i, v in enumerate(variants)]
    for row in rows:
        assert (
            set(row) == {"id", "question", "answers", "ctxs", "task"}
            and row["answers"][0] == "Ann"
            and row["task"] == "short"
        )
        assert set(row["ctxs"][0]) == {"id", "title", "text", "score", "has_answer", "relevant"}
        assert row["ctxs"][0]["text"] == "Ann did it." and row["ctxs"][0]["has_answer"] is True
    assert [r["id"] for r in rows] == ["1", "2", "2", "3"]  # a row without id gets its row number
    assert rows[0]["ctxs"][0]["score"] == 2.0 and rows[3]["ctxs"][0]["id"] == "p9"
    assert normalize_row(
        {"question": "q", "answers": ["a"], "ctxs": [], "qa_pairs": [{"short_answers": ["a"]}]} | {"ctxs": ["a b"]}, 0
    )["qa_pairs"]


def test_bad_rows_are_dropped_and_counted_or_fail_under_strict():
    rows = [
        {"question": "ok", "answers": ["a"], "ctxs": ["a"]},
        {"answers": ["a"], "ctxs": ["a"]},
        {"question": "q", "answers": [], "ctxs": ["a"]},
        {"question": "q", "answers": "a", "ctxs": []},
        {"question": "q", "answers": "a", "ctxs": [{"title": "no text"}]},
        "not a dict",
    ]
    kept, dropped = clean_rows(rows)
    assert len(kept) == 1
    assert dropped == Counter({"no question": 1, "no answer": 1, "no passages": 1, "bad passage": 1, "not a record": 1})
    with pytest.raises(BadRowError, match="row 1: no question"):
        clean_rows(rows, strict=True)


def test_cloze_questions():
    questions = list(iter_cloze_questions())
    assert 1500 <= len(questions) <= 2000
    splits = Counter(q.split for q in questions)
    assert splits["test"] > 100 and splits["validation"] > 100 and splits["train"] > 1200
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.question.count(BLANK) == 1 and q.answers[0] in q.sentence
        assert q.question.replace(BLANK, q.answers[0]) == f"{q.title}: {q.sentence}"
    assert [q.id for q in iter_cloze_questions()][:50] == [q.id for q in questions[:50]]  # deterministic
    assert [s[0] for s in salient_spans("On 4 July 1776 the United States declared independence.")] == ["date", "name"]


def test_partial_query_keeps_the_title_and_some_words_in_order_never_the_blank():
    question = f"Anarchism: The first known use of this word was in {BLANK}."
    query = partial_query("cloze-x-1", question, 3)
    title, words = query.split(": ")
    sentence = question.split(": ")[1].split()
    assert title == "Anarchism" and len(words.split()) == 3 and BLANK not in query
    positions = [sentence.index(w) for w in words.split()]
    assert positions == sorted(positions)  # in the sentence's order
    assert partial_query("cloze-x-1", question, 3) == query  # the same on every run
    assert {partial_query(f"cloze-x-{i}", question, 3) for i in range(20)} != {query}  # chosen per question
    assert partial_query("cloze-x-1", question, 100) == "Anarchism: The first known use of this word was in"
    assert partial_query("cloze-x-1", question, 0) == "Anarchism: "


def test_passage_chunks_cut_at_sentence_ends_within_the_word_limit():
    text = "One two three. Four five six seven. Eight nine. " + "Long " + " ".join(["long"] * 11) + "."
    pieces = passage_chunks({"id": "p", "title": "T", "text": text}, 7)
    assert [c["text"] for c in pieces] == [
        "One two three. Four five six seven.",
        "Eight nine.",
        "Long " + " ".join(["long"] * 11) + ".",
    ]
    assert [c["id"] for c in pieces] == ["p#0", "p#1", "p#2"] and {c["title"] for c in pieces} == {"T"}
    assert " ".join(c["text"] for c in pieces) == text.strip()


def test_weak_bm25_first_stage_finds_the_topic_but_rarely_the_exact_passage():
    from retrieval_policies.dynamicrag.data import cloze_pool, first_stage_rates

    full = cloze_pool(first_stage="bm25", top_n=15, max_articles=6, passage_words=45)
    weak = cloze_pool(first_stage="bm25", top_n=15, max_articles=6, passage_words=45, query_words=2)
    assert [r["id"] for r in weak] == [r["id"] for r in full] and [r["question"] for r in weak] == [
        r["question"] for r in full
    ]
    lengths = [len(c["text"].split()) for r in weak for c in r["ctxs"]]
    assert sum(lengths) / len(lengths) < 45 and all("#" in c["id"] for r in weak for c in r["ctxs"])
    full_rates, weak_rates = first_stage_rates(full), first_stage_rates(weak)
    assert full_rates["answer in passage 1"] > 0.8  # the whole cloze sentence finds its own passage
    assert weak_rates["answer in passage 1"] < full_rates["answer in passage 1"] - 0.25
    assert weak_rates["answer in the first 15"] > weak_rates["answer in passage 1"] + 0.2  # the reranker's room
    with pytest.raises(ValueError, match="needs an encoder"):
        cloze_pool(first_stage="dense", max_articles=1)


def _run_builder(script: str, *args: str, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "dataset_builders" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_training_builder_on_a_small_real_sample(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = _run_builder(
        "dynamicrag_training.py", "--max-articles", "3", "--output-dir", str(tmp_path / "train"), env=env
    )
    assert "source: wikipedia-cloze" in out.stdout and "kept    sft/train:" in out.stdout
    sft = load_dataset(str(tmp_path / "train"), "sft")
    pool = load_dataset(str(tmp_path / "train"), "pool")
    assert set(sft) == {"train", "validation"} and set(pool) == {"train", "dpo", "validation", "test"}
    record = sft["train"][0]
    assert record["prompt"][0]["role"] == "system" and record["completion"][0]["role"] == "assistant"
    assert Counter(sft["train"]["kind"]).keys() == {"reranker", "generator"}
    test_ids = set(pool["test"]["id"])
    trained_on = {i.rsplit("-", 1)[0] for split in sft.values() for i in split["id"]}
    assert test_ids and not test_ids & trained_on  # test questions never reach the SFT data
    dpo_ids = set(pool["dpo"]["id"])  # DPO trajectories are sampled on questions held out from SFT
    assert len(dpo_ids) > 0.3 * (len(dpo_ids) + len(pool["train"])) and not dpo_ids & trained_on
    assert "pool/dpo:" in out.stdout
    assert all(len(row["ctxs"]) == 20 for row in pool["train"])
    assert "configs:" in (tmp_path / "train" / "README.md").read_text()
    assert list(tmp_path.glob("train.cache/embeddings-*.npy"))  # corpus embeddings kept for re-runs


def test_eval_builder_pushes_to_the_hub(client, tmp_path):
    env = client.hub.client_env(tmp_path / "hf_home_builder")
    out = _run_builder(
        "dynamicrag_eval.py",
        "--source",
        "cloze",
        "--max-articles",
        "4",
        "--output-dir",
        str(tmp_path / "eval"),
        "--push-to-hub",
        "org/dynamicrag-eval",
        env=env,
    )
    assert "pushed http://127.0.0.1" in out.stdout
    loaded = client.json(
        """
        import json
        from datasets import load_dataset
        ds = load_dataset("org/dynamicrag-eval", "wiki_cloze", split="test")
        print(json.dumps({"n": len(ds), "columns": sorted(ds.column_names), "ctxs": len(ds[0]["ctxs"])}))
    """,
        home="reader",
    )
    local = load_dataset(str(tmp_path / "eval"), "wiki_cloze", split="test")
    assert loaded["n"] == len(local) > 0 and loaded["ctxs"] == 20
    assert {"id", "question", "answers", "ctxs", "split"} <= set(loaded["columns"])


def test_general_instruction_mixing_from_the_hub(client):
    client("""
        from datasets import Dataset
        Dataset.from_dict({"instruction": ["Name a colour.", "Add 2 and 3."], "input": ["", "2, 3"],
                           "output": ["Blue.", "5"]}).push_to_hub("org/alpaca-mini")
    """)
    out = client.json(
        """
        import json
        from retrieval_policies.dynamicrag.builders import general_instruction_examples
        print(json.dumps(general_instruction_examples("org/alpaca-mini", 5, seed=0)))
    """,
        home="reader",
    )
    by_answer = {r["completion"][0]["content"]: r["prompt"][0]["content"] for r in out}
    assert by_answer == {"Blue.": "Name a colour.", "5": "Add 2 and 3.\n\n2, 3"}
    assert all(r["kind"] == "general" and r["length"] == -1 for r in out)


def test_strict_eval_build_fails_on_a_bad_hub_row_instead_of_falling_back(monkeypatch):
    from retrieval_policies.dynamicrag import builders

    monkeypatch.setattr(
        builders, "_hub_rows", lambda repo, name, split, max_rows: [{"question": "", "answers": ["a"], "ctxs": ["a"]}]
    )
    with pytest.raises(BadRowError, match="row 0: no question"):
        builders.build_eval_dataset(source="auto", sets=("nq",), strict=True)
    configs, counts, dropped, source = builders.build_eval_dataset(source="auto", sets=("nq",))
    assert source.startswith("hub:") and counts == {"nq/test": 0} and dropped == Counter({"nq: no question": 1})


def test_training_builder_cuts_every_row_to_the_rerankers_n(monkeypatch):
    """The authors' pool rows carry ~50 passages; BC prompts and targets, like sampling and inference, show N."""
    from collections import Counter

    from retrieval_policies.dynamicrag import builders

    rows = [
        {
            "id": f"q{i}",
            "question": f"Who is {i}?",
            "answers": [f"name{i}"],
            "split": "train",
            "ctxs": [
                {
                    "id": str(j),
                    "title": "",
                    "text": f"name{i} is here" if j == 2 else f"filler {j}",
                    "has_answer": j == 2,
                }
                for j in range(8)
            ],
        }
        for i in range(3)
    ]
    monkeypatch.setattr(builders, "question_pool", lambda **kw: (rows, Counter(), "test"))
    configs, counts, _, _ = builders.build_training_dataset(max_passages=4, max_length=3)
    assert all(len(r["ctxs"]) == 4 for r in configs["pool"]["train"])
    assert counts["questions whose passages were cut to the first 4"] == 3
    bc = [r for r in configs["sft"]["train"] if r["kind"] == "reranker"]
    assert bc and all("[5]" not in r["prompt"][-1]["content"] for r in bc)  # only [1]..[4] are shown
    assert all(
        r["completion"][0]["content"] == "None"
        or max(map(int, re.findall(r"\[(\d+)\]", r["completion"][0]["content"]))) <= 4
        for r in bc
    )


def _source_rows(source: str, n: int = 3, passages: int = 4) -> list[dict]:
    from retrieval_policies.dynamicrag.data import clean_rows

    rows = [
        {
            "id": f"{source}{i}",
            "question": f"Claim {i} about Paris.",
            "answers": ["SUPPORTS" if source == "fever" else f"name{i}"],
            "source": source,
            "split": "train",
            "ctxs": [
                {"id": str(j), "title": "P", "text": f"name{i} lives in Paris" if j == 1 else f"filler {j}"}
                for j in range(passages)
            ],
        }
        for i in range(n)
    ]
    return clean_rows(rows)[0]


def test_generator_instruction_follows_each_rows_source_set(monkeypatch):
    from collections import Counter

    from retrieval_policies.dynamicrag import builders
    from retrieval_policies.models.dynamicrag.prompts_dynamicrag import TASK_INSTRUCTIONS

    rows = _source_rows("nq") + _source_rows("fever") + _source_rows("eli5")
    assert [r["task"] for r in rows] == ["short"] * 3 + ["fever"] * 3 + ["long"] * 3
    monkeypatch.setattr(builders, "question_pool", lambda **kw: ([dict(r) for r in rows], Counter(), "test"))
    configs, counts, _, _ = builders.build_training_dataset(
        max_passages=4, max_length=3, dpo_fraction=0.0, force_has_answer=True
    )
    generator = {
        r["id"].removesuffix("-gen"): r["prompt"][-1]["content"]
        for r in configs["sft"]["train"]
        if r["kind"] == "generator"
    }
    for row in rows:
        assert generator[row["id"]].startswith(TASK_INSTRUCTIONS[row["task"]] + "\n"), row["id"]
    assert counts["questions with the 'fever' generator instruction"] == 3


def test_has_answer_labels_are_refused_for_fever_eli5_and_asqa(monkeypatch):
    from collections import Counter

    from retrieval_policies.dynamicrag import builders

    for source in ("fever", "eli5", "asqa"):
        monkeypatch.setattr(
            builders, "question_pool", lambda source=source, **kw: (_source_rows(source), Counter(), "test")
        )
        with pytest.raises(
            ValueError, match=rf"has_answer relevance labels do not fit \{{'{source}': 3\}}.*--labeler monot5"
        ):
            builders.build_training_dataset(max_passages=4)
    monkeypatch.setattr(builders, "question_pool", lambda **kw: (_source_rows("nq"), Counter(), "test"))
    assert builders.build_training_dataset(max_passages=4)[0]["pool"]["train"]  # short-answer sets keep has_answer


def test_examples_over_the_trainers_max_length_are_dropped_and_counted(monkeypatch):
    from collections import Counter

    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.dynamicrag import builders
    from retrieval_policies.dynamicrag.training_examples import refuse_over_length, rendered_length

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    rows = _source_rows("nq", n=4)
    rows[0]["ctxs"][3]["text"] = "a very long passage " * 60  # this question's prompts cannot fit
    monkeypatch.setattr(builders, "question_pool", lambda **kw: ([dict(r) for r in rows], Counter(), "test"))
    limit = 400
    configs, counts, dropped, _ = builders.build_training_dataset(
        max_passages=4, max_length=3, dpo_fraction=0.0, tokenizer=tokenizer, max_seq_length=limit
    )
    kept = configs["sft"]["train"]
    assert kept and all(rendered_length(tokenizer, r) <= limit for r in kept)
    assert not any(r["id"].startswith("nq0-bc") for r in kept)  # its reranker records showed the long passage
    assert dropped[f"sft/train: reranker records over {limit} tokens"] == 3  # nq0's BC targets of lengths 1, 2, 3
    assert [r["id"] for r in configs["pool"]["train"]] == ["nq1", "nq2", "nq3"]
    assert counts["sft/train"] == len(kept)
    refuse_over_length(kept, tokenizer, limit, name="kept")  # nothing left to truncate
    with pytest.raises(
        ValueError, match=r"sft/train\): 1 of 2 examples are longer than max_length=40 tokens.*--max-seq-length"
    ):
        long_one = {
            "prompt": [{"role": "user", "content": "word " * 50}],
            "completion": [{"role": "assistant", "content": "x"}],
        }
        short_one = {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "x"}],
        }
        refuse_over_length([short_one, long_one], tokenizer, 40, name="data (sft/train)")


def test_a_warmup_builds_its_own_config_checked_against_the_length_limit(monkeypatch):
    from collections import Counter

    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.dynamicrag import builders
    from retrieval_policies.models.dynamicrag.prompts_dynamicrag import restates_query

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    rows = _source_rows("nq", n=4)
    rows[0]["ctxs"][3]["text"] = "a very long passage " * 60  # its teacher record shows it: dropped and counted
    monkeypatch.setattr(builders, "question_pool", lambda **kw: ([dict(r) for r in rows], Counter(), "test"))
    configs, counts, dropped, _ = builders.build_training_dataset(
        max_passages=4,
        max_length=3,
        dpo_fraction=0.0,
        tokenizer=tokenizer,
        max_seq_length=400,
        warmup="teacher",
        restate_query=True,
        empty_targets=False,
    )
    warmup = configs["sft_warmup"]["train"]
    assert (
        [r["id"] for r in warmup]
        and all(r["length"] == 4 for r in warmup)
        and "nq0-teacher0" not in {r["id"] for r in warmup}
    )
    assert dropped["sft_warmup/train: reranker records over 400 tokens"] == 1
    assert counts["sft_warmup/train"] == len(warmup) == 3
    assert all(restates_query(r["prompt"]) for r in warmup + [r for r in configs["sft"]["train"] if r["length"] >= 0])
    assert "sft_warmup" not in builders.build_training_dataset(max_passages=4, max_length=3, dpo_fraction=0.0)[0]
