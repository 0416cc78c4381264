"""Trajectory sampling: batched generation, the JSONL output and resuming after an interruption."""

from __future__ import annotations

import json

from testing_utils import tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.dynamicrag.sampling import completed_ids, sample_trajectories
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.dynamicrag.prompts_dynamicrag import reranker_messages

ROWS = [
    {
        "id": f"q{i}",
        "question": f"Question number {i}?",
        "answers": [f"a{i}"],
        "ctxs": [
            {"title": f"t{j}", "text": f"passage {j} about {i}", "has_answer": j == i, "relevant": j == i}
            for j in range(5)
        ],
    }
    for i in range(5)
]


def _model():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    model = DynamicRAGModel(
        tiny_llama(tokenizer).eval(),
        tokenizer,
        DynamicRAGConfig(max_passages=4, rerank_max_new_tokens=6, answer_max_new_tokens=4),
    )
    calls = []
    original = model.generate_texts
    model.generate_texts = lambda conversations, **kw: calls.append(len(conversations)) or original(conversations, **kw)
    return model, calls


def test_sampling_is_batched_and_complete(tmp_path):
    model, calls = _model()
    counts = sample_trajectories(
        model, ROWS[:3], tmp_path / "t.jsonl", num_samples=3, batch_size=2, show_progress_bar=False
    )
    # per batch: one sampling call (2 prompts x 3 samples), then one call answering every distinct selection at once
    assert calls[0::2] == [2, 1] and len(calls) == 4
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    distinct = [{tuple(t["ids"]) for t in line["trajectories"]} for line in lines]
    assert calls[1::2] == [len(distinct[0]) + len(distinct[1]), len(distinct[2])] and counts["answer_calls"] == sum(
        calls[1::2]
    )
    assert [line["id"] for line in lines] == ["q0", "q1", "q2"]
    for line in lines:
        assert len(line["trajectories"]) == 3 and len(line["ctxs"]) == 4  # only the passages the model was shown
        assert all(set(t) == {"output", "ids", "malformed", "answer"} for t in line["trajectories"])
        assert all(1 <= i <= 4 for t in line["trajectories"] for i in t["ids"])
        row = next(r for r in ROWS if r["id"] == line["id"])
        assert line["prompt"] == reranker_messages(row["question"], row["ctxs"][:4])  # what DPO's pairs will show
    assert counts["sampled"] == 3 and counts["outputs"] == 9


def test_a_model_trained_with_the_restated_query_samples_with_it(tmp_path):
    model, _ = _model()
    model.dynamicrag_config.restate_query = True
    sample_trajectories(model, ROWS[:1], tmp_path / "t.jsonl", num_samples=2, show_progress_bar=False)
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line["prompt"][1]["content"].endswith("Query (again): Question number 0?")


def test_sampling_resumes_after_an_interruption(tmp_path):
    model, calls = _model()
    out = tmp_path / "t.jsonl"
    sample_trajectories(model, ROWS[:2], out, num_samples=2, batch_size=2, show_progress_bar=False)
    with open(out, "a") as f:
        f.write('{"id": "q2", "question": "torn')  # the process died in the middle of this line
    assert completed_ids(out) == {"q0", "q1"} and out.read_text().endswith("\n")
    calls.clear()
    counts = sample_trajectories(model, ROWS, out, num_samples=2, batch_size=2, show_progress_bar=False)
    assert counts["skipped_done"] == 2 and counts["sampled"] == 3
    assert calls[0::2] == [2, 1]  # only q2..q4 were sampled
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["q0", "q1", "q2", "q3", "q4"]


def test_seeded_sampling_is_reproducible(tmp_path):
    model, _ = _model()
    sample_trajectories(model, ROWS[:2], tmp_path / "a.jsonl", num_samples=4, batch_size=2, show_progress_bar=False)
    sample_trajectories(model, ROWS[:2], tmp_path / "b.jsonl", num_samples=4, batch_size=2, show_progress_bar=False)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_sample_recipe_script(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from retrieval_policies.common.dataset_io import write_dataset_folder

    model, _ = _model()
    model.save_pretrained(tmp_path / "sft")
    write_dataset_folder(tmp_path / "data", {"pool": {"train": ROWS}}, pretty_name="pool", card_body="x", license="mit")
    script = Path(__file__).resolve().parents[1] / "recipes" / "dynamicrag" / "sample.py"
    config = tmp_path / "config_sample.yaml"
    config.write_text(
        f"model_name_or_path: {tmp_path / 'sft'}\ndataset_name: {tmp_path / 'data'}\n"
        f"output_file: {tmp_path / 'out.jsonl'}\nnum_samples: 2\nrerank_max_new_tokens: 4\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), "--config", str(config), "--max_questions", "3", "--answer_max_new_tokens", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)["trajectories"]) == 2 for line in lines)
    assert "'sampled': 3" in result.stdout


def test_shared_prefill_matches_separate_prompts():
    model, _ = _model()
    from retrieval_policies.models.dynamicrag import reranker_messages

    conversations = [
        reranker_messages(r["question"], r["ctxs"][: 2 + i]) for i, r in enumerate(ROWS[:3])
    ]  # different lengths
    separate = model.generate_texts([c for c in conversations for _ in range(3)], max_new_tokens=6)
    shared = model.generate_texts(conversations, max_new_tokens=6, num_samples=3)
    assert shared == separate


def test_samples_choosing_the_same_list_share_one_greedy_answer(tmp_path):
    model, calls = _model()
    scripted = iter(["[1], [2]", "[2]", "[1], [2]", "None"])
    original = model.generate_texts
    model.generate_texts = lambda conversations, **kw: (
        [next(scripted) for _ in range(len(conversations) * kw["num_samples"])]
        if kw.get("num_samples", 1) > 1
        else original(conversations, **kw)
    )  # the answer call, counted by _model's wrapper
    sample_trajectories(model, ROWS[:1], tmp_path / "t.jsonl", num_samples=4, batch_size=1, show_progress_bar=False)
    assert calls == [3]  # [1],[2] / [2] / None
    trajectories = json.loads((tmp_path / "t.jsonl").read_text())["trajectories"]
    assert [t["ids"] for t in trajectories] == [[1, 2], [2], [1, 2], []]
    assert trajectories[0]["answer"] == trajectories[2]["answer"]


def test_vllm_backend_samples_through_the_same_code(tmp_path, monkeypatch):
    """vLLM replaces generate_texts only; a stand-in vllm module checks the request and the mapping (on a CPU the
    engine gets a sized KV cache; tests/test_vllm_engine.py samples with the real engine)."""
    import sys
    import types
    from types import SimpleNamespace

    requests = []

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, model, **kwargs):
            self.model, self.kwargs = model, kwargs

        def chat(self, conversations, params, use_tqdm=False):
            requests.append((len(conversations), params.kwargs))
            return [
                SimpleNamespace(outputs=[SimpleNamespace(text=f"[{k + 1}]") for k in range(params.kwargs["n"])])
                for _ in conversations
            ]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG

    folder = tmp_path / "model"
    AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True)).save_pretrained(folder)
    DynamicRAGConfig(max_passages=4, rerank_max_new_tokens=7, answer_max_new_tokens=5).save(folder)
    model = VLLMDynamicRAG(str(folder), gpu_memory_utilization=0.5)
    # vLLM's own sampling defaults, not the checkpoint's generation_config.json
    assert model.llm.kwargs == {
        "gpu_memory_utilization": 0.5,
        "generation_config": "vllm",
        "kv_cache_memory_bytes": 2 * 1024**3,
    }
    assert model.dynamicrag_config.max_passages == 4
    sample_trajectories(
        model, ROWS[:2], tmp_path / "t.jsonl", num_samples=3, temperature=0.4, batch_size=2, show_progress_bar=False
    )
    (n_prompts, sampling), (n_answers, greedy) = requests
    assert n_prompts == 2 and sampling["n"] == 3 and sampling["temperature"] == 0.4 and sampling["max_tokens"] == 7
    assert sampling["stop_token_ids"] == model.eos_ids()  # the tokenizer's EOS (no generation_config.json here)
    assert n_answers == 6 and greedy["n"] == 1 and greedy["temperature"] == 0.0 and greedy["max_tokens"] == 5
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [t["ids"] for t in lines[0]["trajectories"]] == [[1], [2], [3]]


def test_answers_use_each_questions_own_instruction(tmp_path):
    from retrieval_policies.dynamicrag.data import clean_rows
    from retrieval_policies.models.dynamicrag.prompts_dynamicrag import TASK_INSTRUCTIONS

    model, _ = _model()
    rows = clean_rows([{**ROWS[0], "source": "fever"}, {**ROWS[1], "source": "eli5"}, ROWS[2]])[0]
    seen = []
    original = model.generate_texts
    model.generate_texts = lambda conversations, **kw: seen.extend(conversations) or original(conversations, **kw)
    sample_trajectories(model, rows, tmp_path / "t.jsonl", num_samples=2, batch_size=3, show_progress_bar=False)
    answer_prompts = [c[-1]["content"] for c in seen if c[0]["content"].startswith("You are a helpful assistant")]
    firsts = {p.split("\nQuery: ")[1].split("\n")[0]: p.split("\n")[0] for p in answer_prompts}
    assert firsts == {
        "Question number 0?": TASK_INSTRUCTIONS["fever"],
        "Question number 1?": TASK_INSTRUCTIONS["long"],
        "Question number 2?": TASK_INSTRUCTIONS["short"],
    }
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["fever", "long", "short"]  # the pairs stage reads it from here
