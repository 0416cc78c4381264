"""The §3 answer reward: each term on hand-computed cases, the per-trajectory length term, judge parsing,
renormalised weights, and the resumable reward stage that records its configuration."""

from __future__ import annotations

import json

import pytest

from retrieval_policies.dynamicrag.judges import parse_judge_score
from retrieval_policies.dynamicrag.rewards import (
    AnswerRewarder,
    BertScorer,
    RewardSettings,
    combine,
    exact_match,
    length_term,
    reward_file,
    rouge_l,
)


class FixedBertScore:
    """BERTScore stand-in: a table of F1 values per (gold, answer)."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def f1(self, candidates, references):
        self.calls += 1
        return [self.table[(c, r)] for c, r in zip(candidates, references)]


class ScriptedJudge:
    def __init__(self, replies):
        self.replies_by_answer, self.seen = replies, []

    def replies(self, triples):
        self.seen += triples
        return [self.replies_by_answer[answer] for _, _, answer in triples]


def _record(answers, trajectories, rid="q1"):
    return {
        "id": rid,
        "question": "What is the capital of France?",
        "answers": answers,
        "ctxs": [],
        "trajectories": [
            {"ids": ids, "answer": answer, "output": "", "malformed": False} for ids, answer in trajectories
        ],
    }


def test_exact_match_is_bidirectional_containment_after_lowercasing():
    assert exact_match("Paris", "It is paris.") == 1.0
    assert exact_match("The Eiffel Tower", " eiffel tower ") == 1.0  # the answer inside the gold counts too
    assert exact_match("Paris", "London") == 0.0
    assert exact_match("Paris", "   ") == 0.0  # an empty answer is not "contained" in every gold


def test_rouge_l_and_length_terms():
    assert rouge_l("Paris", "Paris") == 1.0
    # LCS("the city of paris", "paris") = 1 token: P = 1/4, R = 1, F = 2PR/(P+R) = 0.4
    assert rouge_l("the city of paris", "Paris") == pytest.approx(0.4)
    assert [length_term(k) for k in (0, 1, 3)] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "reply,score",
    [
        ("85", 85),
        ("Score: 90/100", 90),
        ("100.", 100),
        ("87.6", None),
        ("0", 0),
        ("Score (0-100): 75", 75),
        ("Score (0 to 100): 60", 60),
        ("0-100: 40", 40),
        ("150", None),
        ("1000", None),
        ("-5", None),
        ("I cannot judge", None),
        ("", None),
    ],
)
def test_judge_reply_parsing(reply, score):
    assert parse_judge_score(reply) == score


def test_weights_are_renormalised_over_enabled_terms():
    assert RewardSettings().weights() == pytest.approx(
        {t: 0.2 for t in ("em", "rougel", "bertscore", "length", "judge")}
    )
    assert RewardSettings(judge_model=None).weights() == pytest.approx(
        {t: 0.25 for t in ("em", "rougel", "bertscore", "length")}
    )
    no_model_terms = RewardSettings(weight_bertscore=0, judge_model=None, weight_em=0.4)
    assert no_model_terms.weights() == pytest.approx({"em": 0.5, "rougel": 0.25, "length": 0.25})
    assert no_model_terms.record()["enabled_terms"] == ["em", "rougel", "length"]
    with pytest.raises(ValueError, match="every reward term is disabled"):
        RewardSettings(weight_em=0, weight_rougel=0, weight_bertscore=0, weight_length=0, weight_judge=0)
    with pytest.raises(ValueError, match="weight_em"):
        RewardSettings(weight_em=-1)
    assert combine({"em": 1.0, "judge": None}, {"em": 0.5, "judge": 0.5}) == 1.0


def test_reward_on_a_hand_computed_case():
    bert = FixedBertScore({("Paris", "Paris"): 0.9, ("Paris", "London"): 0.5})
    judge = ScriptedJudge({"Paris": "80", "London": "no idea"})
    rewarder = AnswerRewarder(RewardSettings(), bert_scorer=bert, judge=judge)
    record = rewarder.score_records([_record(["Paris"], [([1, 2], "Paris"), ([], "London")])])[0]
    first, second = record["trajectories"]
    # the judge's reply for "London" is unparseable, so the judge term is dropped for the whole question (both
    # trajectories ranked on the same terms) and its weight renormalised away:
    # (EM 1 + ROUGE-L 1 + BERTScore 0.9 + 1/(1+2)) / 4
    assert first["reward"] == pytest.approx((1 + 1 + 0.9 + 1 / 3) / 4)
    assert second["reward"] == pytest.approx((0 + 0 + 0.5 + 1.0) / 4)
    assert first["reward_terms"][0]["judge"] is None and second["reward_terms"][0]["judge"] is None
    assert rewarder.counts["judge_unparseable"] == 1 and rewarder.counts["judge_parsed"] == 1
    assert bert.calls == 1 and judge.seen[0] == ("What is the capital of France?", "Paris", "Paris")


def test_length_term_uses_each_trajectorys_own_k():
    rewarder = AnswerRewarder(RewardSettings(weight_em=0, weight_rougel=0, weight_bertscore=0, weight_judge=0))
    record = rewarder.score_records([_record("Paris", [([], "a"), ([3], "a"), ([1, 2, 3], "a")])])[0]
    assert [t["reward"] for t in record["trajectories"]] == [1.0, 0.5, 0.25]  # not a constant 1/(1 + #trajectories)


def test_reward_is_the_mean_over_gold_answers():
    rewarder = AnswerRewarder(RewardSettings(weight_rougel=0, weight_bertscore=0, weight_length=0, weight_judge=0))
    record = rewarder.score_records([_record(["Paris", "City of Light"], [([1], "paris")])])[0]
    assert record["trajectories"][0]["reward"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no gold answers"):
        rewarder.score_records([_record([], [([1], "x")], rid="empty")])


def test_reward_file_records_its_configuration_and_resumes(tmp_path):
    source, out = tmp_path / "trajectories.jsonl", tmp_path / "rewards.jsonl"
    records = [_record(["Paris"], [([1], "Paris"), ([], "Rome")], rid=f"q{i}") for i in range(3)]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = RewardSettings(weight_bertscore=0, judge_model=None)
    counts = reward_file(AnswerRewarder(settings), source, out, batch_size=2, show_progress_bar=False)
    assert counts["trajectories"] == 6
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["q0", "q1", "q2"]
    assert lines[0]["reward_config"]["normalised_weights"] == pytest.approx(
        {"em": 1 / 3, "rougel": 1 / 3, "length": 1 / 3}
    )
    assert lines[0]["reward_config"]["judge_model"] is None
    # An interrupted run left a torn line: a re-run keeps the finished questions and scores only the rest.
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + '\n{"id": "q2", "tra')
    counts = reward_file(AnswerRewarder(settings), source, out, show_progress_bar=False)
    assert counts["skipped_done"] == 2 and counts["trajectories"] == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q0", "q1", "q2"]


def test_reward_file_names_a_bad_line(tmp_path):
    source = tmp_path / "trajectories.jsonl"
    source.write_text(json.dumps(_record("a", [([], "a")])) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"trajectories.jsonl:2"):
        reward_file(AnswerRewarder(RewardSettings(judge_model=None, weight_bertscore=0)), source, tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()  # the whole input is read before anything is written


def test_bertscore_with_a_local_encoder():
    scorer = BertScorer("sentence-transformers/all-MiniLM-L6-v2")
    same, related, unrelated = scorer.f1(
        ["the capital of France is Paris"] * 3,
        ["the capital of France is Paris", "Paris is France's capital", "bananas are yellow"],
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > related > unrelated
    assert scorer.f1([""], ["Paris"]) == [0.0]


def _tiny_judge(folder):
    """A tiny random Llama over SmolLM2's tokenizer saved as a judge folder; returns the tokenizer."""
    from testing_utils import tiny_llama
    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_a_local_causal_lm_judges_in_batches(tmp_path):
    """The judge is any local causal LM (a tiny random one here): one reply per (question, gold, answer), greedy, and
    every reply is either parsed or counted as unparseable."""
    from retrieval_policies.dynamicrag.judges import AnswerJudge

    _tiny_judge(tmp_path / "judge")
    judge = AnswerJudge(str(tmp_path / "judge"), max_new_tokens=4, batch_size=2)
    triples = [("q1", "Paris", "Paris"), ("q2", "Rome", "It is Rome"), ("q3", "Oslo", "no idea")]
    replies = judge.replies(triples)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert judge.replies(triples) == replies  # greedy: the same replies again
    rewarder = AnswerRewarder(RewardSettings(weight_bertscore=0, judge_model=str(tmp_path / "judge")), judge=judge)
    rewarder.score_records([_record(["Paris"], [([1], "Paris"), ([], "Rome")])])
    assert rewarder.counts["judge_parsed"] + rewarder.counts["judge_unparseable"] == 2


def test_reward_models_and_labellers_take_their_own_placement(tmp_path):
    """The judge and the BERTScore encoder (and the relevance labellers) load where they are told, independently of
    the policy; on this CPU nothing given means fp32."""
    import torch
    from transformers import AutoTokenizer

    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
    from retrieval_policies.dynamicrag.judges import AnswerJudge
    from retrieval_policies.retrieval.labels import LLMJudge

    scorer = BertScorer("sentence-transformers/all-MiniLM-L6-v2", device_map="cpu", dtype="bfloat16")
    assert scorer.model.dtype == torch.bfloat16
    assert scorer.f1(["the capital of France is Paris"], ["the capital of France is Paris"])[0] == pytest.approx(
        1.0, abs=1e-2
    )
    from testing_utils import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    tiny_llama(tokenizer).save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    judge = AnswerJudge(str(tmp_path / "judge"), max_new_tokens=2, device_map="cpu", dtype="bfloat16")
    assert judge.model.dtype == torch.bfloat16 and len(judge.replies([("q", "Paris", "Paris")])) == 1
    assert AnswerJudge(str(tmp_path / "judge")).model.dtype == torch.float32
    labeller = LLMJudge.from_pretrained(str(tmp_path / "judge"), dtype="bfloat16")
    assert labeller.model.dtype == torch.bfloat16 and len(labeller.scores([("q", "a passage")])) == 1
    settings = RewardSettings(judge_device_map="cpu", judge_dtype="bfloat16", bertscore_device_map="cpu")
    assert (settings.judge_device_map, settings.judge_dtype, settings.bertscore_dtype) == ("cpu", "bfloat16", None)


def test_a_failed_judgement_drops_the_judge_term_for_the_whole_question():
    class Judge:
        def replies(self, triples):
            return ["80" if answer == "Paris" else "no idea" for _, _, answer in triples]

    rewarder = AnswerRewarder(RewardSettings(weight_bertscore=0), judge=Judge())
    [record] = rewarder.score_records([_record(["Paris"], [([1], "Paris"), ([], "Rome")])])
    assert all(terms["judge"] is None for t in record["trajectories"] for terms in t["reward_terms"])
    assert rewarder.counts["judge_dropped_questions"] == 1 and rewarder.counts["judge_parsed"] == 1


def test_bertscore_layer_and_baseline_rescaling_as_bert_score_does():
    candidates, references = ["the capital of France is Paris"] * 2, ["Paris is France's capital", "bananas are yellow"]
    last = BertScorer("sentence-transformers/all-MiniLM-L6-v2").f1(candidates, references)
    assert BertScorer("sentence-transformers/all-MiniLM-L6-v2", num_layers=6).f1(
        candidates, references
    ) == pytest.approx(last)
    assert BertScorer("sentence-transformers/all-MiniLM-L6-v2", num_layers=2).f1(
        candidates, references
    ) != pytest.approx(last)
    rescaled = BertScorer("sentence-transformers/all-MiniLM-L6-v2", baseline_f1=0.5).f1(candidates, references)
    assert rescaled == pytest.approx([(f - 0.5) / 0.5 for f in last])
    with pytest.raises(ValueError, match="bertscore_baseline_f1"):
        RewardSettings(bertscore_baseline_f1=1.0)


def test_the_judge_on_vllm_gets_the_configured_options(tmp_path, monkeypatch, request):
    """The reward stage's judge with ``judge_backend: vllm``: vllm.LLM given the configured GPU options and placed on
    judge_device_map, the same messages and greedy replies as the HF judge (the fake: GPU settings cannot run here;
    tests/test_vllm_engine.py runs the judge on the real engine)."""
    import sys

    from retrieval_policies.dynamicrag.judges import AnswerJudge, VLLMAnswerJudge

    tokenizer = _tiny_judge(tmp_path / "judge")
    triples = [("q1", "Paris", "Paris"), ("q2", "Rome", "It is Rome")]
    monkeypatch.setitem(sys.modules, "vllm", None)
    settings = RewardSettings(
        weight_bertscore=0,
        judge_model=str(tmp_path / "judge"),
        judge_backend="vllm",
        judge_max_new_tokens=4,
        judge_vllm_max_model_length=512,
    )
    with pytest.raises(ImportError, match=r'pip install -e "\.\[vllm\]"'):
        AnswerRewarder(settings)
    vllm = request.getfixturevalue("fake_vllm")
    settings.judge_device_map = "cuda:1"
    if True:
        rewarder = AnswerRewarder(settings)
        assert isinstance(rewarder.judge, VLLMAnswerJudge)
        expected = AnswerJudge(str(tmp_path / "judge"), max_new_tokens=4, batch_size=1).replies(triples)
        assert [r.strip() for r in rewarder.judge.replies(triples)] == [r.strip() for r in expected]
        (_, options), (call, request) = vllm.CALLS[:2]
        assert options["max_model_len"] == 512 and options["generation_config"] == "vllm"
        assert options["gpu_memory_utilization"] == 0.9 and call == "chat"
        assert options["CUDA_VISIBLE_DEVICES"] == "1"  # the engine started with the judge's GPU alone visible
        assert request["conversations"][0] == AnswerJudge.messages(*triples[0])
        assert (request["params"].temperature, request["params"].max_tokens) == (0.0, 4)
        assert tokenizer.eos_token_id in request["params"].stop_token_ids
        rewarder.score_records([_record(["Paris"], [([1], "Paris"), ([], "Rome")])])
        assert rewarder.counts["judge_parsed"] + rewarder.counts["judge_unparseable"] == 2
