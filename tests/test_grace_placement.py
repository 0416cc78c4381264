"""GRACE at its users' scale, on this CPU: placement (device_map, dtype, attn_implementation through every loading
route), rationales free of the backbone's own generation settings, a pinned chat-template date, the pooling forward
through the root module, and the vLLM backend against a fake of exactly the vLLM calls it makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder, modeling_grace
from retrieval_policies.models.grace.modeling_grace import PerRowSampler, placement

TEXTS = ["A dog barked all night long at the moon.", "Paris", "Puppies are young dogs; they bark and play a lot."]
DATED_TEMPLATE = (  # the date logic of Llama 3.x templates: today's date unless date_string is given
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{{ '<|im_start|>system\nToday Date: ' + date_string + '\n' }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '<|im_end|>\n' }}{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny(tokenizer, arch="llama", **extra):
    torch.manual_seed(0)
    common = dict(
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
        **extra,
    )
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()


@pytest.fixture(scope="module")
def folder(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("grace")
    GraceEmbedder(tiny(tokenizer), tokenizer, GraceConfig(max_new_tokens=6, temperature=0.0)).save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------- placement
def test_placement_defaults(monkeypatch):
    assert placement() == (None, torch.float32)  # this CPU: fp32
    assert placement("cpu", "bfloat16") == ("cpu", torch.bfloat16)
    assert placement("auto", "auto") == ("auto", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert placement() == ("cuda", torch.bfloat16)  # a GPU machine: never silently CPU fp32
    assert placement("cpu") == ("cpu", torch.float32)
    assert placement({"": "cuda:1"}) == ({"": "cuda:1"}, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert placement("cuda:0") == ("cuda:0", torch.float16)
    with pytest.raises(ValueError, match="unknown dtype 'bf17'"):
        placement(None, "bf17")


def test_from_pretrained_honours_dtype_device_map_and_attention(folder):
    default = GraceEmbedder.from_pretrained(folder)
    assert (default.device.type, default.model.dtype) == ("cpu", torch.float32)
    half = GraceEmbedder.from_pretrained(folder, dtype="bfloat16", device_map="cpu", attn_implementation="eager")
    assert (half.device.type, half.model.dtype) == ("cpu", torch.bfloat16)
    assert half.model.config._attn_implementation == "eager"
    vectors = half.encode(TEXTS, rationale=False)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(vectors, default.encode(TEXTS, rationale=False), atol=0.05)  # bf16 vs fp32
    with pytest.raises(TypeError, match="unexpected arguments \\['devcie'\\]"):
        GraceEmbedder.from_pretrained(folder, devcie="cpu")


def test_from_base_honours_dtype(folder):
    embedder = GraceEmbedder.from_base(
        str(folder), resolver=str, dtype=torch.bfloat16, device_map="cpu", max_new_tokens=4
    )
    assert embedder.model.dtype == torch.bfloat16 and embedder.grace_config.max_new_tokens == 4


def test_auto_model_and_sentence_transformers_routes_honour_placement(folder):
    code = textwrap.dedent("""
        import json, sys
        sys.modules['retrieval_policies'] = None
        import torch
        from transformers import AutoModel
        from sentence_transformers import SentenceTransformer
        grace = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True, dtype="bfloat16", device_map="cpu")
        st = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu", model_kwargs={"dtype": "bfloat16"})
        plain = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu")
        print(json.dumps({"auto": str(grace.model.dtype), "auto_device": str(grace.device), "st": str(st[0].embedder.model.dtype),
                          "st_device": str(st.device), "plain": str(plain[0].embedder.model.dtype)}))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "auto": "torch.bfloat16",
        "auto_device": "cpu",
        "st": "torch.bfloat16",
        "st_device": "cpu",
        "plain": "torch.float32",
    }


def test_sampler_draws_its_noise_where_the_logits_are(monkeypatch):
    made = []
    real = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device="cpu": made.append(str(device)) or real(device=device))
    sampler = PerRowSampler([1, 2], temperature=1.0, top_p=0.9)
    scores = torch.randn(2, 50)
    first = sampler(None, scores)
    assert made == ["cpu", "cpu"]  # one generator per row, on the logits' device, made once
    sampler(None, scores)
    assert len(made) == 2 and (first == 0).sum() == 2


# ---------------------------------------------------------------------------------------------------- generation settings
def test_backbone_generation_settings_do_not_leak_into_rationales(tokenizer):
    # tied embeddings: the random model's greedy choice repeats its input, so a repetition penalty changes it
    plain = GraceEmbedder(
        tiny(tokenizer, tie_word_embeddings=True), tokenizer, GraceConfig(max_new_tokens=12, temperature=0.0)
    )
    leaky_model = tiny(tokenizer, tie_word_embeddings=True)
    leaky_model.generation_config.repetition_penalty = 100.0  # what a checkpoint's generation_config.json can set
    leaky_model.generation_config.no_repeat_ngram_size = 1
    leaky = GraceEmbedder(leaky_model, tokenizer, GraceConfig(max_new_tokens=12, temperature=0.0))
    _, expected = plain.encode(TEXTS, return_rationales=True)
    _, got = leaky.encode(TEXTS, return_rationales=True)
    assert got == expected
    assert leaky_model.generation_config.repetition_penalty == 100.0  # the model's own config is restored


# ---------------------------------------------------------------------------------------------------- the date
def test_the_chat_template_date_is_pinned_and_keys_the_cache(tokenizer, tmp_path, monkeypatch):
    dated = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    dated.chat_template = DATED_TEMPLATE
    model = tiny(tokenizer)
    embedder = GraceEmbedder(model, dated, GraceConfig(max_new_tokens=4, temperature=0.0), revision="r")
    rendered = dated.decode(embedder.prompt_ids("hello"))
    assert "Today Date: 26 Jul 2024" in rendered
    other_day = GraceEmbedder(
        model,
        dated,
        GraceConfig(max_new_tokens=4, temperature=0.0, chat_template_kwargs={"date_string": "01 Dec 2026"}),
        revision="r",
    )
    assert other_day.prefix_hash != embedder.prefix_hash
    embedder.encode(["hello"], cache_dir=tmp_path)
    calls = []
    monkeypatch.setattr(
        GraceEmbedder, "generate_rationales", lambda self, p, *a, **k: calls.append(len(p)) or [([5], 2)] * len(p)
    )
    other_day.encode(["hello"], cache_dir=tmp_path)
    assert calls == [1]  # another rendered system prefix never reads the first one's rationale
    embedder.encode(["hello"], cache_dir=tmp_path)
    assert calls == [1]


# ---------------------------------------------------------------------------------------------------- pooling forward
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_pooling_runs_the_root_module_without_a_cache(tokenizer, arch):
    model = tiny(tokenizer, arch)
    embedder = GraceEmbedder(model, tokenizer, GraceConfig(max_new_tokens=4))
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    sequences = [embedder.prompt_ids("a dog") + [30, 31], embedder.prompt_ids("the cat sat on the mat")]
    pooled = embedder.embed_sequences(sequences, [embedder.prefix_length(s) for s in sequences])
    assert len(seen) == 1 and seen[0]["use_cache"] is False and seen[0]["logits_to_keep"] == 1  # hooks of the root ran
    for row, sequence in zip(pooled, sequences):
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([sequence])).last_hidden_state[0]
        torch.testing.assert_close(row, hidden[embedder.prefix_length(sequence) :].mean(0), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- vLLM
def test_vllm_backend_is_the_hf_backend_when_greedy(folder, fake_vllm):
    embedder = GraceEmbedder.from_pretrained(folder)
    hf, hf_rationales = embedder.encode(TEXTS, return_rationales=True, temperature=0)
    vectors, rationales = embedder.encode(TEXTS, return_rationales=True, temperature=0, backend="vllm")
    assert rationales == hf_rationales
    np.testing.assert_allclose(vectors, hf, atol=1e-5)
    (name, options), (call, request) = fake_vllm.CALLS[:2]
    assert (name, call) == ("LLM", "generate")
    assert options["model"] == str(folder) and options["generation_config"] == "vllm" and options["dtype"] == "float32"
    c = embedder.grace_config  # the repo's budgets, capped by the model's own context (vLLM refuses more)
    budget = embedder.prefix_length(embedder.prompt_ids("x")) + c.max_text_tokens + c.max_new_tokens + 64
    assert options["max_model_len"] == min(budget, embedder.model.config.max_position_embeddings)
    assert len(request["prompts"]) == len(TEXTS)  # one chunk, one request per text
    assert {p.max_tokens for p in request["params"]} == {6} and request["params"][0].stop_token_ids == sorted(
        embedder.eos_ids()
    )


def test_vllm_rationales_are_cached_apart_from_hf_ones(folder, fake_vllm, tmp_path):
    embedder = GraceEmbedder.from_pretrained(folder)
    embedder.encode(TEXTS[:1], temperature=1.0, seed=1, cache_dir=tmp_path)
    embedder.encode(TEXTS[:1], temperature=1.0, seed=1, cache_dir=tmp_path, backend="vllm")
    assert [name for name, _ in fake_vllm.CALLS] == ["LLM", "generate"]  # the HF entry was not reused
    assert len(list(tmp_path.rglob("*.json"))) == 2


def test_vllm_seeds_are_per_text(folder, fake_vllm):
    embedder = GraceEmbedder.from_pretrained(folder)
    alone = embedder.encode(TEXTS[:1], temperature=1.0, seed=3, backend="vllm", return_rationales=True)[1]
    batched = embedder.encode(TEXTS, temperature=1.0, seed=3, backend="vllm", return_rationales=True)[1]
    assert batched[0] == alone[0]  # a seeded rationale does not depend on its batch
    seeds = [p.seed for p in fake_vllm.CALLS[-1][1]["params"]]
    assert len(set(seeds)) == len(TEXTS) and None not in seeds


def test_vllm_backend_from_the_repo_config(folder, fake_vllm, tmp_path):
    config = json.loads((folder / "grace_config.json").read_text())
    assert config["backend"] == "hf"
    embedder = GraceEmbedder.from_pretrained(folder)
    embedder.grace_config.backend = "vllm"
    embedder.encode(TEXTS[:1])
    assert [name for name, _ in fake_vllm.CALLS] == ["LLM", "generate"]


def test_vllm_missing_is_a_clear_error(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    embedder = GraceEmbedder.from_pretrained(folder)
    with pytest.raises(ImportError, match='backend="vllm" needs vLLM'):
        embedder.encode(TEXTS[:1], backend="vllm")
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        embedder.encode(TEXTS[:1], backend="tgi")


def test_vllm_length_stop_and_missing_eos(tokenizer, monkeypatch):
    """A completion vLLM stopped at an EOS it left out of the ids still counts as ended; one at the budget does not;
    one the engine's context cut short of the budget is refused, never pooled or cached (issue 36, defect 2)."""
    from types import SimpleNamespace as NS

    class Engine:
        model_config = NS(max_model_len=64)

        def __init__(self, outputs):
            self.outputs = outputs

        def generate(self, prompts, sampling_params, use_tqdm):
            return self.outputs

    embedder = GraceEmbedder(tiny(tokenizer), tokenizer, GraceConfig())
    monkeypatch.setitem(sys.modules, "vllm", NS(SamplingParams=lambda **kw: kw))
    embedder.set_vllm_engine(
        Engine(
            [
                NS(outputs=[NS(token_ids=[7, 8], finish_reason="stop", stop_reason=None)]),
                NS(outputs=[NS(token_ids=[7, 8, 9], finish_reason="length", stop_reason=None)]),
                NS(outputs=[NS(token_ids=[7, 2, 9], finish_reason="stop", stop_reason=2)]),
            ]
        )
    )
    out = embedder.generate_rationales_vllm(
        [[1], [1], [1]], ["a", "b", "c"], max_new_tokens=3, temperature=0, top_p=1, seed=0
    )
    assert out == [([7, 8], tokenizer.eos_token_id), ([7, 8, 9], None), ([7], 2)]
    embedder.set_vllm_engine(Engine([NS(outputs=[NS(token_ids=[7, 8], finish_reason="length", stop_reason=None)])]))
    with pytest.raises(RuntimeError, match="cut a rationale at 2 of 3 new tokens"):
        embedder.generate_rationales_vllm([[1]], ["a"], max_new_tokens=3, temperature=0, top_p=1, seed=0)
    with pytest.raises(
        ValueError, match="holds 64 tokens of context but this call needs 65"
    ):  # a given engine is not rebuilt
        embedder.generate_rationales_vllm([[1] * 5], ["a"], max_new_tokens=60, temperature=0, top_p=1, seed=0)


def test_vllm_context_fits_the_largest_budget_asked(folder, fake_vllm):
    """The engine is sized for the call's prompt + max_new_tokens, and rebuilt larger when a later call asks for more
    than the repo's budget (vLLM would stop the rationale at max_model_len; issue 36, defect 2)."""
    embedder = GraceEmbedder.from_pretrained(folder)
    embedder.grace_config.max_text_tokens = 32  # a repo budget well under the model's 512 positions
    embedder.encode(TEXTS[:1], temperature=0, backend="vllm")
    first = fake_vllm.CALLS[0][1]["max_model_len"]
    assert first < 200
    embedder.encode(TEXTS[:1], temperature=0, backend="vllm", max_new_tokens=200)
    rebuilt = [options for name, options in fake_vllm.CALLS if name == "LLM"]
    assert len(rebuilt) == 2 and rebuilt[1]["max_model_len"] == 200 + len(embedder.prompt_ids(TEXTS[0]))
    assert fake_vllm.CALLS[-1][1]["params"][0].max_tokens == 200
    with pytest.raises(ValueError, match="but the model holds 512: ask for fewer new tokens"):
        embedder.encode(TEXTS[:1], temperature=0, backend="vllm", max_new_tokens=600)


def test_vllm_engine_follows_the_model_device(folder, fake_vllm, monkeypatch):
    """vLLM has no device option: the engine is started with the embedder's GPU alone visible (cuda:1 -> GPU 1, or
    the second of CUDA_VISIBLE_DEVICES), and the environment is restored afterwards (issue 36, defect 3)."""
    from retrieval_policies.models.grace.modeling_grace import vllm_placement

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with vllm_placement("cuda:1", {}) as options:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "6" and options == {}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"
    with pytest.raises(ValueError, match="cuda:2 is not among CUDA_VISIBLE_DEVICES=4,6"):
        vllm_placement("cuda:2").__enter__()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with vllm_placement("cuda:3", {}):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with vllm_placement("cuda", {"tensor_parallel_size": 2}):  # vLLM spreads over the visible GPUs itself
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    cpu = {}
    with vllm_placement("cpu", cpu):
        assert cpu["kv_cache_memory_bytes"] == 2 * 1024**3  # not a share of the machine's RAM
    embedder = GraceEmbedder.from_pretrained(folder)
    embedder.encode(TEXTS[:1], temperature=0, backend="vllm")
    assert (
        fake_vllm.CALLS[0][1]["CUDA_VISIBLE_DEVICES"] is None and "gpu_memory_utilization" not in fake_vllm.CALLS[0][1]
    )


def test_per_row_sampler_draws_the_tempered_nucleus_distribution():
    """Training rollouts are drawn by this sampler (GraceGRPOTrainer's shared-prefix loop), so it must sample what
    TRL's generate would: softmax(logits / T) renormalised over the smallest top set reaching top_p."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    temperature, top_p, draws = 0.7, 0.9, 6000
    probs = (logits[0] / temperature).softmax(-1)
    order = probs.argsort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[(probs[order].cumsum(0) - probs[order]) < top_p]] = True
    expected = torch.where(keep, probs, torch.zeros_like(probs))
    expected = expected / expected.sum()
    sampler = PerRowSampler([123], temperature=temperature, top_p=top_p)
    counts = torch.bincount(torch.cat([sampler.draw(logits, [0]) for _ in range(draws)]), minlength=6).float()
    assert counts[~keep].sum() == 0  # outside the nucleus: never
    assert keep.sum() >= 3 and (~keep).sum() >= 1  # the test covers both sides of the cut
    assert torch.allclose(counts / draws, expected, atol=0.02), (counts / draws, expected)


def test_the_cpu_default_stays_fp32_and_slow_bf16_is_warned(monkeypatch):
    """dtype on a CPU: fp32 by default even where bf16 is fast (benchmarks/results/cpu_bf16.json); bf16 asked for on
    a CPU without AVX512-BF16 or AMX is warned about (~50x slower matmuls)."""

    monkeypatch.setattr(modeling_grace, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without AVX512-BF16 or AMX"):
        assert modeling_grace.placement("cpu", "bfloat16") == ("cpu", torch.bfloat16)
    monkeypatch.setattr(modeling_grace, "cpu_has_fast_bf16", lambda: True)
    assert modeling_grace.placement("cpu", None) == ("cpu", torch.float32)


def test_vllm_loads_the_tokenizer_at_the_weights_revision(folder, fake_vllm):
    """A Hub revision pins the weights and the tokenizer alike (vLLM takes them apart: revision, tokenizer_revision)."""
    embedder = GraceEmbedder.from_pretrained(folder)
    embedder.revision = "0123abcd"
    embedder.encode(TEXTS[:1], temperature=0, backend="vllm")
    options = fake_vllm.CALLS[0][1]
    assert options["revision"] == options["tokenizer_revision"] == "0123abcd"
