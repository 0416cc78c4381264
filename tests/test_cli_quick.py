"""The quick-look commands: `grace embed` a few texts, `dynamicrag rerank` passages given on the command line."""

from __future__ import annotations

import json

import pytest
from testing_utils import tiny_llama

from retrieval_policies import cli
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder


def test_grace_embed_prints_rationales_and_similarities(tokenizer, tmp_path, capsys):
    embedder = GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=3, temperature=0.0))
    embedder.save_pretrained(tmp_path / "g")
    texts = ["A dog barked.", "Puppies bark."]
    assert cli.main(["grace", "embed", "--model", str(tmp_path / "g"), *texts, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    vectors, rationales = embedder.encode(texts, return_rationales=True)
    assert [r["rationale"] for r in out["texts"]] == rationales
    assert out["similarity"][0][1] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-4)
    assert cli.main(["grace", "embed", "--model", str(tmp_path / "g"), *texts, "--no-rationale"]) == 0
    text = capsys.readouterr().out
    assert "[1] A dog barked." in text and "rationale:" not in text and "cosine similarity" in text


def test_dynamicrag_rerank_shows_the_selection_the_raw_output_and_the_answer(tokenizer, tmp_path, capsys):
    config = DynamicRAGConfig(rerank_max_new_tokens=6, answer_max_new_tokens=4, temperature=0.0)
    model = DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, config)
    model.save_pretrained(tmp_path / "d")
    passages = ["Hamlet is a play by Shakespeare.", "Paris is in France."]
    argv = ["dynamicrag", "rerank", "--model", str(tmp_path / "d"), "--query", "Who wrote Hamlet?"]
    assert cli.main([*argv, *[x for p in passages for x in ("--passage", p)], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = model.rerank("Who wrote Hamlet?", passages)
    assert out["raw"] == expected.raw and out["selected"] == [i + 1 for i in expected.indices]
    assert out["malformed"] == bool(expected.malformed) and out["answer"] == model.answer(
        "Who wrote Hamlet?", expected.passages
    )
    # constrained, within a budget of one passage: a well-formed list, cut, and the tokens it leaves
    assert (
        cli.main([*argv, *[x for p in passages for x in ("--passage", p)], "--json", "--constrained", "--max-k", "1"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    constrained = model.rerank("Who wrote Hamlet?", passages, constrained=True, max_k=1)
    assert out["malformed"] is False and out["selected"] == [i + 1 for i in constrained.indices]
    assert len(out["selected"]) <= 1 and out["context_tokens"] == constrained.context_tokens
    with pytest.raises(SystemExit):  # argparse refuses a negative budget
        cli.main([*argv, "--passage", "x", "--max-context-tokens", "-1"])


def test_rag_evaluate_compares_rerankers_and_top_k_within_token_budgets(tokenizer, tmp_path):
    from retrieval_policies.rag import evaluate_pipelines, format_table

    config = DynamicRAGConfig(rerank_max_new_tokens=12, answer_max_new_tokens=3, max_passages=4)
    model = DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, config)
    corpus = [{"id": f"p{i}", "title": f"T{i}", "text": f"Fact {i}: the answer is {i}."} for i in range(10)]
    rows = [{"question": f"What is fact {i}?", "answers": [str(i)]} for i in range(3)]
    table = evaluate_pipelines(
        [("bm25", model), ("bm25", "none")], rows, corpus, generator=model, top_n=4, top_k=3, cache_dir=None,
        batch_size=2, show_progress_bar=False, budgets=[20, 40], constrained=True,
    )  # fmt: skip
    assert [(r["reranker"] != "none", r["budget"]) for r in table] == [
        (True, None), (True, 20), (True, 40), (False, None), (False, 20), (False, 40)
    ]  # fmt: skip
    for row in table:
        if row["budget"] is not None:
            assert row["mean_tokens"] <= row["budget"]
    top_k = {r["budget"]: r for r in table if r["reranker"] == "none"}
    assert top_k[None]["mean_k"] == 3 and top_k[20]["mean_k"] < top_k[40]["mean_k"] <= 3
    text = format_table(table)
    assert "budget" in text.splitlines()[0] and "tokens" in text.splitlines()[0]
