"""A model you saved or trained yourself gets a card without reading the source: `retrieval-policies card`, or
`push model` rendering one when the folder has none; a refusal says what to run."""

from __future__ import annotations

import json

import yaml
from testing_utils import tiny_llama

from retrieval_policies import cli
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _metadata(folder):
    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1]), text


def test_card_command_renders_both_kinds(tokenizer, tmp_path, capsys):
    GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(
        tmp_path / "g"
    )
    DynamicRAGModel(
        tiny_llama(tokenizer).eval(), tokenizer, DynamicRAGConfig(rerank_max_new_tokens=4, answer_max_new_tokens=4)
    ).save_pretrained(tmp_path / "d")
    assert cli.main(["card", str(tmp_path / "g"), "me/grace", "--base-model", BASE]) == 0
    assert cli.main(["card", str(tmp_path / "d"), "me/dynamicrag", "--base-model", BASE, "--no-examples"]) == 0
    grace, grace_text = _metadata(tmp_path / "g")
    dynamicrag, _ = _metadata(tmp_path / "d")
    assert grace["pipeline_tag"] == "feature-extraction" and grace["base_model"] == BASE and "me/grace" in grace_text
    assert dynamicrag["base_model"] == BASE and "dynamicrag" in dynamicrag["tags"]
    assert "push model" in capsys.readouterr().out
    # an existing card is kept unless --force
    assert cli.main(["card", str(tmp_path / "g"), "me/grace", "--base-model", BASE]) == 2
    assert "--force" in capsys.readouterr().err


def test_push_renders_a_missing_card_from_the_training_settings(tokenizer, tmp_path, capsys):
    folder = tmp_path / "trained"
    GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(folder)
    # a folder without a recorded base model: the refusal names the command that renders the card
    assert cli.main(["push", "model", str(folder), "me/trained", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "retrieval-policies card" in err and "--base-model" in err and not (folder / "README.md").exists()
    # as a recipe leaves it (training_settings.json names the base model): the card is rendered, then checked
    (folder / "training_settings.json").write_text(
        json.dumps({"stage": "grpo", "script": {"model_name_or_path": BASE}})
    )
    assert cli.main(["push", "model", str(folder), "me/trained", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "rendered README.md" in out and "  README.md" in out
    assert _metadata(folder)[0]["base_model"] == BASE
    # the placeholder card TRL's trainers write at save is replaced; a card of the user's own is kept
    (folder / "README.md").write_text(
        "---\nlibrary_name: transformers\ntags:\n- generated_from_trainer\n- trl\n- grpo\n---\n# x\n"
    )
    assert cli.main(["push", "model", str(folder), "me/trained", "--dry-run"]) == 0
    assert (
        "rendered README.md" in capsys.readouterr().out and _metadata(folder)[0]["pipeline_tag"] == "feature-extraction"
    )
    (folder / "README.md").write_text("---\nlicense: mit\npipeline_tag: feature-extraction\n---\n# mine\n")
    assert cli.main(["push", "model", str(folder), "me/trained", "--dry-run"]) == 0
    assert "rendered" not in capsys.readouterr().out and "# mine" in (folder / "README.md").read_text()
