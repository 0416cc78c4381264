"""The retrieval pipeline from the two policies (`RetrievalPolicyPipeline`, `retrieval-policies rag ask|evaluate`),
end to end on the packaged SmolLM2 and Wikipedia passages."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import islice

import pytest

from retrieval_policies.assets import DEFAULT_BASE_MODEL
from retrieval_policies.corpora import iter_wikipedia_passages
from retrieval_policies.rag import RetrievalPolicyPipeline, cloze_eval_questions, evaluate_pipelines, format_table

CLI = [sys.executable, "-m", "retrieval_policies.cli", "--quiet"]


@pytest.fixture(scope="module")
def corpus():
    """The passages of the first two articles, as the reader yields them (dataclasses, not dicts)."""
    passages = list(islice(iter_wikipedia_passages(), 200))
    first_two = {p.article_id for p in passages[:1]} | {passages[40].article_id}
    return [p for p in passages if p.article_id in first_two][:12]


@pytest.fixture(scope="module")
def smollm2_reranker():
    from retrieval_policies.models.dynamicrag import DynamicRAGModel

    return DynamicRAGModel.from_base(
        DEFAULT_BASE_MODEL, max_passages=5, rerank_max_new_tokens=16, answer_max_new_tokens=12, temperature=0.0
    )


@pytest.fixture(scope="module")
def smollm2_grace():
    from retrieval_policies.models.grace import GraceEmbedder

    return GraceEmbedder.from_base(DEFAULT_BASE_MODEL, max_new_tokens=8, temperature=0.0)


@pytest.mark.slow
def test_grace_and_dynamicrag_answer_with_ids_and_a_rationale_and_reuse_the_index(
    corpus, smollm2_reranker, smollm2_grace, tmp_path, monkeypatch
):
    question = f"What is {corpus[0].title}?"
    pipe = RetrievalPolicyPipeline(smollm2_grace, smollm2_reranker, corpus, top_n=8, cache_dir=tmp_path)
    out = pipe(question)
    ids = {p.id for p in corpus}
    assert isinstance(out.answer, str) and out.answer.strip()
    assert [p["rank"] for p in out.retrieved] == list(range(1, 9)) and {p["id"] for p in out.retrieved} <= ids
    assert all(p["id"] in ids for p in out.passages) and len(out.passages) <= 5  # DynamicRAG sees max_passages
    assert out.rationale and isinstance(out.rationale, str)  # what GRACE wrote about the query
    title_words = {w.lower() for w in corpus[0].title.split() if len(w) > 3}
    assert all(isinstance(p["shared"], list) for p in out.retrieved)  # why each hit matched
    for hit in (p for p in out.retrieved if p["id"] == corpus[0].id):  # the asked-for passage shares its title
        assert not title_words or title_words & set(" ".join(hit["shared"]).split()), hit["shared"]
    assert set(out.seconds) == {"retrieve", "rerank", "answer"}
    # The second pipeline over the same corpus embeds only its queries: the corpus's vectors come from the cache.
    calls = []
    original = type(smollm2_grace).encode

    def counting(self, texts, **kwargs):
        calls.append(len(texts))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(type(smollm2_grace), "encode", counting)
    again = RetrievalPolicyPipeline(smollm2_grace, smollm2_reranker, corpus, top_n=8, cache_dir=tmp_path)
    assert calls == []
    second = again(question)
    assert calls == [1] and [p["id"] for p in second.retrieved] == [p["id"] for p in out.retrieved]


@pytest.mark.slow
def test_minilm_and_bm25_with_top_k_and_dynamicrag(corpus, smollm2_reranker, tmp_path):
    """BM25 / MiniLM x DynamicRAG / top-k, with SmolLM2 answering in each: ids and the selection are consistent."""
    rows = [
        {"question": f"Who or what is {corpus[0].title}?", "answers": [corpus[0].title]},
        {"question": f"What is said about {corpus[-1].title}?", "answers": [corpus[-1].title]},
    ]
    table = evaluate_pipelines(
        [("bm25", "none"), ("sentence-transformers/all-MiniLM-L6-v2", smollm2_reranker)],
        rows,
        corpus,
        generator=smollm2_reranker,
        top_n=6,
        top_k=3,
        cache_dir=tmp_path,
        show_progress_bar=False,
    )
    assert [(r["retriever"], r["questions"]) for r in table][0] == ("bm25", 2)
    assert table[0]["mean_k"] == 3  # plain top-k
    assert 0 <= table[1]["mean_k"] <= 5 and all(0 <= r["selection_recall"] <= 1 for r in table)
    assert table[0]["selection_recall"] == 1.0  # the title is in the top 3 BM25 passages of its own question
    text = format_table(table)
    assert "bm25" in text and "s/question" in text
    bm25 = RetrievalPolicyPipeline("bm25", None, corpus, generator=smollm2_reranker, top_k=2, cache_dir=tmp_path)
    assert bm25.retriever.loaded_from_cache  # the index evaluate_pipelines built is reused
    out = bm25(rows[0]["question"])
    assert [p["rank"] for p in out.passages] == [1, 2] and out.rationale is None


def test_cloze_eval_questions_are_the_test_split():
    rows = cloze_eval_questions(5)
    assert len(rows) == 5 and all(r["answers"] and r["question"] for r in rows)
    assert all(r["id"] for r in rows)


def test_bad_arguments_are_clear(corpus):
    with pytest.raises(ValueError, match="a corpus is needed"):
        RetrievalPolicyPipeline("bm25", None, None)
    with pytest.raises(ValueError, match="top_n and top_k must be >= 1"):
        RetrievalPolicyPipeline("bm25", None, corpus, top_k=0)
    with pytest.raises(ValueError, match="corpus row 1"):
        RetrievalPolicyPipeline("bm25", None, [{"id": "a", "text": "x"}, {"id": "b"}])


def test_rag_ask_command(tmp_path):
    """The command end to end with BM25, top-k and a tiny random generator (the pipeline's behaviour with SmolLM2
    is the tests above)."""
    from testing_utils import tiny_llama
    from transformers import AutoTokenizer

    from retrieval_policies.assets import resolve_model
    from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, DynamicRAGConfig(answer_max_new_tokens=6)).save_pretrained(
        tmp_path / "generator"
    )
    data = tmp_path / "corpus.jsonl"
    rows = [
        {"id": f"p{i}", "title": "Anarchism" if i < 3 else "Alabama", "text": p.text}
        for i, p in enumerate(islice(iter_wikipedia_passages(), 6))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run(
        [
            *CLI,
            "rag",
            "ask",
            "--corpus",
            str(data),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--generator",
            str(tmp_path / "generator"),
            "--top-k",
            "2",
            "--json",
            "What is anarchism?",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [answer] = json.loads(result.stdout)
    assert answer["question"] == "What is anarchism?" and len(answer["passages"]) == 2
    assert {p["id"] for p in answer["passages"]} <= {r["id"] for r in rows} and answer["answer"]
    bad = subprocess.run(
        [*CLI, "rag", "ask", "--corpus", str(tmp_path / "missing.jsonl"), "q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "missing.jsonl': no such file or folder" in bad.stderr


def test_rag_ask_shows_the_reranker_output_when_it_selects_nothing(tmp_path, tokenizer, capsys):
    """A reranker whose output is no id list selects nothing: the text output says what it wrote, and that it was
    repaired, instead of an answer from no passages that hides why (a tiny random model writes no id list)."""
    from testing_utils import tiny_llama

    from retrieval_policies import cli
    from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel

    config = DynamicRAGConfig(rerank_max_new_tokens=6, answer_max_new_tokens=4, temperature=0.0)
    DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, config).save_pretrained(tmp_path / "reranker")
    data = tmp_path / "corpus.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": p.text}) + "\n"
            for i, p in enumerate(islice(iter_wikipedia_passages(), 4))
        )
    )
    argv = [
        "rag",
        "ask",
        "--corpus",
        str(data),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--reranker",
        str(tmp_path / "reranker"),
    ]
    assert cli.main([*argv, "What is anarchism?"]) == 0
    out = capsys.readouterr().out
    assert "passages (0 selected of 4 retrieved, 0 tokens)" in out and "reranker output (malformed, repaired): '" in out
    assert cli.main([*argv, "--json", "What is anarchism?"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["malformed"] is True and answer["reranker_output"] and answer["passages"] == []
