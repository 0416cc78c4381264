"""The named options of the DynamicRAG evidence cells: the records each produces (no `None` targets, the restated
query, the curriculum and lexical-teacher warm-ups), the restated prompt carried from data to repo to sampling to
DPO, and the per-question statistics the evidence reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from test_dynamicrag_format import _rows, _shown_passages

from retrieval_policies.dynamicrag.pairs import preference_pairs
from retrieval_policies.dynamicrag.training import align_prompt_options
from retrieval_policies.dynamicrag.training_examples import (
    behaviour_cloning_examples,
    lexical_order,
    warmup_examples,
)
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, parse_selection
from retrieval_policies.models.dynamicrag.prompts_dynamicrag import reranker_messages, restates_query


def test_the_restated_query_follows_the_passages():
    plain = reranker_messages("Who wrote Hamlet?", ["Hamlet is a play.", "Paris is a city."])
    restated = reranker_messages("Who wrote Hamlet?", ["Hamlet is a play.", "Paris is a city."], restate_query=True)
    assert restated[1]["content"] == plain[1]["content"] + "\n\nQuery (again): Who wrote Hamlet?"
    assert restates_query(restated) and not restates_query(plain)
    assert not restates_query(reranker_messages("Query (again): x", ["p"]))  # the words alone are not the option


def test_no_empty_targets_drops_the_none_records_and_restate_reaches_every_prompt():
    with_none = behaviour_cloning_examples(_rows(), seed=3, targets="relevant")
    without = behaviour_cloning_examples(_rows(), seed=3, targets="relevant", empty_targets=False, restate_query=True)
    assert "None" in [e["completion"][0]["content"] for e in with_none]
    assert [e["completion"][0]["content"] for e in without] == [
        e["completion"][0]["content"] for e in with_none if e["completion"][0]["content"] != "None"
    ]
    assert all(restates_query(e["prompt"]) for e in without)


def test_the_curriculum_shows_one_relevant_and_one_irrelevant_passage_in_both_orders():
    records = warmup_examples(_rows(), "curriculum", seed=1, copies=4)
    # "none" has no relevant passage and "many" has irrelevant ones: only questions with both make pairs
    assert {r["id"].rsplit("-", 1)[0] for r in records} == {"two", "many", "short"} and len(records) == 12
    positions = set()
    for record in records:
        shown = _shown_passages(record)
        row = next(r for r in _rows() if r["id"] == record["id"].rsplit("-", 1)[0])
        relevant = {c["title"] for c in row["ctxs"] if c["has_answer"]}
        (target,) = parse_selection(record["completion"][0]["content"], 2).ids
        assert len(shown) == 2 and shown[target - 1] in relevant and shown[2 - target] not in relevant
        positions.add(target)
    assert positions == {1, 2}  # the relevant passage is not always first
    assert [r["completion"] for r in warmup_examples(_rows(), "curriculum", seed=1, copies=4)] == [
        r["completion"] for r in records
    ]  # seeded


def test_the_lexical_teacher_orders_every_passage_by_shared_words():
    ctxs = [
        {"title": "Paris", "text": "The capital of France."},
        {"title": "Hamlet", "text": "A tragedy written by William Shakespeare."},
        {"title": "Globe", "text": "Shakespeare's company built the Globe theatre."},
    ]
    # "shakespeare" and "tragedy" in 2; "shakespeare" alone in 3 (as "shakespeare s"); nothing in 1
    assert lexical_order("Which tragedy did Shakespeare write?", ctxs) == [2, 3, 1]
    assert lexical_order("the of a", ctxs) == [1, 2, 3]  # stop words only: ties keep the shown order
    record = warmup_examples([{"id": "q", "question": "Which tragedy did Shakespeare write?", "ctxs": ctxs}], "teacher")
    assert record[0]["completion"][0]["content"] == "[2], [3], [1]" and record[0]["length"] == 3
    shuffled = warmup_examples(_rows()[1:2], "teacher", seed=2, shuffled=True)[0]
    assert _shown_passages(shuffled) != [c["title"] for c in _rows()[1]["ctxs"]]
    with pytest.raises(ValueError, match="warm-up must be one of"):
        warmup_examples(_rows(), "oracle")


def test_the_repo_runs_with_the_prompt_its_data_was_built_with():
    restated = [{"prompt": e["prompt"]} for e in behaviour_cloning_examples(_rows(), restate_query=True)]
    plain = [{"prompt": e["prompt"]} for e in behaviour_cloning_examples(_rows())]
    settings = DynamicRAGConfig()
    align_prompt_options(settings, restated, name="data")
    assert settings.restate_query and DynamicRAGConfig.from_dict(settings.to_dict()).restate_query
    with pytest.raises(ValueError, match="data: the model was trained with restate_query"):
        align_prompt_options(settings, plain, name="data")
    with pytest.raises(ValueError, match="mixed: some reranker prompts restate"):
        align_prompt_options(DynamicRAGConfig(), restated + plain, name="mixed")
    generator_only = DynamicRAGConfig(restate_query=True)
    align_prompt_options(generator_only, [{"prompt": [{"role": "system", "content": "x"}]}], name="generator")
    assert generator_only.restate_query  # no reranker prompt: the model keeps what it was trained with


def test_dpo_pairs_use_the_prompt_the_lists_were_sampled_from():
    ctxs = [{"title": f"T{i}", "text": f"passage {i}"} for i in range(1, 4)]
    prompt = reranker_messages("question a", ctxs, restate_query=True)
    record = {
        "id": "a",
        "question": "question a",
        "answers": ["Paris"],
        "ctxs": ctxs,
        "prompt": prompt,
        "trajectories": [{"ids": [1], "answer": "Paris", "reward": 0.9}, {"ids": [2], "answer": "Rome", "reward": 0.1}],
    }
    pairs, _ = preference_pairs([record], generator_questions=0)
    assert pairs[0]["prompt"] == prompt
    del record["prompt"]  # an older trajectory file: the project prompt, rebuilt
    assert preference_pairs([record], generator_questions=0)[0][0]["prompt"] == reranker_messages("question a", ctxs)


def _evidence():
    path = Path(__file__).resolve().parents[1] / "recipes" / "dynamicrag" / "evidence.py"
    spec = importlib.util.spec_from_file_location("dynamicrag_evidence", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _report():
    """Four questions: the reranker picks passage 2 where the retriever's 1 is wrong, and answers accordingly."""
    predictions = []
    for i, (ours, top1) in enumerate([("Paris", "Rome"), ("Paris", "Paris"), ("Lyon", "Paris"), ("Paris", "Rome")]):
        predictions.append(
            {
                "id": f"q{i}",
                "question": "?",
                "answers": ["Paris"],
                "dynamicrag": {"answer": ours, "selected": [1]},
                "same-k": {"answer": top1, "selected": [0]},
                "top-1": {"answer": top1, "selected": [0]},
                "top-3": {"answer": "Rome", "selected": [0, 1, 2]},
            }
        )
    scores = {"top-1": {"exact_match": 0.5}, "top-3": {"exact_match": 0.0}}
    return {"predictions": predictions, "scores": scores}, {f"q{i}": {1} for i in range(3)} | {"q3": set()}


def test_the_evidence_compares_per_question_with_the_best_fixed_top_k():
    evidence = _evidence()
    report, relevant = _report()
    comparisons = evidence.comparisons_of(report, relevant)
    em = comparisons["em"]
    assert em["baseline"] == "top-1" and em["questions"] == 4 and em["difference"] == pytest.approx(0.25)
    assert em["sign_test"] == {"better": 2, "worse": 1, "p_value": 1.0}
    recall = comparisons["recall"]  # the 3 questions with an answer-bearing passage: 1.0 against 0.0 each
    assert recall["questions"] == 3 and recall["difference"] == 1.0 and recall["ci95"] == [1.0, 1.0]
    summary = evidence.selection_summary(report, relevant)
    assert summary["distinct_lists"] == 1 and summary["first_id_answer_bearing"] == 0.75
    assert summary["retriever_passage_1_answer_bearing"] == 0.0
    assert set(evidence.CELLS) == {"run4", "a", "b", "c", "d"}
    assert "--restate-query" in evidence.CELLS["b"].data and "--shuffled-orders" in evidence.CELLS["a"].data
    assert [name for name, _ in evidence.CELLS["d"].phases] == ["warmup", "sft", "generator"]


def test_seeds_pool_per_question_each_against_its_own_best_top_k():
    evidence = _evidence()
    report, relevant = _report()
    second = {  # a second seed whose reranker answers wrongly everywhere; its best top-k is top-3 (EM 0.75)
        "predictions": [
            {
                **p,
                "dynamicrag": {"answer": "Nice", "selected": [2]},
                "top-3": {"answer": "Paris", "selected": [0, 1, 2]} if i else p["top-3"],
            }
            for i, p in enumerate(report["predictions"])
        ],
        "scores": {"top-1": {"exact_match": 0.5}, "top-3": {"exact_match": 0.75}},
    }
    em = evidence.comparisons_of([report, second], relevant)["em"]
    # per question: seed 1 [+1, 0, -1, +1], seed 2 against top-3 [0, -1, -1, -1]: means [0.5, -0.5, -1, 0]
    assert em["baseline"] == "best fixed top-k per seed: top-1, top-3"
    assert em["seeds"] == [0.25, -0.75] and em["difference"] == pytest.approx(-0.25)
    assert em["sign_test"]["better"] == 1 and em["sign_test"]["worse"] == 2
    assert evidence.mean_scores([{"em": 0.2}, {"em": 0.4}]) == {"em": pytest.approx(0.3)}
    assert evidence.seed_sd([0.2]) is None and evidence.seed_sd([0.2, 0.4]) == pytest.approx(0.1414, abs=1e-4)
    shorter = {**second, "predictions": second["predictions"][:3]}
    with pytest.raises(ValueError, match="same questions"):
        evidence.comparisons_of([report, shorter], relevant)


def test_the_evidence_command_trains_each_seed_and_pools_them(tmp_path, monkeypatch, capsys):
    """The stages `--seeds 42 7` runs (recorded, not run): seed 42's in the output folder, seed 7's in seed-7/, each
    stage given its seed; the JSON pools the two seeds' evaluations."""
    import json

    import retrieval_policies.common.dataset_io as dataset_io
    from scripts import evidence as runner

    evidence = _evidence()
    report, relevant = _report()
    dynamic = {"exact_match": 0.75, "f1": 0.8, "selection_recall": 1.0, "selection_mean_k": 1.0}
    report["scores"] |= {
        "dynamicrag": dynamic | {"selection_malformed_rate": 0.0},
        "same-k": {"exact_match": 0.5, "selection_recall": 0.0},
    }
    rows = [
        {"id": q, "ctxs": [{"relevant": i in wanted, "has_answer": i in wanted} for i in range(3)]}
        for q, wanted in relevant.items()
    ]
    monkeypatch.setattr(dataset_io, "load_split", lambda *args, **kwargs: rows)
    ran = []

    def run(self, name, marker, command):
        ran.append((name, command))
        marker = Path(marker)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(report) if marker.suffix == ".json" else "done")
        self.seconds[name], self.commits[name] = 1.0, None

    monkeypatch.setattr(runner.Stages, "run", run)
    out = tmp_path / "run"
    args = ["--cell", "a", "--seeds", "42", "7", "--output-dir", str(out), "--evidence-dir", str(tmp_path)]
    assert evidence.main(args) == 0
    names = [name for name, _ in ran]
    assert names.count("sft") == 1  # seed 42's model serves both the validation check and the test run
    assert names[:4] == ["data", "sft", "generator", "evaluate sft-validation"]
    assert "sft-seed7" in names and "dpo-seed7" in names and "evaluate dpo-seed7" in names
    commands = dict(ran)
    for name in ("sft", "sample", "dpo"):
        assert commands[name][commands[name].index("--seed") + 1] == "42"
        assert commands[f"{name}-seed7"][commands[f"{name}-seed7"].index("--seed") + 1] == "7"
    assert str(out / "seed-7" / "sft") in commands["generator-seed7"]  # the second phase starts from the first
    written = json.loads((tmp_path / "dynamicrag.json").read_text())
    assert written["seeds"] == [42, 7] and set(written["by_seed"]) == {"42", "7"}
    assert written["comparisons"]["em"]["seeds"] == [0.25, 0.25] and written["noise"]["em"] == 0.0
    assert written["command"] == "make evidence-dynamicrag EVIDENCE_ARGS='--cell a --seeds 42 7'"


def test_rerank_uses_the_restated_prompt_of_its_repo():
    from test_dynamicrag_sampling import _model

    model, _ = _model()
    seen = []
    model.generate_texts = lambda conversations, **kw: seen.extend(conversations) or ["[2]"] * len(conversations)
    model.dynamicrag_config.restate_query = True
    result = model.rerank("Who wrote Hamlet?", ["Paris is a city.", "Hamlet is by Shakespeare."])
    assert result.indices == [1] and seen[0][1]["content"].endswith("Query (again): Who wrote Hamlet?")
    assert "restate_query=True" in repr(model)
