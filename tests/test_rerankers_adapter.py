"""DynamicRAG through the real rerankers package: RankedResults in DynamicRAG's order with the variable k visible."""

from __future__ import annotations

import pytest
from rerankers import Document
from rerankers.models.ranker import BaseRanker
from rerankers.results import RankedResults
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.integrations.rerankers import DynamicRAGRanker
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel, RerankResult

DOCS = [
    "Paris is the capital of France.",
    "Hamlet is a tragedy by William Shakespeare.",
    "Bananas are yellow.",
    "The Globe Theatre staged Shakespeare's plays.",
]


class ScriptedModel:
    """Selects fixed input positions (what a trained DynamicRAG would write), recording what it was shown."""

    def __init__(self, indices):
        self.indices, self.seen = indices, []

    def rerank_batch(self, queries, pools, **kwargs):
        self.seen.append((queries, pools, kwargs))
        return [RerankResult([pool[i] for i in self.indices], list(self.indices)) for pool in pools]


def test_selected_first_in_dynamicrag_order_then_the_rest_marked():
    model = ScriptedModel([3, 1])
    ranker = DynamicRAGRanker(model)
    assert isinstance(ranker, BaseRanker)
    results = ranker.rank(
        "Who wrote Hamlet?", DOCS, doc_ids=["a", "b", "c", "d"], metadata=[{"title": "T"}, {}, {}, {}]
    )
    assert isinstance(results, RankedResults) and results.has_scores
    assert [r.doc_id for r in results] == ["d", "b", "a", "c"] and [r.rank for r in results] == [1, 2, 3, 4]
    assert [r.selected for r in results] == [True, True, False, False]
    assert [r.score for r in results] == [1.0, 0.5, 0.0, 0.0]
    assert [r.doc_id for r in results.top_k(2)] == ["d", "b"]  # by score, as by rank
    assert model.seen[0][1][0][0] == {"title": "T", "text": DOCS[0]}  # a title in the metadata is shown as the topic
    assert model.seen[0][2] == {"seed": 0}


def test_nothing_selected_and_document_inputs():
    ranker = DynamicRAGRanker(ScriptedModel([]))
    given = [Document(text, doc_id=i) for i, text in enumerate(DOCS[:2])]
    results = ranker.rank("q", given)
    assert [r.doc_id for r in results] == [0, 1] and not any(r.selected for r in results)
    assert all(r.score == 0.0 for r in results) and "selected" not in given[0].metadata  # inputs left as they were
    assert ranker.rank("q", []).results == []


def test_score_is_refused_with_the_reason():
    with pytest.raises(NotImplementedError, match="listwise reranker"):
        DynamicRAGRanker(ScriptedModel([0])).score("q", "doc")


def test_a_real_dynamicrag_model_ranks_every_document_once():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    model = DynamicRAGModel(
        tiny_llama(tokenizer, layers=2).eval(),
        tokenizer,
        DynamicRAGConfig(rerank_max_new_tokens=8, max_passages=3, temperature=0.0),
    )
    results = DynamicRAGRanker(model).rank("Who wrote Hamlet?", DOCS)  # 4 passages, windows of 3: a tournament
    expected = model.rerank("Who wrote Hamlet?", [{"title": "", "text": d} for d in DOCS], seed=0).indices
    assert sorted(r.doc_id for r in results) == [0, 1, 2, 3]
    assert [r.doc_id for r in results if r.selected] == expected


def test_a_saved_repo_loads_by_name_with_its_settings(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, DynamicRAGConfig(max_passages=3)).save_pretrained(
        tmp_path / "dr"
    )
    assert DynamicRAGRanker(str(tmp_path / "dr")).model.dynamicrag_config.max_passages == 3  # the repo's settings
    assert (
        DynamicRAGRanker(str(tmp_path / "dr"), max_passages=7).model.dynamicrag_config.max_passages == 7
    )  # given ones


def test_reranker_routes_a_dynamicrag_folder_and_refuses_it_as_a_cross_encoder(tmp_path, monkeypatch):
    import huggingface_hub
    import rerankers

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no Hub here: do not wait for one

    from retrieval_policies.integrations.rerankers import Reranker, is_dynamicrag

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer).save_pretrained(tmp_path / "dr")
    assert is_dynamicrag(tmp_path / "dr") and not is_dynamicrag(tmp_path)
    assert isinstance(Reranker(str(tmp_path / "dr"), verbose=0), DynamicRAGRanker)
    with pytest.raises(ValueError, match="not a cross-encoder: it has no scoring head"):
        Reranker(str(tmp_path / "dr"), model_type="cross-encoder")
    # anything else is rerankers' own choice (here: an unknown type, which rerankers reports itself)
    calls = []
    monkeypatch.setattr(
        rerankers, "Reranker", lambda name, model_type=None, **kw: calls.append((name, model_type)) or "theirs"
    )
    assert Reranker("some/cross-encoder", model_type="cross-encoder") == "theirs"
    assert calls == [("some/cross-encoder", "cross-encoder")]
