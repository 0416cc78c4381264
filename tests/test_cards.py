"""Cards: GRACE, DynamicRAG, dataset and metric cards render from the artefacts with and without results, their
metadata validates, the training curves are a real PNG, and every python block of a rendered card runs against the
local Hub (the cards cannot lie)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from testing_utils import PACKAGED_METRICS, tiny_llama

from retrieval_policies.assets import DEFAULT_BASE_MODEL
from retrieval_policies.common.dataset_io import dataset_schema, write_dataset_folder
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder
from retrieval_policies.publishing.cards import (
    code_snippets,
    plot_training_curves,
    render_dynamicrag_card,
    render_grace_card,
    render_metric_card,
)
from retrieval_policies.publishing.push import check_folder

ROOT = Path(__file__).resolve().parents[1]
GRPO_HISTORY = [
    {
        "step": s,
        "reward": 0.1 * s,
        "grace/positive_similarity": 0.5 + 0.01 * s,
        "grace/negative_similarity": 0.3,
        "grace/length_penalised_share": 0.25,
        "grace/rationale_tokens": 40,
    }
    for s in range(1, 5)
] + [{"step": 4, "train_runtime": 12.0}]
RESULTS = [{"task": "LocalLeeSTS", "type": "STS", "metric": "cosine_spearman", "score": 0.61, "split": "test"}]
REPORT = {
    "scores": {
        name: {
            "exact_match": em,
            "f1": em,
            "selection_mean_k": k,
            "selection_precision": 0.5,
            "selection_recall": r,
            "selection_ndcg": 0.7,
            "selection_malformed_rate": 0.0 if name == "dynamicrag" else None,
        }
        for name, em, k, r in (("dynamicrag", 0.4, 2.1, 0.9), ("same-k", 0.3, 2.1, 0.8), ("top-1", 0.35, 1, 0.7))
    },
    "predictions": [{"id": "q1"}, {"id": "q2"}],
}


@pytest.fixture
def grace_folder(tmp_path, tokenizer):
    folder = tmp_path / "grace"
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": GRPO_HISTORY}))
    (folder / "training_settings.json").write_text(
        json.dumps(
            {
                "stage": "grpo-supervised",
                "script": {"tau": 0.1, "contrastive": "member", "truncation": "exclude"},
                "training": {"learning_rate": 1e-5, "num_generations": 4},
            }
        )
    )
    return folder


@pytest.fixture
def dynamicrag_folder(tmp_path, tokenizer):
    folder = tmp_path / "dynamicrag"
    DynamicRAGModel(
        tiny_llama(tokenizer),
        tokenizer,
        DynamicRAGConfig(max_passages=3, rerank_max_new_tokens=4, answer_max_new_tokens=4),
    ).save_pretrained(folder)
    history = [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s} for s in range(1, 4)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    (folder / "training_settings.json").write_text(
        json.dumps({"stage": "dpo", "training": {"beta": 0.1, "learning_rate": 2e-5}})
    )
    return folder


def test_grace_card_with_results_rationales_and_curves(grace_folder):
    rationales = [{"text": "bank: land beside water", "rationale": "The key idea is a river's edge."}]
    card = render_grace_card(
        grace_folder,
        "demo/grace-tiny",
        base_model=DEFAULT_BASE_MODEL,
        datasets=["demo/grace-triplets"],
        results=RESULTS,
        baseline=[{**RESULTS[0], "score": 0.55}],
        rationales=rationales,
        decoding={"temperature": 0.0, "max_new_tokens": 16},
    )
    text = (grace_folder / "README.md").read_text()
    assert check_folder("model", grace_folder) == []  # license, pipeline tag and model-index validate
    # the scores' decoding is stated next to the repo's own defaults, which every loading route uses
    assert "with rationales at temperature 0.0 (greedy) and at most 16 new tokens" in text
    assert "Loading the repo uses its own defaults (temperature 1.0, at most 4 new tokens)" in text
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "feature-extraction" and {"custom_code", "mteb", "sentence-transformers"} <= set(
        data["tags"]
    )
    assert data["widget"][0]["source_sentence"] and data["base_model"] == DEFAULT_BASE_MODEL
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.61
    assert "| LocalLeeSTS | STS | cosine_spearman | 0.5500 | 0.6100 |" in text
    # what was trained, its named deviations included
    assert (
        "contrastive similarity of\nthese embeddings: GRACE GRPO with a per-member contrastive reward (contrastive: member"
        in text
    )
    assert (
        "The key idea is a river's edge." in text
        and "| `tau` | `0.1` |" in text
        and "| `stage` | `grpo-supervised` |" in text
    )
    assert (grace_folder / "training_curves.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n" and "![training curves](training_curves.png)" in text
    snippets = code_snippets(text)
    assert len(snippets) == 4 and 'AutoModel.from_pretrained("demo/grace-tiny", trust_remote_code=True)' in snippets[0]
    assert 'pipeline(model="demo/grace-tiny", trust_remote_code=True)' in snippets[1]
    assert "SentenceTransformer(" in snippets[2] and "mteb.evaluate(" in snippets[3]


def test_grace_card_without_results_or_history(grace_folder):
    (grace_folder / "trainer_state.json").unlink()
    card = render_grace_card(grace_folder, "demo/grace-tiny", base_model=DEFAULT_BASE_MODEL)
    text = (grace_folder / "README.md").read_text()
    assert "model-index" not in card.data.to_dict() and "No evaluation results were attached" in text
    assert "training curves" not in text and not (grace_folder / "training_curves.png").exists()
    settings = json.loads((grace_folder / "training_settings.json").read_text())
    (grace_folder / "training_settings.json").write_text(json.dumps({**settings, "script": {"tau": 0.1}}))
    render_grace_card(grace_folder, "demo/grace-tiny", base_model=DEFAULT_BASE_MODEL)
    assert "these embeddings. The weights" in (grace_folder / "README.md").read_text()  # not recorded: not claimed
    assert check_folder("model", grace_folder) == []


def test_dynamicrag_card_with_and_without_evaluation(dynamicrag_folder):
    example = {
        "query": "Who wrote Hamlet?",
        "passages": [{"title": "Hamlet", "text": "By Shakespeare."}],
        "selected": [1],
        "answer": "Shakespeare",
    }
    card = render_dynamicrag_card(
        dynamicrag_folder,
        "demo/dr-tiny",
        base_model=DEFAULT_BASE_MODEL,
        evaluation=REPORT,
        evaluation_data="cloze (pool/test)",
        example=example,
        stages={"dpo": dynamicrag_folder},
    )
    text = (dynamicrag_folder / "README.md").read_text()
    assert check_folder("model", dynamicrag_folder) == []
    assert card.data.to_dict()["pipeline_tag"] == "text-generation"  # listwise: not a cross-encoder
    assert "| dynamicrag | 0.4000 | 0.4000 | 2.10 | 0.5000 | 0.9000 | 0.7000 |" in text and "| same-k |" in text
    assert text.index("| dynamicrag |") < text.index("| same-k |") < text.index("| top-1 |")
    assert "2 held-out questions of `cloze (pool/test)`" in text and "Malformed reranker outputs: 0.0%." in text
    assert "- **Selected ids:** [1]" in text and "- **Answer:** Shakespeare" in text and "| `beta` | `0.1` |" in text
    assert (dynamicrag_folder / "training_curves.png").is_file()
    assert any("model.rerank(query, passages)" in s and "call_batch" in s for s in code_snippets(text))
    assert any('pipeline(model="demo/dr-tiny", trust_remote_code=True)' in s for s in code_snippets(text))

    card = render_dynamicrag_card(dynamicrag_folder, "demo/dr-tiny", base_model=DEFAULT_BASE_MODEL)
    text = (dynamicrag_folder / "README.md").read_text()
    assert (
        "model-index" not in card.data.to_dict()
        and "No evaluation results were attached" in text
        and "## Example" not in text
    )
    empty = {
        "scores": {
            "dynamicrag": {**REPORT["scores"]["dynamicrag"], "selection_mean_k": 0.0, "selection_precision": 1.0}
        }
    }
    render_dynamicrag_card(dynamicrag_folder, "demo/dr-tiny", base_model=DEFAULT_BASE_MODEL, evaluation=empty)
    # precision is undefined with nothing selected: a dash, not the metric's 1.0
    assert "| dynamicrag | 0.4000 | 0.4000 | 0.00 | – | 0.9000 |" in (dynamicrag_folder / "README.md").read_text()


def test_training_curves_skip_what_was_not_logged(tmp_path):
    assert plot_training_curves([{"step": 1, "train_runtime": 3.0}], ("reward",), tmp_path / "c.png", title="t") is None
    assert not (tmp_path / "c.png").exists()
    assert (
        plot_training_curves(
            [{"step": 1, "reward": float("nan")}, {"step": 2, "reward": 1.0}],
            ("reward",),
            tmp_path / "c.png",
            title="t",
        )
        == tmp_path / "c.png"
    )


def test_dataset_card_shows_schema_counts_and_how_to_load(tmp_path):
    configs = {"pairs": {"train": [{"a": 1, "b": None}, {"a": 2, "b": "x"}], "test": [{"a": 3, "b": "y"}]}}
    assert dataset_schema(configs) == [
        {"name": "pairs", "splits": {"train": 2, "test": 1}, "columns": {"a": "int", "b": "str"}}
    ]
    folder = write_dataset_folder(
        tmp_path / "d",
        configs,
        pretty_name="Pairs",
        card_body="Built from **somewhere**.",
        license="mit",
        repo_id="demo/pairs",
    )
    text = (folder / "README.md").read_text()
    assert text.count("# Pairs") == 1 and "Built from **somewhere**." in text
    assert "**`pairs`** (train: 2 rows, test: 1 rows)" in text and "| `b` | str |" in text
    assert code_snippets(text) == [
        'from datasets import load_dataset\n\ndata = load_dataset("demo/pairs", "pairs")\nprint(data)\n'
    ]
    assert check_folder("dataset", folder) == []
    no_repo = write_dataset_folder(tmp_path / "e", configs, pretty_name="Pairs", card_body="x", license="mit")
    assert code_snippets((no_repo / "README.md").read_text()) == []


def test_metric_card_examples_are_computed_by_the_metric(tmp_path):
    import evaluate

    folder = shutil.copytree(PACKAGED_METRICS / "rerank_selection", tmp_path / "rerank_selection")
    render_metric_card(folder, "demo/rerank_selection")
    text = (folder / "README.md").read_text()
    assert check_folder("metric", folder) == []
    [snippet] = code_snippets(text)
    assert 'evaluate.load("demo/rerank_selection")' in snippet
    result = evaluate.load(str(folder)).compute(predictions=[[3, 1], []], references=[[1], []], malformed=[False, True])
    assert f"# {{'mean_k': {result['mean_k']}" in snippet and "'malformed_rate': 0.5}" in snippet
    # the packaged READMEs are the rendered cards (loading the packaged metric)
    for name in ("rag_answer", "rerank_selection", "retrieval"):
        copy = shutil.copytree(PACKAGED_METRICS / name, tmp_path / "fresh" / name)
        render_metric_card(copy)
        assert (copy / "README.md").read_text() == (PACKAGED_METRICS / name / "README.md").read_text(), name


SNIPPETS = """
import json, re, sys
from huggingface_hub import hf_hub_download
repo, repo_type, needs_project = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if not needs_project:
    sys.modules["retrieval_policies"] = None
card = open(hf_hub_download(repo, "README.md", repo_type=repo_type), encoding="utf-8").read()
ran = 0
for number, block in enumerate(re.findall(r"^```python\\n(.*?)^```", card, re.DOTALL | re.MULTILINE), 1):
    if ("retrieval_policies" in block) == needs_project:
        exec(compile(block, f"<{repo} snippet {number}>", "exec"), {"__name__": "__card__"})
        ran += 1
print(json.dumps({"ran": ran}))
"""

PUSH = """
import sys
from retrieval_policies.cli import main
sys.exit(main(["push", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_the_mteb_card_snippet_runs_against_the_local_hub(client, grace_folder):
    """The card snippets that run without the project are run by every push's verification, from a fresh reader
    (the miniature demo test asserts their counts for a model, a dataset and a metric: 3, 2, 1, 1); the mteb snippet
    uses retrieval-policies' encoder wrapper, so it runs here, with the project importable."""
    render_grace_card(grace_folder, "demo/grace-tiny", base_model=DEFAULT_BASE_MODEL, snippet_max_new_tokens=4)
    assert "pushed " in client(PUSH, "model", str(grace_folder), "demo/grace-tiny", "--no-verify").stdout
    assert client.json(SNIPPETS, "demo/grace-tiny", "model", "1", home="reader", timeout=900)["ran"] == 1


def test_a_nan_score_never_reaches_the_card_metadata():
    from retrieval_policies.publishing.cards import _eval_results

    rows = [{**RESULTS[0], "score": float("nan")}, RESULTS[0]]
    assert [r.metric_value for r in _eval_results(rows)] == [round(RESULTS[0]["score"], 4)]


def test_grace_card_shows_the_faithfulness_report_found_in_the_folder(grace_folder):
    report = {
        "task": "LocalWordNetDefinitionRetrieval",
        "ndcg_at_10": {"own_rationale": 0.41, "swapped_rationale": 0.3, "no_rationale": 0.35},
        "cosine_own_vs_swapped": 0.93,
    }
    render_grace_card(grace_folder, "demo/g", base_model=DEFAULT_BASE_MODEL)
    assert "Does the embedding depend on the rationale?" not in (grace_folder / "README.md").read_text()
    (grace_folder / "faithfulness.json").write_text(json.dumps({"model": "x", "tasks": [report]}))
    render_grace_card(grace_folder, "demo/g", base_model=DEFAULT_BASE_MODEL)
    card = (grace_folder / "README.md").read_text()
    assert "| LocalWordNetDefinitionRetrieval | 0.4100 | 0.3000 | 0.3500 | 0.9300 |" in card
