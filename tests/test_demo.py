"""The demo end to end at miniature size (SmolLM2 for DynamicRAG, a tiny random Llama for GRACE, a step or two per
stage): every stage runs, the summary has before/after scores and one verified repo per model, dataset and metric
(reusing what was built, and rebuilding the stages after a rebuilt one, is test_stage_reuse_and_rebuild_order's). It is also the DynamicRAG recipes'
end-to-end test (SFT -> sample -> rewards -> pairs -> DPO through the recipe scripts, each stage's model loading
through ``AutoModel`` without the project, the DPO reference being the SFT model)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from scripts.demo import METRICS, Demo, DemoSettings, format_summary


@pytest.mark.slow
def test_miniature_demo_end_to_end_then_reuse(tmp_path, capsys):
    tokenizer, grace_model = (
        AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True)),
        tmp_path / "tiny-llama",
    )
    tiny_llama(tokenizer, layers=2).save_pretrained(grace_model)
    tokenizer.save_pretrained(grace_model)
    settings = DemoSettings.miniature(DEFAULT_BASE_MODEL, grace_model=str(grace_model))
    summary = Demo(tmp_path / "demo", settings).main()
    out = capsys.readouterr().out

    assert [s["status"] for s in summary["stages"].values()][:4] == [
        "grace-triplets, dynamicrag-training",
        f"{settings.grace_steps} GRPO steps",
        summary["stages"]["train DynamicRAG (SFT→DPO)"]["status"],
        "GRACE and DynamicRAG, trained and untrained",
    ]
    scores = {(s["model"], s["metric"]): s for s in summary["scores"]}
    assert ("GRACE", "LocalLeeSTS (mteb main score)") in scores
    for key in (("DynamicRAG", "EM"), ("DynamicRAG", "selection recall"), ("DynamicRAG", "mean k")):
        assert scores[key]["before"] is not None and scores[key]["after"] is not None
    assert [k for k, s in scores.items() if s.get("demo_result")] == [
        ("DynamicRAG", "malformed outputs")
    ]  # the learning check
    repos = {r["repo"]: r for r in summary["repos"]}
    assert set(repos) == {f"demo/{m}" for m in METRICS} | {
        "demo/grace-tiny-llama",
        "demo/dynamicrag-SmolLM2-135M-Instruct",
        "demo/grace-triplets",
        "demo/dynamicrag-training",
    }
    assert repos["demo/grace-tiny-llama"]["loaded_with"] == "AutoModel, SentenceTransformer"
    assert (
        repos["demo/grace-triplets"]["loaded_with"] == "load_dataset"
        and repos["demo/rag_answer"]["loaded_with"] == "evaluate.load"
    )
    pushed = json.loads((tmp_path / "demo" / "pushed.json").read_text())
    assert (
        pushed["grace"]["verified"]["card_snippets_run"] == 3
        and pushed["dynamicrag"]["verified"]["card_snippets_run"] == 2
    )
    assert (
        pushed["grace-data"]["verified"]["card_snippets_run"] == 1
        and pushed["rag_answer"]["verified"]["card_snippets_run"] == 1
    )
    card = (tmp_path / "demo" / "grace" / "README.md").read_text()
    assert "| LocalLeeSTS | STS | cosine_spearman |" in card and "![training curves](training_curves.png)" in card
    assert f"{DEFAULT_BASE_MODEL}; GRACE on {grace_model}" in summary["model"] and "base_model: tiny-llama" in card
    assert "== demo summary" in out and format_summary(summary) in out
    logs = summary["training_logs"]  # the recipes' trackio runs, in the demo's own folder, and how to open them
    assert logs["dir"] == str(tmp_path / "demo" / "trackio") and sorted(logs["runs"]) == [
        "smollm2-135m-instruct-dynamicrag-dpo",
        "smollm2-135m-instruct-dynamicrag-sft",
        "smollm2-135m-instruct-grace-supervised",
    ]
    assert f"dashboard: TRACKIO_DIR={logs['dir']} trackio show --project retrieval-policies" in out
    for published in ("grace", "dynamicrag", "dynamicrag-run/sft", "dynamicrag-run/dpo"):  # no path of this machine
        for name in ("README.md", "training_settings.json"):
            path = tmp_path / "demo" / published / name
            assert not path.is_file() or str(tmp_path) not in path.read_text(), f"{path} names a local path"
    _check_dynamicrag_recipe_outputs(tmp_path / "demo")


def _check_dynamicrag_recipe_outputs(demo: Path) -> None:
    """What the DynamicRAG stages left behind: the renormalised reward weights, the reward configuration in the pairs'
    card, a method repo from every training stage, and DPO weights that moved away from the SFT reference."""
    run = demo / "dynamicrag-run"
    assert (
        "'length': 0.333" in (demo / "logs" / "dynamicrag-rewards.log").read_text()
    )  # three enabled terms, renormalised
    rewarded = [json.loads(line) for line in (run / "rewards.jsonl").read_text().splitlines()]
    assert len(rewarded) == DemoSettings.miniature(DEFAULT_BASE_MODEL).sample_questions
    assert all("reward" in t for r in rewarded for t in r["trajectories"])
    assert "normalised_weights" in (run / "pairs" / "README.md").read_text()
    for stage in ("sft", "dpo"):
        assert json.loads((run / stage / "training_settings.json").read_text())["stage"] == stage
    loaded = _load_without_project(run / "sft")  # the DPO output is loaded from the Hub by the push verification
    assert loaded["class"] == "DynamicRAGModel" and loaded["max_passages"] == 4
    pushed = json.loads((demo / "pushed.json").read_text())["dynamicrag"]["verified"]
    assert pushed["class"] == "DynamicRAGModel"
    sft, dpo = load_file(run / "sft" / "model.safetensors"), load_file(run / "dpo" / "model.safetensors")
    assert any(not torch.equal(sft[name], dpo[name]) for name in sft)


def _load_without_project(folder: Path) -> dict:
    code = "import sys; sys.modules['retrieval_policies'] = None\n" + textwrap.dedent("""
        import json, sys
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        result = model.rerank("What is the capital of France?", ["Tokyo is in Japan.", "Paris is the capital of France."])
        print(json.dumps({"class": type(model).__name__, "max_passages": model.dynamicrag_config.max_passages,
                          "indices": result.indices}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300, cwd=folder.parent
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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
