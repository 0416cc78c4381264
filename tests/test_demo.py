"""The demo end to end at miniature size (SmolLM2 for DynamicRAG, a tiny random Llama for GRACE, a step or two per
stage): every stage runs, the summary has
before/after scores and one verified repo per model, dataset and metric; a re-run reuses what was built, and
rebuilding a stage rebuilds the stages after it."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from conftest import tiny_llama
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.demo import METRICS, Demo, DemoSettings, format_summary


@pytest.mark.slow
def test_miniature_demo_end_to_end_then_reuse(tmp_path, capsys):
    tokenizer, grace_model = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True)), tmp_path / "tiny-llama"
    tiny_llama(tokenizer, layers=2).save_pretrained(grace_model)
    tokenizer.save_pretrained(grace_model)
    settings = DemoSettings.miniature(DEFAULT_BASE_MODEL, grace_model=str(grace_model))
    summary = Demo(tmp_path / "demo", settings).main()
    out = capsys.readouterr().out

    assert [s["status"] for s in summary["stages"].values()][:4] == ["grace-triplets, dynamicrag-training", f"{settings.grace_steps} GRPO steps",
                                                                       summary["stages"]["train DynamicRAG (SFT→DPO)"]["status"], "GRACE and DynamicRAG, trained and untrained"]
    scores = {(s["model"], s["metric"]): s for s in summary["scores"]}
    assert ("GRACE", "LocalLeeSTS (mteb main score)") in scores
    for key in (("DynamicRAG", "EM"), ("DynamicRAG", "selection recall"), ("DynamicRAG", "mean k")):
        assert scores[key]["before"] is not None and scores[key]["after"] is not None
    repos = {r["repo"]: r for r in summary["repos"]}
    assert set(repos) == {f"demo/{m}" for m in METRICS} | {"demo/grace-tiny-llama", "demo/dynamicrag-SmolLM2-135M-Instruct",
                                                           "demo/grace-triplets", "demo/dynamicrag-training"}
    assert repos["demo/grace-tiny-llama"]["loaded_with"] == "AutoModel, SentenceTransformer"
    assert repos["demo/grace-triplets"]["loaded_with"] == "load_dataset" and repos["demo/rag_answer"]["loaded_with"] == "evaluate.load"
    pushed = json.loads((tmp_path / "demo" / "pushed.json").read_text())
    assert pushed["grace"]["verified"]["card_snippets_run"] == 2 and pushed["dynamicrag"]["verified"]["card_snippets_run"] == 1
    assert pushed["grace-data"]["verified"]["card_snippets_run"] == 1 and pushed["rag_answer"]["verified"]["card_snippets_run"] == 1
    card = (tmp_path / "demo" / "grace" / "README.md").read_text()
    assert "| LocalLeeSTS | STS | cosine_spearman |" in card and "![training curves](training_curves.png)" in card
    assert f"{DEFAULT_BASE_MODEL}; GRACE on {grace_model}" in summary["model"] and "base_model: tiny-llama" in card
    assert "== demo summary" in out and format_summary(summary) in out



def test_stage_reuse_and_rebuild_order(tmp_path, capsys):
    demo, calls = Demo(tmp_path, DemoSettings()), []
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("x")
    demo.stage("first", tmp_path / "a", lambda: calls.append("first"))
    demo.stage("second", tmp_path / "b", lambda: calls.append("second"))
    assert calls == [] and [s for _, s in demo.timings.values()] == ["reused", "reused"]
    demo.stage("always", None, lambda: calls.append("always") or "ran")
    assert calls == ["always"] and demo.timings["always"][1] == "ran"

    demo, calls = Demo(tmp_path, DemoSettings()), []
    (tmp_path / "a").unlink()  # the first stage's output is gone: it is rebuilt, and so is everything after it
    demo.stage("first", tmp_path / "a", lambda: calls.append("first"))
    demo.stage("second", tmp_path / "b", lambda: calls.append("second"))
    assert calls == ["first", "second"]

    demo, calls = Demo(tmp_path, DemoSettings(), force=True), []
    demo.stage("second", tmp_path / "b", lambda: calls.append("second"))
    assert calls == ["second"] and "[ 1] second" in capsys.readouterr().out
