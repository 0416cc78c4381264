"""`retrieval-policies grace encode`: a streamed corpus into Parquet shards + a manifest, resumed after a kill with the
same output as an uninterrupted run, split between 2 processes under `accelerate launch`, and read back by
DenseRetriever and FAISS; the benchmark presets resolve through mteb offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import transformers
from testing_utils import kill_after_shards
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder
from retrieval_policies.retrieval.encoded import load_encoded

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "retrieval_policies.cli", "--quiet"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=2,
        pad_token_id=2,
        bos_token_id=1,
    )
    folder = tmp_path_factory.mktemp("grace")
    GraceEmbedder(
        transformers.LlamaForCausalLM(config).eval(), tokenizer, GraceConfig(max_new_tokens=6, temperature=1.0, seed=7)
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    from retrieval_policies.corpora import iter_wikipedia_passages

    rows = [{"id": f"p{i}", "text": p.text[:300]} for i, p in zip(range(45), iter_wikipedia_passages())]
    path = tmp_path_factory.mktemp("corpus") / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


@pytest.fixture(scope="module")
def whole(model_folder, corpus_file, tmp_path_factory):
    """An uninterrupted run with rationales (what the resumed run must equal)."""
    out = tmp_path_factory.mktemp("whole") / "encoded"
    result = subprocess.run(_encode(model_folder, corpus_file[0], out), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def prompt_only(model_folder, corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("prompt_only") / "encoded"
    subprocess.run(
        _encode(model_folder, corpus_file[0], out, "--no-rationale"), check=True, capture_output=True, timeout=600
    )
    return out


def _encode(model, data, out, *extra, **popen):
    return [
        *CLI,
        "grace",
        "encode",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(out),
        "--shard-size",
        "10",
        "--batch-size",
        "4",
        "--no-progress",
        *extra,
    ]


def _read(folder):
    passages, vectors, manifest = load_encoded(folder, with_rationales=True)
    return passages, vectors, manifest


def test_encode_writes_shards_and_a_manifest_matching_encode(model_folder, corpus_file, whole):
    path, rows = corpus_file
    out, stdout = whole
    assert "45 texts in 5 shards" in stdout
    passages, vectors, manifest = _read(out)
    assert [p["id"] for p in passages] == [r["id"] for r in rows] and manifest["rows"] == 45
    assert manifest["settings"]["revision"] and manifest["settings"]["seed"] == 7 and manifest["embedding_dim"] == 32
    assert sorted(f.name for f in out.glob("shard-*.parquet")) == [f"shard-{i:05d}.parquet" for i in range(5)]
    embedder = GraceEmbedder.from_pretrained(model_folder)
    expected, rationales = embedder.encode([r["text"] for r in rows[:10]], return_rationales=True)
    np.testing.assert_allclose(vectors[:10], expected, atol=1e-5)
    assert [p["rationale"] for p in passages[:10]] == rationales
    assert pq.read_schema(out / "shard-00000.parquet").field("embedding").type.list_size == 32


def test_a_killed_run_resumes_to_the_uninterrupted_output(model_folder, corpus_file, whole, tmp_path):
    path, _ = corpus_file
    whole = whole[0]
    cut = tmp_path / "cut"
    finished = kill_after_shards(_encode(model_folder, path, cut), cut, 2, cwd=tmp_path)
    assert 2 <= len(finished) < 5 and not (cut / "manifest.json").exists()
    stamps = {name: (cut / name).stat().st_mtime_ns for name in finished}
    result = subprocess.run(_encode(model_folder, path, cut), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: (cut / name).stat().st_mtime_ns for name in finished} == stamps  # finished shards were not redone
    a, b = _read(whole), _read(cut)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert b[2]["encoded_now"] == 45 - 10 * len(finished)


def test_other_settings_are_refused_not_mixed(model_folder, corpus_file, prompt_only):
    before = {p.name: p.stat().st_mtime_ns for p in prompt_only.iterdir()}
    again = subprocess.run(
        _encode(model_folder, corpus_file[0], prompt_only, "--temperature", "0", "--backend", "vllm"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 2 and "other settings (backend, rationale, temperature differ)" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in prompt_only.iterdir()} == before  # nothing written was touched


def test_bad_column_names_the_row(model_folder, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n" + json.dumps({"id": "b", "body": "no text"}) + "\n")
    result = subprocess.run(_encode(model_folder, data, tmp_path / "o"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "bad.jsonl: row 1, column 'text' is NoneType, not a string" in result.stderr


def test_the_readers_records_encode_like_the_same_rows_from_a_file(model_folder, corpus_file, prompt_only, tmp_path):
    """`encode_corpus` of passage records in memory (the corpus readers' dataclasses here) gives the same ids and
    vectors as the same texts read from a file, and a rerun on the same records resumes instead of refusing."""
    from retrieval_policies.corpora import WikiPassage
    from retrieval_policies.grace.corpus import encode_corpus

    _, rows = corpus_file
    records = [WikiPassage(r["id"], "a", "T", "s", r["text"]) for r in rows]
    embedder = GraceEmbedder.from_pretrained(model_folder)
    slice_ = (0, 1, lambda: None)
    manifest = encode_corpus(
        embedder,
        records,
        tmp_path / "mem",
        model_name=str(model_folder),
        rationale=False,
        batch_size=4,
        shard_size=10,
        show_progress_bar=False,
        slice_=slice_,
    )
    assert manifest["rows"] == 45 and manifest["settings"]["data"].startswith("in-memory corpus ")
    passages, vectors, _ = load_encoded(tmp_path / "mem")
    from_file, file_vectors, _ = load_encoded(prompt_only)
    assert [p["id"] for p in passages] == [p["id"] for p in from_file]
    np.testing.assert_allclose(vectors, file_vectors, atol=1e-5)
    again = encode_corpus(
        embedder,
        records,
        tmp_path / "mem",
        model_name=str(model_folder),
        rationale=False,
        batch_size=4,
        shard_size=10,
        show_progress_bar=False,
        slice_=slice_,
    )
    assert again["encoded_now"] == 0


def test_two_processes_under_accelerate_launch(model_folder, corpus_file, prompt_only, tmp_path):
    path, rows = corpus_file
    single = prompt_only
    double = tmp_path / "double"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "retrieval_policies.cli",
        *_encode(model_folder, path, double, "--no-rationale")[3:],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((double / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["rows"] == 45 and not list(double.glob(".manifest.process-*"))
    a, b = _read(single), _read(double)
    assert a[0] == b[0]
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_dense_retriever_and_faiss_load_the_output(corpus_file, prompt_only):
    from retrieval_policies.retrieval.dense import DenseRetriever
    from retrieval_policies.retrieval.encoded import faiss_index

    path, rows = corpus_file
    out = prompt_only
    retriever = DenseRetriever.from_encoded(out)
    assert len(retriever.corpus) == 45
    hits = retriever.search([rows[3]["text"]], top_n=3)[0]
    assert retriever.corpus[hits[0][0]]["id"] == "p3"  # a passage is its own nearest neighbour (same settings)
    pytest.importorskip("faiss")
    _, vectors, _ = load_encoded(out)
    scores, indices = faiss_index(vectors).search(vectors[3:4], 1)
    assert indices[0][0] == 3


def test_benchmark_presets_resolve_through_mteb_offline():
    import mteb

    from retrieval_policies.evaluation.benchmarks import ABLATION_16, PAPER_56, resolve_benchmark

    paper = resolve_benchmark("grace-paper-56")
    assert len(paper) == 56 and {t.metadata.name for t in paper} == {
        t.metadata.name for t in mteb.get_benchmark("MTEB(eng, v1)").tasks
    }
    assert [t.metadata.name for t in resolve_benchmark("grace-ablation-16")] == list(ABLATION_16) and set(
        ABLATION_16
    ) <= set(PAPER_56)
    assert len(resolve_benchmark("MTEB(eng, v2)")) > 0
    with pytest.raises(ValueError, match="unknown benchmark 'MTEB\\(eng, v9\\)'.*grace-paper-56"):
        resolve_benchmark("MTEB(eng, v9)")


def test_batch_size_is_picked_for_the_device(model_folder, monkeypatch):
    from types import SimpleNamespace

    from retrieval_policies.grace.corpus import CPU_BATCH_SIZE, pick_batch_size

    embedder = GraceEmbedder.from_pretrained(model_folder)
    assert pick_batch_size(embedder) == CPU_BATCH_SIZE
    gpu = SimpleNamespace(
        device=torch.device("cuda", 0),
        grace_config=embedder.grace_config,
        model=embedder.model,
        system_prefix_length=embedder.system_prefix_length,
    )
    c = embedder.grace_config
    width = gpu.system_prefix_length + c.max_text_tokens + c.max_new_tokens
    per_text = (2 * 2 * 2 * 8 + 4 * 32) * 4 * width  # layers x kv heads x head dim (K and V) + activations, fp32
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (per_text * 100 * 2, 0))
    assert pick_batch_size(gpu) == 64  # 100 fit in half the free memory: the power of two below
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10**15, 0))
    assert pick_batch_size(gpu) == 512
