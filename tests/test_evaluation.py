"""mteb integration: the GRACE encoder wrapper, the offline tasks and their held-out split."""

from __future__ import annotations

import json
import subprocess
import sys

import mteb
import numpy as np
import pytest
from scipy.stats import spearmanr
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.corpora import WordNet, WordNetNotFoundError, load_lee
from retrieval_policies.evaluation import (
    GraceMtebEncoder,
    LocalLeeSTS,
    LocalWikipediaSectionRetrieval,
    LocalWordNetDefinitionRetrieval,
    heldout_ids,
    heldout_texts,
)
from retrieval_policies.evaluation.local_tasks import normalize_text
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder


@pytest.fixture(scope="module")
def wordnet_installed():
    try:
        WordNet()
    except WordNetNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def tiny_embedder():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    return GraceEmbedder(
        tiny_llama(tokenizer, layers=2).eval(),
        tokenizer,
        GraceConfig(max_new_tokens=4, temperature=0.0),
        revision="tiny",
    )


def _split(task):
    task.load_data()
    return task.dataset["default"]["test"]


def test_heldout_split_covers_every_task_item(wordnet_installed):
    ids = heldout_ids()
    assert {k: len(v) for k, v in ids.items()} == {
        "wordnet_synsets": 458,
        "wikipedia_sections": 136,
        "wikipedia_passages": 383,
        "lee_documents": 50,
    }
    texts = heldout_texts()
    wordnet = _split(LocalWordNetDefinitionRetrieval())
    assert (len(wordnet["queries"]), len(wordnet["corpus"])) == (100, 300)
    assert set(wordnet["corpus"]["id"]) <= ids["wordnet_synsets"]
    wiki = _split(LocalWikipediaSectionRetrieval())
    assert (len(wiki["queries"]), len(wiki["corpus"])) == (136, 383)
    assert set(wiki["corpus"]["id"]) == ids["wikipedia_passages"]
    for split in (wordnet, wiki):
        corpus = set(split["corpus"]["id"])
        assert all(set(docs) <= corpus for docs in split["relevant_docs"].values())
        assert all(normalize_text(t) in texts for t in list(split["queries"]["text"]) + list(split["corpus"]["text"]))
    assert all(normalize_text(d) in texts for d in load_lee().documents)
    # Deterministic and independent of task size.
    assert (
        heldout_ids() == ids
        and set(_split(LocalWordNetDefinitionRetrieval(max_documents=20))["corpus"]["id"]) <= ids["wordnet_synsets"]
    )


CARD = {"pretty_name": "t", "card_body": "t", "license": "other"}


def test_triplet_validation_task_retrieves_each_query_s_positive_among_the_split(tmp_path):
    from retrieval_policies.common.dataset_io import write_dataset_folder
    from retrieval_policies.evaluation.local_tasks import TripletValidationRetrieval
    from retrieval_policies.evaluation.run import resolve_tasks

    rows = [
        {"id": "a", "query": "q1", "positive": "p1", "negative": "shared", "source": "s"},
        {"id": "b", "query": "q2", "positive": "p2", "negative": "shared", "source": "s"},
        {"id": "c", "query": "q3", "positive": "shared", "negative": "p1", "source": "s"},
    ]
    write_dataset_folder(tmp_path / "d", {"triplets": {"train": rows[:1], "validation": rows}}, **CARD)
    split = _split(TripletValidationRetrieval(tmp_path / "d"))
    docs = dict(zip(split["corpus"]["id"], split["corpus"]["text"]))
    assert sorted(docs.values()) == ["p1", "p2", "shared"]  # each text once
    assert {q: docs[next(iter(r))] for q, r in split["relevant_docs"].items()} == {
        "q0": "p1",
        "q1": "p2",
        "q2": "shared",
    }
    assert list(split["queries"]["text"]) == ["q1", "q2", "q3"]
    assert [t.metadata.name for t in resolve_tasks(None, str(tmp_path / "d"))] == ["TripletValidationRetrieval"]
    assert [t.metadata.name for t in resolve_tasks(["LocalLeeSTS"], str(tmp_path / "d"))] == [
        "LocalLeeSTS",
        "TripletValidationRetrieval",
    ]
    write_dataset_folder(tmp_path / "e", {"triplets": {"train": rows, "validation": []}}, **CARD)
    with pytest.raises(ValueError, match="no 'validation' split in config 'triplets'"):
        _split(TripletValidationRetrieval(tmp_path / "e"))


def test_encoder_scores_lee_like_a_hand_computation(tiny_embedder, tmp_path):
    encoder = GraceMtebEncoder(tiny_embedder, name="test/tiny-grace", rationale=True)
    result = mteb.evaluate(encoder, [LocalLeeSTS()], cache=mteb.ResultCache(str(tmp_path)), show_progress_bar=False)
    score = result.task_results[0].get_score()
    lee = load_lee()
    vectors = tiny_embedder.encode(list(lee.documents))
    cosines = [float(vectors[i] @ vectors[j]) for i, j, _ in lee.pairs()]
    expected = spearmanr(cosines, [s for _, _, s in lee.pairs()]).statistic
    assert score == pytest.approx(expected, abs=1e-4)
    files = list((tmp_path / "results").rglob("LocalLeeSTS.json"))
    assert len(files) == 1 and "test__tiny-grace" in str(files[0])
    meta = json.loads((files[0].parent / "model_meta.json").read_text())
    assert meta["experiment_kwargs"] == {"rationale": True}


def test_each_text_of_a_task_is_embedded_once(tiny_embedder, tmp_path, monkeypatch):
    # mteb's STS evaluator asks for both sides of Lee's 1225 pairs: 2 x 1225 texts, 50 distinct documents
    seen = []
    original = tiny_embedder.encode
    monkeypatch.setattr(tiny_embedder, "encode", lambda texts, **kw: seen.extend(texts) or original(texts, **kw))
    encoder = GraceMtebEncoder(tiny_embedder, name="test/tiny-grace-once", rationale=True)
    mteb.evaluate(encoder, [LocalLeeSTS()], cache=mteb.ResultCache(str(tmp_path / "once")), show_progress_bar=False)
    assert len(seen) == len(set(seen)) == len(load_lee().documents)
    # past the limit, texts are still embedded (again when asked again), and the scores do not change
    seen.clear()
    capped = GraceMtebEncoder(tiny_embedder, name="test/tiny-grace-capped", rationale=True)
    capped.MEMO_LIMIT = 10
    result = mteb.evaluate(
        capped, [LocalLeeSTS()], cache=mteb.ResultCache(str(tmp_path / "capped")), show_progress_bar=False
    )
    assert len(capped._seen) == 10 and 50 < len(seen) < 2 * 50  # the second side re-embeds what was not kept
    again = mteb.evaluate(
        encoder, [LocalLeeSTS()], cache=mteb.ResultCache(str(tmp_path / "again")), show_progress_bar=False
    )
    assert result.task_results[0].get_score() == pytest.approx(again.task_results[0].get_score(), abs=1e-6)
    # unseeded sampling is not reproducible: each request is sampled afresh
    seen.clear()
    sampled = GraceMtebEncoder(
        tiny_embedder, name="test/tiny-grace-sampled", rationale=True, temperature=1.0, seed=None
    )
    mteb.evaluate(sampled, [LocalLeeSTS()], cache=mteb.ResultCache(str(tmp_path / "sampled")), show_progress_bar=False)
    assert len(seen) == 2 * len(list(load_lee().pairs()))


def test_prompt_type_passes_through(tiny_embedder, tmp_path, monkeypatch, wordnet_installed):
    seen = []
    original = tiny_embedder.encode
    monkeypatch.setattr(
        tiny_embedder, "encode", lambda texts, **kw: seen.append((len(texts), kw["rationale"])) or original(texts, **kw)
    )
    encoder = GraceMtebEncoder(
        tiny_embedder, name="test/tiny-grace-docs", rationale=True, document_options={"rationale": False}
    )
    mteb.evaluate(
        encoder,
        [LocalWordNetDefinitionRetrieval(max_documents=12, query_every=4)],
        cache=mteb.ResultCache(str(tmp_path)),
        show_progress_bar=False,
    )
    assert (3, True) in seen and (12, False) in seen  # queries with rationales, documents without


def test_model_meta(tiny_embedder, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "retrieval_policies_source.json").write_text(json.dumps({"license": "apache-2.0"}))
    tiny_embedder.model.config.name_or_path = str(folder)
    meta = GraceMtebEncoder(tiny_embedder, name="org/tiny", rationale=False).mteb_model_meta
    assert (meta.name, meta.revision, meta.embed_dim, meta.license) == ("org/tiny", "tiny", 32, "apache-2.0")
    assert meta.n_parameters == sum(p.numel() for p in tiny_embedder.model.parameters())
    assert meta.similarity_fn_name.value == "cosine" and meta.use_instructions is False
    with pytest.raises(ValueError, match="unknown encode options"):
        GraceMtebEncoder(tiny_embedder, name="org/tiny", normalise=True)


def test_mock_run(tiny_embedder):
    results = mteb.mock_run(GraceMtebEncoder(tiny_embedder, name="test/tiny-mock", rationale=True))
    ran = {name: r for name, r in results.task_results.items() if r is not None}
    assert "MockRetrievalTask" in ran and "MockSTSTask" in ran and "MockClassificationTask" in ran
    assert all(isinstance(r, mteb.TaskResult) for r in ran.values()), {k: type(v).__name__ for k, v in ran.items()}


def test_unknown_task_name_is_a_clear_error():
    from retrieval_policies.evaluation.run import resolve_tasks

    with pytest.raises(ValueError, match="unknown task"):
        resolve_tasks(["NoSuchTaskAnywhere"])


@pytest.mark.slow
def test_grace_evaluate_command(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval_policies.cli",
            "grace",
            "evaluate",
            "--model",
            DEFAULT_BASE_MODEL,
            "--tasks",
            "LocalLeeSTS",
            "--no-rationale",
            "--output-dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("LocalLeeSTS"))
    assert line.split()[1] == "cosine_spearman" and 0.3 < float(line.split()[2]) < 0.8
    files = list(tmp_path.rglob("LocalLeeSTS.json"))
    assert len(files) == 1 and "HuggingFaceTB__SmolLM2-135M-Instruct" in str(files[0])


def test_sentence_transformer_baseline_on_wordnet(tmp_path, wordnet_installed):
    # WordNet rather than Lee: mteb's STS evaluator encodes both texts of each of Lee's 1225 pairs (2450 long
    # documents, 40 s), the retrieval task 400 short texts
    from retrieval_policies.evaluation.run import evaluate_model, format_table

    rows = evaluate_model(
        "sentence-transformers/all-MiniLM-L6-v2",
        tasks=["LocalWordNetDefinitionRetrieval"],
        sentence_transformer=True,
        output_dir=tmp_path,
    )
    assert [(r.task, r.metric) for r in rows] == [("LocalWordNetDefinitionRetrieval", "ndcg_at_10")]
    assert rows[0].score == pytest.approx(0.5608, abs=0.005)  # the reference number in docs/experiments/grace.md
    assert "LocalWordNetDefinitionRetrieval" in format_table(rows)
    assert list(tmp_path.rglob("LocalWordNetDefinitionRetrieval.json"))


def test_model_meta_loads_the_model_with_its_settings(tmp_path):
    from testing_utils import tiny_llama
    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(tmp_path / "m")
    embedder = GraceEmbedder.from_pretrained(tmp_path / "m")
    meta = GraceMtebEncoder(
        embedder, name="org/m", temperature=0, document_options={"rationale": False}
    ).mteb_model_meta
    assert meta.training_datasets == set()  # an untrained backbone: no training data of its own
    loaded = meta.load_model(device="cpu")
    assert isinstance(loaded, GraceMtebEncoder) and loaded.encode_options == {"temperature": 0}
    assert loaded.document_options == {"rationale": False} and loaded.model.device.type == "cpu"
    np.testing.assert_allclose(
        loaded.model.encode(["a dog"], temperature=0), embedder.encode(["a dog"], temperature=0), atol=1e-6
    )
    (tmp_path / "m" / "training_settings.json").write_text(json.dumps({"stage": "grpo-supervised", "script": {}}))
    assert (
        GraceMtebEncoder(GraceEmbedder.from_pretrained(tmp_path / "m"), name="org/m").mteb_model_meta.training_datasets
        is None
    )


def test_grace_evaluate_passes_placement_backend_and_benchmark(monkeypatch, tmp_path, capsys):
    from retrieval_policies import cli
    from retrieval_policies.evaluation import run

    seen = {}
    monkeypatch.setattr(run, "evaluate_model", lambda model, **kw: seen.update(kw, model=model) or [])
    argv = [
        "grace",
        "evaluate",
        "--model",
        "org/m",
        "--device",
        "cpu",
        "--dtype",
        "bfloat16",
        "--attn-implementation",
        "eager",
        "--backend",
        "vllm",
        "--benchmark",
        "grace-ablation-16",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    assert seen["placement"] == {"device_map": "cpu", "dtype": "bfloat16", "attn_implementation": "eager"}
    assert (seen["backend"], seen["benchmark"], seen["tasks"]) == ("vllm", "grace-ablation-16", None)
    assert cli.main(argv + ["--tasks", "LocalLeeSTS"]) == 2
    assert "--tasks or --benchmark, not both" in capsys.readouterr().err


def test_unknown_benchmark_fails_before_loading_a_model(monkeypatch):
    from retrieval_policies.evaluation.run import evaluate_model
    from retrieval_policies.models.grace import GraceEmbedder

    monkeypatch.setattr(GraceEmbedder, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        evaluate_model(DEFAULT_BASE_MODEL, benchmark="nope")
