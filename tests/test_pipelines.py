"""`pipeline(model=repo, trust_remote_code=True)` on both kinds of repo, in a fresh process without the project
(the repos' own code only), against the same model called in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from testing_utils import tiny_llama

from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

PASSAGES = [
    {"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
    "Paris is the capital of France.",
]
NO_PROJECT = "import sys; sys.modules['retrieval_policies'] = None\n"


def _run(code: str, *args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", NO_PROJECT + textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_grace_repo_is_a_pipeline_of_embeddings_with_rationales(tokenizer, tmp_path):
    embedder = GraceEmbedder(
        tiny_llama(tokenizer, layers=2).eval(), tokenizer, GraceConfig(max_new_tokens=5, temperature=0.0)
    )
    embedder.save_pretrained(tmp_path / "grace")
    config = json.loads((tmp_path / "grace" / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "feature-extraction": {
            "impl": "pipeline_grace.GraceFeatureExtractionPipeline",
            "pt": ["AutoModelForCausalLM"],
            "type": "text",
        }
    }
    texts = ["A dog barked all night.", "Puppies bark."]
    expected, rationales = embedder.encode(texts, return_rationales=True)
    out = _run(
        """
        import json, sys
        from transformers import pipeline
        pipe = pipeline(model=sys.argv[1], trust_remote_code=True)
        many, one = pipe(["A dog barked all night.", "Puppies bark."]), pipe("Puppies bark.", rationale=False)
        batched = pipe(["A dog barked all night.", "Puppies bark."] * 2, batch_size=3)
        tagged = pipeline("feature-extraction", model=sys.argv[1], trust_remote_code=True)  # the card's pipeline_tag
        streamed = list(tagged((t for t in ["A dog barked all night.", "Puppies bark."]), batch_size=2))
        print(json.dumps({"class": type(pipe).__name__, "task": pipe.task, "many": many, "one": one,
                          "batched": batched, "tagged": type(tagged).__name__, "streamed": streamed}))
    """,
        tmp_path / "grace",
    )
    assert out["class"] == out["tagged"] == "GraceFeatureExtractionPipeline" and out["task"] == "feature-extraction"
    assert [o["rationale"] for o in out["many"]] == rationales
    for got, want in zip(out["batched"] + out["streamed"], out["many"] * 3):  # batch_size and generators
        assert got["rationale"] == want["rationale"] and got["embedding"] == pytest.approx(want["embedding"], abs=1e-5)
    assert len(out["batched"]) == 4 and len(out["streamed"]) == 2
    for row, vector in zip(out["many"], expected):
        assert row["embedding"] == pytest.approx(vector.tolist(), abs=1e-5)
    prompt_only = embedder.encode("Puppies bark.", rationale=False)
    assert out["one"]["embedding"] == pytest.approx(prompt_only.tolist(), abs=1e-5) and out["one"]["rationale"] is None


def test_dynamicrag_repo_is_a_pipeline_that_reranks_then_answers(tokenizer, tmp_path):
    model = DynamicRAGModel(
        tiny_llama(tokenizer, layers=2).eval(),
        tokenizer,
        DynamicRAGConfig(rerank_max_new_tokens=8, answer_max_new_tokens=6, temperature=0.0),
    )
    model.save_pretrained(tmp_path / "dr")
    expected = model("Who wrote Hamlet?", PASSAGES)
    out = _run(
        """
        import json, sys
        from transformers import pipeline
        passages = json.loads(sys.argv[2])
        pipe = pipeline(model=sys.argv[1], trust_remote_code=True)
        one = pipe("Who wrote Hamlet?", passages=passages)
        many = pipe([{"question": "Who wrote Hamlet?", "passages": passages}] * 2)
        batched = pipe([{"question": "Who wrote Hamlet?", "passages": passages}] * 3, batch_size=2)
        try:
            pipe("Who wrote Hamlet?", passages=passages, top_k=3)
            bad = None
        except TypeError as err:
            bad = str(err)
        print(json.dumps({"class": type(pipe).__name__, "one": one, "many": many, "batched": batched, "bad": bad}))
    """,
        tmp_path / "dr",
        json.dumps(PASSAGES),
    )
    assert out["class"] == "DynamicRAGPipeline"
    one = out["one"]
    assert one["answer"] == expected["answer"] and one["indices"] == expected["indices"]
    assert [s["id"] for s in one["selected"]] == [i + 1 for i in expected["indices"]]
    assert [s["passage"] for s in one["selected"]] == expected["selected"]
    assert out["many"] == [one, one] and "unexpected arguments ['top_k']" in out["bad"]
    assert out["batched"] == [one, one, one]


def test_the_config_entries_are_what_the_registry_would_save():
    """add_auto_map writes custom_pipelines by hand (the trainer's saves never pass through a Pipeline): it must be
    what Pipeline.save_pretrained writes for the registration in the repo's pipeline module."""
    from retrieval_policies.models.dynamicrag import modeling_dynamicrag, pipeline_dynamicrag
    from retrieval_policies.models.grace import modeling_grace, pipeline_grace

    for modeling, cls in (
        (modeling_grace, pipeline_grace.GraceFeatureExtractionPipeline),
        (modeling_dynamicrag, pipeline_dynamicrag.DynamicRAGPipeline),
    ):
        [(task, info)] = cls._registered_impl.items()
        saved = {
            "impl": f"{info['impl'].__module__.split('.')[-1]}.{info['impl'].__name__}",
            "pt": [c.__name__ for c in info["pt"]],
            "type": info["type"],
        }
        assert (task, saved) == (modeling.PIPELINE_TASK, modeling.PIPELINE_ENTRY)
    assert modeling_grace.PIPELINE_TAG == "feature-extraction"  # the config's key: the card's pipeline_tag
