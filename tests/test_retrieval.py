"""Retrieval over the real Wikipedia passages and the relevance labellers."""

from __future__ import annotations

import importlib.util
from itertools import islice

import pytest
import torch
import transformers
from testing_utils import PACKAGED_METRICS

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.corpora import iter_wikipedia_passages
from retrieval_policies.retrieval import (
    BM25Retriever,
    DenseRetriever,
    LLMJudge,
    MonoT5Judge,
    attach_ctxs,
    has_answer,
    normalize_answer,
)

QUESTIONS = [
    {"question": "What political philosophy advocates stateless societies?", "answers": ["Anarchism"]},
    {"question": "Which US state is nicknamed the Yellowhammer State?", "answers": ["Alabama"]},
]


@pytest.fixture(scope="module")
def corpus():
    return [{"id": p.id, "title": p.title, "text": p.text} for p in islice(iter_wikipedia_passages(), 400)]


class CountingEncoder:
    """all-MiniLM-L6-v2 (packaged) that counts how many texts it encoded."""

    def __init__(self):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True)), device="cpu"
        )
        self.encoded = 0

    def encode(self, texts, **kwargs):
        self.encoded += len(texts)
        return self.model.encode(texts, **kwargs)


@pytest.fixture(scope="module")
def minilm():
    return CountingEncoder()


def test_has_answer():
    assert has_answer("The capital of France is Paris.", ["paris"])
    assert has_answer("It opened in 1889, as planned.", "1889")
    assert not has_answer("A Parisian café.", ["Paris"])  # whole words only
    assert has_answer("The Beatles were a band.", ["Beatles"]) and not has_answer("anything", [""])


def test_normalization_matches_the_metric_module():
    path = PACKAGED_METRICS / "rag_answer" / "rag_answer.py"
    spec = importlib.util.spec_from_file_location("rag_answer_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for text in ["The  Eiffel-Tower!", "an Apple a day", "A.B.C. the end", "", "Ünïcode, yes"]:
        assert normalize_answer(text) == module.normalize_answer(text)


def test_dense_retrieval_finds_the_article_and_reuses_embeddings(minilm, corpus, tmp_path):
    retriever = DenseRetriever(minilm, corpus, encoder_id="all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert minilm.encoded == len(corpus) and len(list(tmp_path.glob("embeddings-*.npy"))) == 1
    with_ctxs = attach_ctxs(QUESTIONS, retriever, top_n=5)
    for row, title in zip(with_ctxs, ["Anarchism", "Alabama"]):
        assert [set(c) for c in row["ctxs"]] == [{"id", "title", "text", "score", "has_answer"}] * 5
        assert row["ctxs"][0]["title"] == title
        assert [c["score"] for c in row["ctxs"]] == sorted((c["score"] for c in row["ctxs"]), reverse=True)
        assert any(c["has_answer"] for c in row["ctxs"])
    before = minilm.encoded
    again = DenseRetriever(minilm, corpus, encoder_id="all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert minilm.encoded == before  # the corpus was not re-encoded
    assert again.search([QUESTIONS[0]["question"]], 3) == retriever.search([QUESTIONS[0]["question"]], 3)
    DenseRetriever(minilm, corpus[:50], encoder_id="all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2  # another corpus, another cache file


def test_faiss_index_for_large_corpora(minilm, corpus, tmp_path):
    pytest.importorskip("faiss")
    exact = DenseRetriever(minilm, corpus, encoder_id="m", cache_dir=tmp_path)
    approximate = DenseRetriever(minilm, corpus, encoder_id="m", cache_dir=tmp_path, faiss_threshold=10)
    assert approximate._index is not None and exact._index is None
    question = [QUESTIONS[1]["question"]]
    assert approximate.search(question, 1)[0][0][0] == exact.search(question, 1)[0][0][0]


def test_bad_corpus_row_is_named(minilm):
    with pytest.raises(ValueError, match="corpus row 1: the dict has no 'text'"):
        DenseRetriever(minilm, [{"id": "a", "text": "x"}, {"id": "b", "title": "no text"}], encoder_id="m")
    retriever = DenseRetriever(minilm, [{"id": "a", "text": "x"}, {"text": "no id"}], encoder_id="m")
    assert [p["id"] for p in retriever.corpus] == ["a", "1"]  # a row without an id is named by its position


def test_bm25(corpus):
    retriever = BM25Retriever(corpus)
    hits = retriever.search(["Yellowhammer State nickname"], top_n=3)[0]
    assert corpus[hits[0][0]]["title"] == "Alabama" and hits[0][1] >= hits[1][1]


def test_llm_judge_mechanics(tokenizer):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=2,
        )
    ).eval()
    judge = LLMJudge(model, tokenizer, batch_size=2)
    pairs = [
        ("Who?", "A short passage."),
        ("What is the capital of France?", "Paris is the capital of France, a long passage."),
    ]
    batched = judge.scores(pairs)
    alone = [judge.scores([pair])[0] for pair in pairs]
    assert batched == pytest.approx(alone, abs=1e-4)  # left padding does not change a pair's score
    ids = tokenizer(judge.prompt(*pairs[0]), add_special_tokens=False, return_tensors="pt")["input_ids"]
    logp = model(ids).logits[0, -1].log_softmax(-1)
    expected = (logp[judge.yes_ids].logsumexp(-1) - logp[judge.no_ids].logsumexp(-1)).item()
    assert alone[0] == pytest.approx(expected, abs=1e-4)
    assert judge.labels(pairs) == [s > 0 for s in batched]


def test_monot5_judge_mechanics(tokenizer):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=2,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    judge = MonoT5Judge(model, tokenizer)
    assert judge.prompt("q?", "doc.") == "Query: q? Document: doc. Relevant:"
    score = judge.scores([("q?", "doc.")])[0]
    batch = tokenizer(["Query: q? Document: doc. Relevant:"], return_tensors="pt")
    logits = model(**batch, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits[0, 0]
    assert score == pytest.approx((logits[judge.true_id] - logits[judge.false_id]).item(), abs=1e-4)


@pytest.mark.slow
def test_smollm2_judge_prefers_the_answering_passage():
    judge = LLMJudge.from_pretrained(DEFAULT_BASE_MODEL)
    relevant, irrelevant = judge.scores(
        [
            ("What is the capital of France?", "Paris is the capital and largest city of France."),
            ("What is the capital of France?", "Bananas are yellow fruits that grow in tropical climates."),
        ]
    )
    assert relevant > irrelevant


def test_a_grace_embedder_as_the_dense_encoder(tokenizer, corpus, tmp_path):
    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=2,
            eos_token_id=2,
        )
    ).eval()
    grace = GraceEmbedder(model, tokenizer, GraceConfig(max_new_tokens=2, temperature=0.0), revision="tiny")
    small = corpus[:12]
    retriever = DenseRetriever(grace, small, encoder_id="tiny-grace", cache_dir=tmp_path, batch_size=4)
    assert retriever.embeddings.shape == (12, 32)
    hits = retriever.search([small[3]["title"] + ". " + small[3]["text"]], top_n=3)[0]
    assert hits[0][0] == 3 and hits[0][1] == pytest.approx(1.0, abs=1e-4)  # a passage is its own nearest neighbour


def test_dense_index_resumes_after_an_interruption(tokenizer, tmp_path, monkeypatch):
    """The corpus embeddings are saved chunk by chunk: a build stopped part-way resumes at the first missing chunk
    and ends equal to an uninterrupted build (a tiny random GRACE embedder, prompt only)."""
    import numpy as np
    from testing_utils import tiny_llama

    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder
    from retrieval_policies.retrieval import DenseRetriever

    grace = GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig())
    corpus = [p.text for p in islice(iter_wikipedia_passages(), 10)]
    options = dict(encoder_id="tiny", grace_options={"rationale": False}, chunk_size=3)
    whole = DenseRetriever(grace, corpus, **options).embeddings
    real, calls = GraceEmbedder.encode, []

    def stopped_at_the_third_chunk(self, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, texts, **kwargs)

    monkeypatch.setattr(GraceEmbedder, "encode", stopped_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        DenseRetriever(grace, corpus, cache_dir=tmp_path, **options)
    [parts] = tmp_path.glob("*.parts")
    assert calls == [3, 3, 3] and sorted(p.name for p in parts.iterdir()) == ["000000000.npy", "000000003.npy"]
    calls.clear()
    monkeypatch.setattr(
        GraceEmbedder, "encode", lambda self, texts, **kw: calls.append(len(texts)) or real(self, texts, **kw)
    )
    resumed = DenseRetriever(grace, corpus, cache_dir=tmp_path, **options)
    assert calls == [3, 1]  # only the chunks that were missing
    np.testing.assert_allclose(resumed.embeddings, whole, atol=1e-6)
    assert not parts.exists() and len(list(tmp_path.glob("embeddings-*.npy"))) == 1
    calls.clear()
    assert np.array_equal(DenseRetriever(grace, corpus, cache_dir=tmp_path, **options).embeddings, resumed.embeddings)
    assert calls == []  # the saved whole is reused


def test_dense_index_resumes_after_kill_9(tokenizer, tmp_path):
    """The build in its own process, SIGKILLed once two chunks are saved: no chunk file is half-written (each is
    renamed into place) and the resumed build equals an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from testing_utils import tiny_llama

    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder
    from retrieval_policies.retrieval import DenseRetriever

    GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig()).save_pretrained(tmp_path / "g")
    corpus = [p.text for p in islice(iter_wikipedia_passages(), 12)]
    options = dict(encoder_id="tiny", grace_options={"rationale": False}, chunk_size=2)
    code = f"""
import time
from retrieval_policies.models.grace import GraceEmbedder
from retrieval_policies.retrieval import DenseRetriever
grace = GraceEmbedder.from_pretrained({str(tmp_path / "g")!r})
real = GraceEmbedder.encode
GraceEmbedder.encode = lambda self, texts, **kw: time.sleep(1) or real(self, texts, **kw)  # slow enough to kill
DenseRetriever(grace, {corpus!r}, cache_dir={str(tmp_path / "cache")!r}, **{options!r})
"""
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 300
    while len(list(tmp_path.glob("cache/*.parts/*.npy"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    [parts] = tmp_path.glob("cache/*.parts")
    saved = sorted(p.name for p in parts.iterdir() if p.suffix == ".npy")
    assert 2 <= len(saved) < 6 and all(np.load(parts / name).shape[0] == 2 for name in saved)
    grace = GraceEmbedder.from_pretrained(tmp_path / "g")
    resumed = DenseRetriever(grace, corpus, cache_dir=tmp_path / "cache", **options)
    np.testing.assert_allclose(resumed.embeddings, DenseRetriever(grace, corpus, **options).embeddings, atol=1e-6)
