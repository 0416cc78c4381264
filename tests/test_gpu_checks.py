"""The prepared GPU checks (benchmarks/gpu_check_*.py) run end to end with --device cpu, so that the script a lent
GPU will run cannot rot between loans (issue 36: the GRACE check had crashed at its GRPO step unnoticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--device", "cpu", *args, "--output", str(report)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(report.read_text())


def test_grace_gpu_check_runs_on_the_cpu(tmp_path):
    report = _run("gpu_check_grace.py", tmp_path, "--texts", "64")
    assert report["grpo_step"]["reward_embeddings_on"] == ["cpu"] and report["grpo_step"]["grace/reward"] is not None
    assert report["grace_encode"]["texts"] == 64
    assert {"tiny-llama", "tiny-qwen2"} <= set(report)


def test_dynamicrag_gpu_check_runs_on_the_cpu(tmp_path):
    # 120 untimed teaching steps (the GPU run: 300) are enough for sampled lists to differ and give DPO pairs (40 are not)
    report = _run("gpu_check_dynamicrag.py", tmp_path, "--teach-steps", "120")
    assert set(report["stage_seconds"]) >= {"sft", "sample", "rewards", "pairs", "dpo", "evaluate"}
    assert report["reward_models"]["bertscore"] == report["reward_models"]["judge"] == "cpu"
    assert "exact_match" in report["evaluate"]
