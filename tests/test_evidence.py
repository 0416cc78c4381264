"""The evidence files' schema (recipes/evidence/<method>.json), their table, and the demo summary reading them."""

from __future__ import annotations

import json
import re

import pytest

from scripts import evidence
from scripts.demo import format_evidence


def _grace() -> dict:
    return {
        "before": {"LocalWordNetDefinitionRetrieval": 0.357},
        "after": {"LocalWordNetDefinitionRetrieval": 0.371},
        "criteria_met": True,
        "criteria": {"held-out task above untrained": True},
        "seeds": [1, 2],
        "command": "make evidence-grace",
        "commit": "0123456789abcdef",
        "wall_seconds": 4200.0,
        "provenance": {"weights": "the packaged Q4_1 GGUF, dequantised to fp32", "objective": "GRACE GRPO"},
    }


def test_evidence_round_trip_and_table(tmp_path):
    path = evidence.write("grace", _grace(), tmp_path)
    assert json.loads(path.read_text())["after"]["LocalWordNetDefinitionRetrieval"] == 0.371
    assert not list(tmp_path.glob("*.tmp"))
    table = evidence.table(evidence.load("grace", tmp_path))
    assert "| LocalWordNetDefinitionRetrieval | 0.3570 | 0.3710 |" in table
    assert "Criteria met (held-out task above untrained: met)" in table and "`make evidence-grace`" in table
    assert evidence.load("dynamicrag", tmp_path) is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("commit"), "missing field 'commit'"),
        (lambda d: d.update(criteria_met="yes"), "field 'criteria_met' must be bool"),
        (lambda d: d["after"].update(LocalLeeSTS="high"), r"after\['LocalLeeSTS'\] must be a number"),
        (lambda d: d.update(seeds=3), "field 'seeds' must be list"),
        (lambda d: d["provenance"].pop("weights"), "provenance lacks 'weights'"),
        (lambda d: d.update(comparisons={"LocalLeeSTS": {"difference": 0.1}}), r"comparisons\['LocalLeeSTS'\] needs"),
    ],
)
def test_a_bad_evidence_file_names_its_field(tmp_path, change, message):
    data = _grace()
    change(data)
    with pytest.raises(ValueError, match=message):
        evidence.write("grace", data, tmp_path)
    assert not (tmp_path / "grace.json").exists()  # nothing half-written
    (tmp_path / "grace.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=str(tmp_path / "grace.json")):
        evidence.load("grace", tmp_path)


def test_the_table_and_the_demo_show_the_confidence_intervals(tmp_path):
    data = {
        **_grace(),
        "before_label": "the best untrained configuration per task",
        "after_label": "the mean of 3 seeds",
        "comparisons": {
            "LocalWordNetDefinitionRetrieval": {
                "difference": 0.014,
                "ci95": [-0.02, 0.05],
                "sign_test": {"better": 26, "worse": 18, "p_value": 0.29},
            }
        },
    }
    evidence.write("grace", data, tmp_path)
    table = evidence.table(evidence.load("grace", tmp_path))
    assert (
        "| LocalWordNetDefinitionRetrieval | 0.3570 | 0.3710 | +0.0140 [-0.0200, +0.0500] | 26 / 18 (p = 0.29) |"
        in table
    )
    assert "Before: the best untrained configuration per task; after: the mean of 3 seeds." in table
    assert "Trained: GRACE GRPO. Weights: the packaged Q4_1 GGUF, dequantised to fp32." in table
    lines = "\n".join(format_evidence(evidence.summary_rows(tmp_path)))
    assert "+0.0140, 95% CI [-0.0200, +0.0500]" in lines and "trained: GRACE GRPO" in lines


def test_the_committed_evidence_follows_the_schema():
    for method in evidence.METHODS:
        data = evidence.load(method)
        assert data is not None and "Q4_1" in data["provenance"]["weights"]
    assert evidence.load("dynamicrag")["runs"] and not evidence.load("dynamicrag")["criteria_met"]


def test_dynamicrag_evidence_reports_its_keys(tmp_path):
    data = {**_grace(), "before": {"em": 0.1}, "after": {"em": 0.2}}
    with pytest.raises(ValueError, match="retriever_recall_same_k"):
        evidence.write("dynamicrag", data, tmp_path)
    data["after"] = dict.fromkeys(evidence.DYNAMICRAG_KEYS, 0.5)
    assert evidence.write("dynamicrag", data, tmp_path).name == "dynamicrag.json"


def test_the_demo_summary_shows_the_committed_evidence_labelled(tmp_path):
    evidence.write("grace", _grace(), tmp_path)
    lines = "\n".join(format_evidence(evidence.summary_rows(tmp_path)))
    assert "latest committed evidence, grace: criteria met (recipes/evidence/grace.json, commit 0123456789ab)" in lines
    assert "0.3570   0.3710" in lines and "reproduce: make evidence-grace" in lines
    assert "latest committed evidence, dynamicrag: no evidence run committed yet" in lines
    assert "reproduce: make evidence-dynamicrag" in lines


def test_finish_adds_commit_and_stage_times_and_prints_the_table(tmp_path, capsys):
    stages = evidence.Stages(tmp_path / "logs", cwd=evidence.PROJECT_ROOT)
    stages.run("one", tmp_path / "one.done", ["python", "-c", "import time; time.sleep(0.2)"])  # seconds above 0
    report = {k: v for k, v in _grace().items() if k not in ("commit", "wall_seconds")}
    path = evidence.finish("grace", report, stages, tmp_path)
    data = evidence.load("grace", tmp_path)
    assert path == tmp_path / "grace.json" and data["commit"] == evidence.current_commit() and len(data["commit"]) == 40
    printed = capsys.readouterr().out
    assert data["stage_seconds"] == {"one": data["wall_seconds"]} and "| LocalWordNetDefinitionRetrieval |" in printed
    assert "one: 0 s" in printed and re.search(r"\n  one +\d+\n  total +\d+\n", printed)  # each stage's seconds
    assert data["clean_tree"] is evidence.tree_is_clean() and "stage_commits" not in data
    seconds = stages.seconds["one"]
    stages.run("one", tmp_path / "one.done", ["python", "-c", "raise SystemExit(1)"])  # asked again: skipped
    assert stages.seconds["one"] == seconds > 0 and stages.commits["one"]["commit"] == data["commit"]


def test_the_commit_is_the_one_each_stage_ran_at_not_the_one_checked_out_at_the_end(tmp_path):
    logs = tmp_path / "logs"
    first = evidence.Stages(logs, cwd=evidence.PROJECT_ROOT)
    first.run("train", tmp_path / "train.done", ["python", "-c", "pass"])
    recorded = json.loads((logs / "stage_commits.json").read_text())
    assert recorded["train"]["commit"] == evidence.current_commit()
    recorded["train"] = {"commit": "f" * 40, "clean": True}  # as if trained at an older commit, then resumed
    (logs / "stage_commits.json").write_text(json.dumps(recorded))
    resumed = evidence.Stages(logs, cwd=evidence.PROJECT_ROOT)
    resumed.run("train", tmp_path / "train.done", ["python", "-c", "raise SystemExit(1)"])  # skipped: marker exists
    report = {k: v for k, v in _grace().items() if k not in ("commit", "wall_seconds")}
    evidence.finish("grace", report, resumed, tmp_path)
    resumed_data = evidence.load("grace", tmp_path)
    assert resumed_data["commit"] == "f" * 40 and resumed_data["report_commit"] == evidence.current_commit()
    resumed.run("eval", tmp_path / "eval.done", ["python", "-c", "pass"])  # a stage at today's commit: both are named
    data = json.loads(evidence.finish("grace", report, resumed, tmp_path).read_text())
    assert data["commit"] == evidence.current_commit() and data["stage_commits"]["train"]["commit"] == "f" * 40


def test_the_demo_summary_labels_its_one_learning_check_and_the_evidence(tmp_path):
    from scripts.demo import format_summary

    evidence.write("grace", _grace(), tmp_path)
    scores = [
        {
            "model": "GRACE",
            "metric": "LocalLeeSTS (mteb main score)",
            "before": 0.54,
            "after": 0.53,
            "demo_result": False,
        },
        {"model": "DynamicRAG", "metric": "malformed outputs", "before": 1.0, "after": 0.0, "demo_result": True},
        {
            "model": "DynamicRAG",
            "metric": "EM of the best fixed top-k (trained generator)",
            "before": None,
            "after": 0.125,
        },
    ]
    summary = {
        "model": "m",
        "seconds": 600.0,
        "scores": scores,
        "repos": [],
        "stages": {},
        "sizes": {"sft_steps": 20, "sft_batch": 4, "eval_questions": 8, "grace_steps": 3},
        "evidence": evidence.summary_rows(tmp_path),
    }
    lines = format_summary(summary).splitlines()
    row = lambda metric: next(line for line in lines if metric in line)  # noqa: E731
    assert row("malformed outputs").endswith("1.0000   0.0000  learning check")
    assert row("LocalLeeSTS").endswith("smoke test") and row("best fixed top-k").endswith("smoke test")
    text = "\n".join(lines)
    assert "DynamicRAG's SFT (20 steps x 4, evaluated on 8 held-out questions)" in text
    assert "not a result" in text and "latest committed evidence, grace: criteria met" in text
    assert text.index("latest committed evidence") > text.index("malformed outputs")


def _recipe(method: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"{method}_evidence", evidence.PROJECT_ROOT / "recipes" / method / "evidence.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grace_criteria_need_the_interval_above_zero_and_name_the_objective():
    grace = _recipe("grace")
    comparisons = {task: {"ci95": [0.01, 0.05]} for task in grace.TASKS}
    assert all(grace.criteria_of(comparisons).values())
    comparisons[grace.HELD_OUT]["ci95"] = [-0.04, 0.11]  # a positive mean whose interval includes 0: not a claim
    comparisons["LocalLeeSTS"]["ci95"] = [-0.03, 0.0]  # an interval touching 0 from below: not lowered
    failed = [name for name, met in grace.criteria_of(comparisons).items() if not met]
    assert failed == [f"{grace.HELD_OUT}: the 95% CI of the gain over the best untrained configuration above 0"]
    assert "per-member contrastive reward" in grace.objective({"contrastive": "member", "truncation": "exclude"})
    assert grace.objective({"contrastive": "group"}) == "GRACE GRPO (the published reward)"
    assert set(grace.BASELINES) == {"short prompt", "published prompt", "no rationale"}


def test_the_readme_states_the_committed_grace_claims_as_the_json_has_them():
    readme = " ".join((evidence.PROJECT_ROOT / "README.md").read_text().split())
    data = evidence.load("grace")
    assert evidence.headline(data) in readme
    assert (
        "per-member contrastive reward" in readme and "per-member contrastive reward" in data["provenance"]["objective"]
    )


def test_the_headline_says_whether_each_interval_clears_zero():
    data = {
        **_grace(),
        "criteria_met": False,
        "comparisons": {
            "LocalWordNetDefinitionRetrieval": {"difference": 0.047, "ci95": [-0.023, 0.114]},
            "LocalLeeSTS": {"difference": 0.03, "ci95": [0.01, 0.05]},
            "X": {"difference": -0.03, "ci95": [-0.05, -0.01]},
        },
    }
    assert evidence.headline(data) == (
        "held-out WordNet synsets +0.047 (95% CI -0.023 to +0.114: no clear change); LeeSTS +0.030 (95% CI +0.010 to "
        "+0.050: a gain); X -0.030 (95% CI -0.050 to -0.010: a loss). Criteria not met (2 seeds)."
    )
