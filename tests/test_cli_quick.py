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
