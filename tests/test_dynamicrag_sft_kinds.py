"""`recipes/dynamicrag/sft.py --kinds`: SFT on one kind of record (reranker lists or generator answers), as DPO can."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from testing_utils import load_recipe, tiny_llama
from transformers import AutoTokenizer
from trl import TrlParser
from trl.trainer import utils as trl_utils

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model


class Captured(Exception):
    pass


@pytest.fixture(scope="module")
def sft():
    return load_recipe("dynamicrag", "sft")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def records(tmp_path) -> Path:
    rows = [
        {
            "id": f"q{i}",
            "kind": kind,
            "length": 1,
            "prompt": [{"role": "user", "content": f"{kind} prompt {i}"}],
            "completion": [{"role": "assistant", "content": "[1]" if kind == "reranker" else f"answer {i}"}],
        }
        for i, kind in enumerate(["reranker", "generator", "reranker", "generator", "generator"])
    ]
    path = tmp_path / "sft.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def run(sft, monkeypatch, policy, data, tmp_path, *extra):
    seen = {}

    def trainer(**kwargs):
        seen.update(kwargs)
        raise Captured

    monkeypatch.setattr(sft, "SFTTrainer", trainer)
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # main() patches it: undone after the test
    args = TrlParser(sft.ARGUMENTS).parse_args_and_config(
        [
            "--model_name_or_path",
            str(policy),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(tmp_path / "out"),
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--max_length",
            "64",
            *extra,
        ]
    )
    with pytest.raises(Captured):
        sft.main(*args)
    return seen["train_dataset"]


def test_kinds_selects_the_records_trained_on(sft, monkeypatch, policy, tmp_path):
    data = records(tmp_path)
    both = run(sft, monkeypatch, policy, data, tmp_path)
    assert len(both) == 5
    reranker = run(sft, monkeypatch, policy, data, tmp_path, "--kinds", "reranker")
    assert [row["prompt"][0]["content"] for row in reranker] == ["reranker prompt 0", "reranker prompt 2"]
    assert reranker.column_names == ["prompt", "completion"]


def test_kinds_with_no_records_is_refused_by_name(sft, monkeypatch, policy, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"sft\.parquet \(sft/train\): no rows of kinds \['judge'\] \(kinds there: \['generator', 'reranker'\]\)",
    ):
        run(sft, monkeypatch, policy, records(tmp_path), tmp_path, "--kinds", "judge")


def test_kinds_on_records_without_a_kind_column_is_refused_by_name(sft, monkeypatch, policy, tmp_path):
    data = records(tmp_path)
    pd.read_parquet(data).drop(columns="kind").to_parquet(data)
    with pytest.raises(ValueError, match=r"sft\.parquet \(sft/train\) has no column \['kind'\]"):
        run(sft, monkeypatch, policy, data, tmp_path, "--kinds", "reranker")
