"""GRACE embedder mechanics on tiny random backbones (with SmolLM2's real tokenizer and chat template)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers
from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies import GraceEmbedder
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.models.grace import GRACE_SYSTEM_PROMPT, GraceConfig, mean_pool, system_prefix_ids

TEXTS = [
    "A dog barked all night long at the moon.",
    "Paris",
    "",
    "Puppies are young dogs; they bark and play a lot.",
    "x y",
]
LLAMA3_STYLE_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def tiny_model(arch: str, vocab: int):
    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab,
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
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def embedder(request, tokenizer):
    return GraceEmbedder(
        tiny_model(request.param, len(tokenizer)), tokenizer, GraceConfig(max_new_tokens=8), revision="test-rev"
    )


def test_system_prefix_of_two_chat_templates(tokenizer):
    prefix = tokenizer.decode(system_prefix_ids(tokenizer, GRACE_SYSTEM_PROMPT))
    assert prefix == f"<|im_start|>system\n{GRACE_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
    llama3 = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    llama3.chat_template = LLAMA3_STYLE_TEMPLATE
    prefix = llama3.decode(system_prefix_ids(llama3, GRACE_SYSTEM_PROMPT))
    assert (
        prefix
        == f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{GRACE_SYSTEM_PROMPT}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    )
    for tok, exact in ((tokenizer, True), (llama3, False)):
        embedder = GraceEmbedder(tiny_model("llama", len(tokenizer)), tok)
        for text in TEXTS:
            ids = embedder.prompt_ids(text)
            n = embedder.prefix_length(ids)
            # Inside a real prompt the prefix is found; where BPE merges the template's last whitespace with the
            # user text (a foreign template here), the merged token is pooled rather than dropped.
            assert (
                n == embedder.system_prefix_length
                if exact
                else embedder.system_prefix_length - 1 <= n <= embedder.system_prefix_length
            )
            assert text in tok.decode(ids[n:]) and (not text or text not in tok.decode(ids[:n]))


def test_pooling_matches_a_hand_computed_mean(embedder):
    text = "A dog barked all night long."
    ids = embedder.prompt_ids(text)
    p = embedder.system_prefix_length
    with torch.no_grad():
        hidden = embedder.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    expected = hidden[p:].mean(dim=0)
    got = embedder.encode(text, rationale=False, normalize=False)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(embedder.encode(text, rationale=False), (expected / expected.norm()).numpy(), atol=1e-5)
    assert not np.allclose(got, hidden.mean(dim=0).numpy(), atol=1e-4)  # the system prefix really is excluded


def test_mean_pool_ignores_masked_positions():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_eos_pooling_on_and_off(embedder, monkeypatch):
    text = "Paris is the capital of France."
    rationale = embedder.tokenizer("<think>a city</think> It is a capital.", add_special_tokens=False)["input_ids"]
    eos = max(embedder.eos_ids())  # the EOS that was generated is the one pooled
    monkeypatch.setattr(
        embedder, "generate_rationales", lambda prompts, texts, **kw: [(rationale, eos) for _ in prompts]
    )
    ids, p = embedder.prompt_ids(text), embedder.system_prefix_length
    with_eos = embedder.embed_sequences([ids + rationale + [eos]], [p])[0]
    without = embedder.embed_sequences([ids + rationale], [p])[0]
    embedder.grace_config.pool_eos = True
    np.testing.assert_allclose(embedder.encode(text, normalize=False), with_eos.numpy(), atol=1e-5)
    embedder.grace_config.pool_eos = False
    try:
        np.testing.assert_allclose(embedder.encode(text, normalize=False), without.numpy(), atol=1e-5)
    finally:
        embedder.grace_config.pool_eos = True
    assert not torch.allclose(with_eos, without, atol=1e-4)


def test_the_generated_eos_is_the_one_pooled(embedder, monkeypatch):
    """Qwen-style configs list several EOS ids; the rationale ends at, and pools, the one actually generated."""
    monkeypatch.setattr(embedder.model.generation_config, "eos_token_id", [0, 2])
    monkeypatch.setattr(embedder, "shared_prefix_decoding", False)  # the model.generate path (faked below)
    prompt = embedder.prompt_ids("Paris")
    monkeypatch.setattr(
        embedder.model,
        "generate",
        lambda input_ids, **kw: torch.cat([input_ids, torch.tensor([[5, 6, 2, 0]] * input_ids.shape[0])], dim=1),
    )
    assert embedder.generate_rationales([prompt], ["Paris"], max_new_tokens=4, temperature=0.0, top_p=1.0, seed=0) == [
        ([5, 6], 2)
    ]
    expected = embedder.embed_sequences([prompt + [5, 6, 2]], [embedder.system_prefix_length])[0]
    np.testing.assert_allclose(embedder.encode("Paris", normalize=False), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("rationale", [False, True])
def test_order_is_preserved_with_unsorted_lengths(embedder, rationale):
    together = embedder.encode(TEXTS, rationale=rationale, batch_size=2, temperature=0)
    alone = np.stack([embedder.encode(t, rationale=rationale, temperature=0) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.shape == (len(TEXTS), embedder.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_duplicates_are_generated_once(embedder, monkeypatch):
    calls = []
    original = embedder.generate_rationales
    monkeypatch.setattr(
        embedder,
        "generate_rationales",
        lambda prompts, texts, **kw: calls.append(list(texts)) or original(prompts, texts, **kw),
    )
    out, rationales = embedder.encode(["b", "a", "b", " a ", "c"], batch_size=8, return_rationales=True)
    assert sorted(sum(calls, [])) == ["a", "b", "c"]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[3])
    assert rationales[0] == rationales[2] and rationales[1] == rationales[3]


def test_seeded_sampling_is_reproducible(embedder):
    first, r1 = embedder.encode(TEXTS, seed=7, temperature=1.0, return_rationales=True)
    again, r2 = embedder.encode(list(reversed(TEXTS)), seed=7, temperature=1.0, return_rationales=True, batch_size=3)
    np.testing.assert_allclose(again[::-1], first, atol=1e-5)
    assert r2[::-1] == r1
    other, r3 = embedder.encode(TEXTS, seed=8, temperature=1.0, return_rationales=True)
    assert r3 != r1


def test_cache_hit_leaves_generation_uncalled(embedder, tmp_path, monkeypatch):
    first, rationales = embedder.encode(TEXTS, cache_dir=tmp_path, return_rationales=True)
    assert len(list(tmp_path.rglob("*.json"))) == len(set(t.strip() for t in TEXTS))
    monkeypatch.setattr(embedder, "generate_rationales", lambda *a, **k: pytest.fail("generation ran on a cache hit"))
    cached, cached_rationales = embedder.encode(TEXTS, cache_dir=tmp_path, return_rationales=True)
    np.testing.assert_allclose(cached, first, atol=1e-5)
    assert cached_rationales == rationales
    with pytest.raises(pytest.fail.Exception):  # other settings are a cache miss: generation runs
        embedder.encode(TEXTS[:1], cache_dir=tmp_path, max_new_tokens=3)


def test_user_text_is_truncated_before_templating(embedder):
    embedder.grace_config.max_text_tokens = 5
    try:
        ids = embedder.prompt_ids(embedder.truncate_text("one two three four five six seven eight nine ten"))
        rendered = embedder.tokenizer.decode(ids)
        assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n") and "six" not in rendered
    finally:
        embedder.grace_config.max_text_tokens = 1024


def test_bad_input(embedder):
    with pytest.raises(ValueError, match="empty"):
        embedder.encode([])
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        embedder.encode(["ok", 3])
    with pytest.raises(TypeError):
        embedder.encode(None)
    assert embedder.encode([""], rationale=False).shape == (1, embedder.embedding_dim)
    with pytest.raises(ValueError, match="temperature"):
        GraceConfig(temperature=-1)


BLOCK_PROJECT = "import sys; sys.modules['retrieval_policies'] = None\n"  # `import retrieval_policies` now fails


def _load_three_ways(path_or_repo: str, env=None, cwd=None, st_batch_size: int = 2) -> dict:
    code = BLOCK_PROJECT + textwrap.dedent("""
        import json, sys
        import torch
        from transformers import AutoModel, AutoModelForCausalLM
        from sentence_transformers import SentenceTransformer
        try:
            import retrieval_policies
            raise SystemExit("retrieval_policies should not be importable here")
        except ImportError:
            pass
        texts = json.loads(sys.argv[2])
        grace = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        lm = AutoModelForCausalLM.from_pretrained(sys.argv[1])
        st = SentenceTransformer(sys.argv[1], trust_remote_code=True)
        print(json.dumps({
            "grace_class": type(grace).__name__, "lm_class": type(lm).__name__,
            "encode": grace.encode(texts, temperature=0).tolist(),
            "st": st.encode(texts, batch_size=int(sys.argv[3])).tolist(), "st_dim": st.get_embedding_dimension(),
        }))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, path_or_repo, json.dumps(TEXTS), str(st_batch_size)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch, expected_lm", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")])
def test_saved_folder_loads_three_ways_without_the_project(arch, expected_lm, tokenizer, tmp_path):
    embedder = GraceEmbedder(
        tiny_model(arch, len(tokenizer)), tokenizer, GraceConfig(max_new_tokens=6, temperature=0.0)
    )
    embedder.save_pretrained(tmp_path / "grace")
    assert (
        json.loads((tmp_path / "grace" / "config.json").read_text())["auto_map"]["AutoModel"]
        == "modeling_grace.GraceEmbedder"
    )
    expected = embedder.encode(TEXTS)
    out = _load_three_ways(str(tmp_path / "grace"), cwd=tmp_path)
    assert (out["grace_class"], out["lm_class"], out["st_dim"]) == ("GraceEmbedder", expected_lm, 32)
    np.testing.assert_allclose(out["encode"], expected, atol=1e-5)
    np.testing.assert_allclose(out["st"], expected, atol=1e-5)


def test_repo_loads_three_ways_from_the_hub(client, tokenizer, tmp_path):
    embedder = GraceEmbedder(
        tiny_model("llama", len(tokenizer)), tokenizer, GraceConfig(max_new_tokens=6, temperature=0.0)
    )
    embedder.save_pretrained(tmp_path / "grace")
    client(
        """
        import sys
        from huggingface_hub import HfApi
        HfApi().create_repo("org/tiny-grace")
        HfApi().upload_folder(repo_id="org/tiny-grace", folder_path=sys.argv[1])
    """,
        str(tmp_path / "grace"),
    )
    env = client.hub.client_env(tmp_path / "hf_home_reader")
    out = _load_three_ways("org/tiny-grace", env=env, cwd=tmp_path)
    expected = embedder.encode(TEXTS)
    np.testing.assert_allclose(out["encode"], expected, atol=1e-5)
    np.testing.assert_allclose(out["st"], expected, atol=1e-5)


@pytest.mark.slow
def test_smollm2_embeddings_reflect_meaning():
    grace = GraceEmbedder.from_base(DEFAULT_BASE_MODEL, max_new_tokens=32, temperature=0.0)
    assert grace.system_prefix_length == 40 and grace.embedding_dim == 576
    for rationale in (False, True):
        dog, puppy, paris = grace.encode(
            ["A dog barked all night.", "Puppies are young dogs that bark.", "The capital of France is Paris."],
            rationale=rationale,
        )
        assert dog @ puppy > dog @ paris


@pytest.mark.slow
def test_smollm2_grace_repo_loads_three_ways_without_the_project(tmp_path):
    grace = GraceEmbedder.from_base(DEFAULT_BASE_MODEL, max_new_tokens=12, temperature=0.0)
    grace.save_pretrained(tmp_path / "smollm2-grace")
    expected = grace.encode(TEXTS)
    # Same batch composition as encode (greedy decoding of a real LM can flip on near-ties under other padding).
    out = _load_three_ways(str(tmp_path / "smollm2-grace"), cwd=tmp_path, st_batch_size=8)
    assert (out["grace_class"], out["lm_class"], out["st_dim"]) == ("GraceEmbedder", "LlamaForCausalLM", 576)
    np.testing.assert_allclose(out["encode"], expected, atol=1e-4)
    np.testing.assert_allclose(out["st"], expected, atol=1e-4)


def _separately_pooled(embedder, texts, rationales_and_eos):
    sequences = [
        embedder.prompt_ids(t) + ids + ([eos] if eos is not None and embedder.grace_config.pool_eos else [])
        for t, (ids, eos) in zip(texts, rationales_and_eos)
    ]
    return embedder.embed_sequences(sequences, [embedder.prefix_length(s) for s in sequences])


def _one_text_stops_early(embedder, monkeypatch, texts, settings):
    """A token one text writes after a few others, and no other text writes at all, becomes an EOS: that text stops
    there, the others go on. Returns the prompts, the free rationales, that text's row and where it stops."""
    prompts = [embedder.prompt_ids(t) for t in texts]
    free = embedder.generate_rationales(prompts, texts, **settings)
    row, cut = next(
        (r, j)
        for r, (ids, _) in enumerate(free)
        for j in range(1, len(ids))
        if ids[j] not in ids[:j] and all(ids[j] not in other for o, (other, _) in enumerate(free) if o != r)
    )
    monkeypatch.setattr(type(embedder), "eos_ids", lambda self: {2, free[row][0][cut]})
    return prompts, free, row, cut


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_keeps_the_hidden_states_so_encode_skips_the_pooling_forward(embedder, monkeypatch, temperature):
    """The rationale's generation already computed the last hidden layer over prompt + rationale: encode pools those
    (one extra step for the last generated token) and runs no second forward; the vectors are the pooling
    forward's. One text stops at an EOS while the others run on, so both endings are pooled from one batch."""
    texts = TEXTS[:4]
    settings = dict(max_new_tokens=8, temperature=temperature, top_p=1.0, seed=3)
    prompts, free, row, cut = _one_text_stops_early(embedder, monkeypatch, texts, settings)
    stop = free[row][0][cut]
    kept: list = []
    generated = embedder.generate_rationales(prompts, texts, **settings, hidden_out=kept)
    assert generated[row] == (free[row][0][:cut], stop)
    assert [g for r, g in enumerate(generated) if r != row] == [g for r, g in enumerate(free) if r != row]
    # every prompt token and every generated one (the EOS included); a row's states end where the row ended
    assert [len(h) for h in kept] == [
        len(p) + len(ids) + (eos is not None) for p, (ids, eos) in zip(prompts, generated)
    ]
    assert len(kept[row]) < len(prompts[row]) + 8

    calls = []
    original = type(embedder).embed_sequences
    monkeypatch.setattr(type(embedder), "embed_sequences", lambda self, *a: calls.append(a) or original(self, *a))
    vectors, rationales = embedder.encode(texts, normalize=False, return_rationales=True, batch_size=4, **settings)
    assert calls == []  # no pooling forward
    assert rationales[row] == embedder.tokenizer.decode(free[row][0][:cut], skip_special_tokens=True)
    expected = _separately_pooled(embedder, texts, generated)
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-5, rtol=1e-4)
    embedder.grace_config.pool_eos = False
    try:
        without_eos = embedder.encode(texts, normalize=False, batch_size=4, **settings)
        np.testing.assert_allclose(
            without_eos, _separately_pooled(embedder, texts, generated).numpy(), atol=1e-5, rtol=1e-4
        )
    finally:
        embedder.grace_config.pool_eos = True
    others = [r for r in range(len(texts)) if r != row]
    assert not np.allclose(without_eos[row], vectors[row], atol=1e-4)  # only the text that ended at an EOS changes
    np.testing.assert_allclose(without_eos[others], vectors[others], atol=1e-6)


def test_cached_rationales_are_pooled_by_a_forward(embedder, tmp_path, monkeypatch):
    """A rationale read from the cache has no kept hidden states: it is pooled by the forward, to the same vector."""
    first = embedder.encode(TEXTS[:2], temperature=0, cache_dir=tmp_path)
    calls = []
    original = type(embedder).embed_sequences
    monkeypatch.setattr(
        type(embedder), "embed_sequences", lambda self, *a: calls.append(len(a[0])) or original(self, *a)
    )
    np.testing.assert_allclose(embedder.encode(TEXTS[:2], temperature=0, cache_dir=tmp_path), first, atol=1e-5)
    assert calls == [2]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefix_decoding_matches_generate(embedder, monkeypatch, temperature):
    """The shared-prefix loop writes model.generate's rationales (greedy, and sampled from each text's own seeded
    stream) and keeps the same hidden states, though the prefix is computed once and ended rows leave the batch."""
    texts = TEXTS[:4]
    settings = dict(max_new_tokens=8, temperature=temperature, top_p=0.9, seed=5)
    prompts, free, row, cut = _one_text_stops_early(embedder, monkeypatch, texts, settings)

    shapes = []
    original = type(embedder)._forward_step
    monkeypatch.setattr(
        type(embedder),
        "_forward_step",
        lambda self, ids, *a: shapes.append(tuple(ids.shape)) or original(self, ids, *a),
    )
    loop_hidden: list = []
    looped = embedder.generate_rationales(prompts, texts, **settings, hidden_out=loop_hidden)
    monkeypatch.setattr(embedder, "shared_prefix_decoding", False)
    generate_hidden: list = []
    generated = embedder.generate_rationales(prompts, texts, **settings, hidden_out=generate_hidden)

    assert looped == generated and looped[row] == (free[row][0][:cut], free[row][0][cut])
    for mine, theirs, (ids, eos), prompt in zip(loop_hidden, generate_hidden, looped, prompts):
        n = len(prompt) + len(ids) + (eos is not None)
        torch.testing.assert_close(mine, theirs[:n], atol=1e-5, rtol=1e-4)
    prefix = embedder.system_prefix_length
    assert shapes[0] == (1, prefix)  # the system turn, once for the batch
    assert shapes[1] == (4, max(len(p) for p in prompts) - prefix)  # the rest of each prompt
    steps = [s[0] for s in shapes[2:]]
    assert steps[: cut + 1] == [4] * (cut + 1) and steps[cut + 1 :] == [3] * (8 - cut - 1)  # the ended row left


def test_models_whose_cache_cannot_drop_rows_decode_with_generate(embedder, monkeypatch):
    """A sliding-window (or quantized, linear-attention) cache goes to model.generate: same rationales."""
    texts = TEXTS[:3]
    prompts = [embedder.prompt_ids(t) for t in texts]
    settings = dict(max_new_tokens=6, temperature=0.0, top_p=1.0, seed=0)
    expected = embedder.generate_rationales(prompts, texts, **settings)
    calls = []
    real = embedder.model.generate
    monkeypatch.setattr(embedder.model, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr("retrieval_policies.models.grace.modeling_grace._can_select_rows", lambda cache: False)
    assert embedder.generate_rationales(prompts, texts, **settings) == expected
    assert calls == [1]


def test_encode_takes_sentence_transformers_keyword_arguments(tokenizer):
    """What sentence-transformers users pass to encode works, or is refused saying why (never silently ignored)."""
    import torch
    from testing_utils import tiny_llama

    from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

    grace = GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=3, temperature=0.0))
    texts = ["A dog barked.", "Puppies bark."]
    plain = grace.encode(texts, rationale=False)
    tensor = grace.encode(texts, rationale=False, convert_to_tensor=True, normalize_embeddings=True, device="cpu")
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(plain))
    raw = grace.encode(texts, rationale=False, normalize_embeddings=False)
    assert abs(float((raw**2).sum(axis=1)[0]) - 1.0) > 1e-3  # not normalised when asked not to
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['prompt_name'\]"):
        grace.encode(texts, prompt_name="query")
    with pytest.raises(ValueError, match="runs on cpu, where it was loaded"):
        grace.encode(texts, device="cuda:1")
    with pytest.raises(ValueError, match="float32 embeddings only"):
        grace.encode(texts, precision="int8")


def test_shared_terms_are_content_words_and_phrases_in_order():
    from retrieval_policies.models.grace.modeling_grace import shared_terms

    first = "The river bank flooded after the heavy rain in spring."
    second = "Heavy rain made the river bank overflow; spring floods are common."
    assert shared_terms(first, second) == ["river bank", "heavy rain", "spring"]
    assert shared_terms("The of and", "the of and") == []  # stop words only
    assert shared_terms("Paris 1889", "In 1889, Paris hosted a fair") == ["paris", "1889"]


def test_explain_ranks_documents_and_shows_both_rationales(tokenizer):
    embedder = GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=4, temperature=0.0))
    documents = ["A dog barked at the mailman.", "Stocks fell sharply today.", "The puppy barked loudly."]
    explained = embedder.explain("Why did the dog bark?", documents)
    vectors, rationales = embedder.encode(["Why did the dog bark?", *documents], return_rationales=True)
    scores = vectors[1:] @ vectors[0]
    assert [e["index"] for e in explained] == sorted(range(3), key=lambda i: -scores[i])
    assert [e["rank"] for e in explained] == [1, 2, 3]
    for e in explained:
        assert e["score"] == pytest.approx(float(scores[e["index"]]), abs=1e-5)
        assert e["query_rationale"] == rationales[0] and e["document_rationale"] == rationales[e["index"] + 1]
    shared = {e["index"]: e["shared"] for e in explained}
    assert "dog" in shared[0] and "barked" not in shared[1]
    with pytest.raises(ValueError, match="non-empty list"):
        embedder.explain("q", [])


def test_a_swapped_rationale_changes_the_embedding_and_faithfulness_reports_it(tokenizer, monkeypatch, tmp_path):
    from retrieval_policies import cli
    from retrieval_policies.grace import faithfulness

    embedder = GraceEmbedder(tiny_llama(tokenizer).eval(), tokenizer, GraceConfig(max_new_tokens=4, temperature=0.0))
    texts = ["A dog barked.", "Stocks fell.", "Rain in Spain."]
    vectors, rationales = embedder.encode(texts, return_rationales=True)
    own = embedder.encode_with_rationales(texts, rationales)
    sequences = [
        embedder.prompt_ids(t) + tokenizer(r, add_special_tokens=False)["input_ids"] for t, r in zip(texts, rationales)
    ]
    expected = torch.nn.functional.normalize(
        embedder.embed_sequences(sequences, [embedder.prefix_length(embedder.prompt_ids(t)) for t in texts]), dim=-1
    )
    np.testing.assert_allclose(own, expected.numpy(), atol=1e-5)
    written = ["It is about a dog.", "Markets went down.", "Weather in Europe."]  # distinct, unlike a random model's
    mine, swapped = (
        embedder.encode_with_rationales(texts, written),
        embedder.encode_with_rationales(texts, written[1:] + written[:1]),
    )
    assert (np.sum(mine * swapped, axis=1) < 1 - 1e-4).all()  # another text's rationale moves every vector
    assert sorted(faithfulness.derangement(7, seed=3)) == list(range(7))
    assert all(i != j for i, j in enumerate(faithfulness.derangement(7, seed=3)))
    relevant = [{0}, {1}]
    perfect = np.eye(2, dtype=np.float32)
    assert faithfulness.ndcg_at_10(perfect, perfect, relevant) == 1.0
    assert faithfulness.ndcg_at_10(perfect, perfect[::-1], relevant) == pytest.approx(1 / np.log2(3))

    corpus = ["dog, hound", "stock, share", "rain, shower"]
    task = (["a barking animal", "a financial security"], corpus, [{0}, {1}])
    monkeypatch.setattr(faithfulness, "load_retrieval_task", lambda name, max_queries=None: task)
    embedder.save_pretrained(tmp_path / "g")
    output = tmp_path / "faithfulness.json"
    command = ["grace", "faithfulness", "--model", str(tmp_path / "g"), "--output", str(output), "--batch-size", "2"]
    assert cli.main(command) == 0
    [report] = json.loads(output.read_text())["tasks"]
    assert set(report["ndcg_at_10"]) == {"own_rationale", "swapped_rationale", "no_rationale"}
    assert 0 < report["cosine_own_vs_swapped"] <= 1 + 1e-6 and report["queries"] == 2 and report["documents"] == 3
    assert report["swap_loss"] == pytest.approx(
        report["ndcg_at_10"]["own_rationale"] - report["ndcg_at_10"]["swapped_rationale"]
    )


def test_faithfulness_reads_the_local_retrieval_tasks():
    from retrieval_policies.corpora import WordNet, WordNetNotFoundError
    from retrieval_policies.grace.faithfulness import load_retrieval_task

    try:
        WordNet()
    except WordNetNotFoundError as err:
        pytest.skip(str(err))
    queries, corpus, relevant = load_retrieval_task("LocalWordNetDefinitionRetrieval", max_queries=3)
    assert len(queries) == 3 and len(relevant) == 3 and all(len(r) == 1 and max(r) < len(corpus) for r in relevant)
    with pytest.raises(ValueError, match="local retrieval tasks"):
        load_retrieval_task("LocalLeeSTS")
