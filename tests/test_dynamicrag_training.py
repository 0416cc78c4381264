"""DynamicRAG training end to end through the recipe scripts: SFT -> sample -> rewards -> pairs -> DPO, each stage's
model output loading through ``AutoModel`` (remote code) without the project, the DPO reference being the SFT model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrieval_policies.dataset_io import write_dataset_folder
from retrieval_policies.dynamicrag.training_examples import behaviour_cloning_examples, generator_examples

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "dynamicrag" / "SmolLM2-135M-Instruct"
FACTS = [("France", "Paris is the capital of France.", "What is the capital of France?", "Paris"),
         ("Japan", "Tokyo is the capital of Japan.", "What is the capital of Japan?", "Tokyo"),
         ("Hamlet", "Hamlet was written by William Shakespeare.", "Who wrote Hamlet?", "William Shakespeare"),
         ("Moon", "Neil Armstrong walked on the Moon in 1969.", "Who first walked on the Moon?", "Neil Armstrong"),
         ("Water", "Water boils at 100 degrees Celsius at sea level.", "At what temperature does water boil?", "100 degrees"),
         ("Everest", "Mount Everest is the highest mountain on Earth.", "What is the highest mountain?", "Mount Everest")]


def _rows():
    rows = []
    for i, (_, _, question, answer) in enumerate(FACTS):
        order = [i, (i + 1) % len(FACTS), (i + 2) % len(FACTS), (i + 3) % len(FACTS)]
        order = order[1:2] + order[:1] + order[2:]  # the relevant passage second
        ctxs = [{"title": FACTS[j][0], "text": FACTS[j][1], "has_answer": j == i, "relevant": j == i} for j in order]
        rows.append({"id": f"q{i}", "question": question, "answers": [answer], "ctxs": ctxs})
    return rows


def _run(script: str, *args: str, timeout: int = 900) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "dynamicrag" / script), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout, env={**__import__("os").environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def _load_without_project(folder: Path) -> dict:
    code = "import sys; sys.modules['retrieval_policies'] = None\n" + textwrap.dedent("""
        import json, sys
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        result = model.rerank("What is the capital of France?", ["Tokyo is in Japan.", "Paris is the capital of France."])
        print(json.dumps({"class": type(model).__name__, "max_passages": model.dynamicrag_config.max_passages,
                          "indices": result.indices}))
    """)
    result = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300, cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sft_sample_rewards_pairs_dpo_end_to_end(tmp_path):
    rows = _rows()
    sft_records = behaviour_cloning_examples(rows, max_length=4) + generator_examples(rows)
    data = write_dataset_folder(tmp_path / "data", {"sft": {"train": sft_records}, "pool": {"train": rows}},
                                pretty_name="test", card_body="test data", license="other", default_config="sft")
    run = tmp_path / "run"
    cpu = ["--use_cpu", "true", "--report_to", "none"]

    _run("sft.py", "--config", str(CONFIGS / "config_sft.yaml"), "--dataset_name", str(data), "--output_dir", str(run / "sft"),
         "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "512", "--max_passages", "4", *cpu)
    _run("sample.py", "--config", str(CONFIGS / "config_sample.yaml"), "--model_name_or_path", str(run / "sft"),
         "--dataset_name", str(data), "--output_file", str(run / "trajectories.jsonl"), "--max_questions", "6",
         "--num_samples", "4", "--temperature", "1.0", "--rerank_max_new_tokens", "16", "--answer_max_new_tokens", "8")
    out = _run("rewards.py", "--config", str(CONFIGS / "config_rewards.yaml"), "--trajectories_file", str(run / "trajectories.jsonl"),
               "--output_file", str(run / "rewards.jsonl"), "--weight_bertscore", "0", "--weight_judge", "0")
    assert "'length': 0.333" in out  # three enabled terms, renormalised
    rewarded = [json.loads(line) for line in (run / "rewards.jsonl").read_text().splitlines()]
    assert len(rewarded) == 6 and all("reward" in t for r in rewarded for t in r["trajectories"])
    _run("pairs.py", "--config", str(CONFIGS / "config_pairs.yaml"), "--rewards_file", str(run / "rewards.jsonl"),
         "--output_dir", str(run / "pairs"), "--generator_questions", "1",
         "--require_correct_answer", "false")  # after 2 SFT steps hardly any answer is right
    assert "normalised_weights" in (run / "pairs" / "README.md").read_text()  # the card records the reward configuration
    _run("dpo.py", "--config", str(CONFIGS / "config_dpo.yaml"), "--model_name_or_path", str(run / "sft"),
         "--dataset_name", str(run / "pairs"), "--output_dir", str(run / "dpo"), "--max_steps", "1",
         "--per_device_train_batch_size", "2", "--max_length", "512", "--learning_rate", "1e-4", "--warmup_steps", "0", *cpu)

    for stage in ("sft", "dpo"):
        loaded = _load_without_project(run / stage)
        assert loaded["class"] == "DynamicRAGModel" and loaded["max_passages"] == 4
        assert json.loads((run / stage / "training_settings.json").read_text())["stage"] == stage
    sft, dpo = load_file(run / "sft" / "model.safetensors"), load_file(run / "dpo" / "model.safetensors")
    assert any(not torch.equal(sft[name], dpo[name]) for name in sft)  # DPO moved the weights away from the reference
