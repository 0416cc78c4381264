"""The answer judges of DynamicRAG's reward (method spec §3: an LLM rates the generator's answer 0..100 against the
gold one): any local chat LM through transformers, or the same on vLLM, with the same messages and greedy replies."""

from __future__ import annotations

import re

import torch

JUDGE_SYSTEM_PROMPT = (
    "You are an impartial judge of answers to questions. Given a question, the reference answer and a candidate "
    "answer, rate the candidate from 0 to 100 for relevance to the question, factual accuracy with respect to the "
    "reference, soundness of reasoning, clarity, and not being misleading. Reply with the score only, an integer "
    "from 0 to 100."
)
_SCALE = re.compile(r"\(?\s*\b0\s*(?:-|–|to)\s*100\s*\)?|/\s*100\b")  # an echoed "(0-100)" or "/100"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_judge_score(text: str) -> int | None:
    """The score of a judge's reply: its first number once an echoed scale ("Score (0-100):", "/100") is removed,
    when that number is an integer in 0..100; anything else (a fraction, a negative number, 150, no number) is
    unparseable (None)."""
    match = _NUMBER.search(_SCALE.sub(" ", text or ""))
    if match is None or "." in match.group(0):
        return None
    value = int(match.group(0))
    return value if 0 <= value <= 100 else None


class AnswerJudge:
    """Any local Hugging Face causal chat LM as the 0..100 judge; greedy replies in batches."""

    def __init__(
        self, name_or_path: str, *, max_new_tokens: int = 8, batch_size: int = 16, device_map=None, dtype=None
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..assets import resolve_model
        from ..common.placement import load_placed

        folder = resolve_model(name_or_path)
        self.name = name_or_path
        self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_placed(AutoModelForCausalLM, folder, device_map=device_map, dtype=dtype)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @staticmethod
    def messages(question: str, gold: str, answer: str) -> list[dict]:
        user = f"Question: {question}\nReference answer: {gold}\nCandidate answer: {answer}\nScore (0-100):"
        return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]

    @torch.no_grad()
    def replies(self, triples: list[tuple[str, str, str]]) -> list[str]:
        out = []
        for start in range(0, len(triples), self.batch_size):
            prompts = [
                self.tokenizer.apply_chat_template(self.messages(*t), add_generation_prompt=True, tokenize=False)
                for t in triples[start : start + self.batch_size]
            ]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                self.model.device
            )
            generated = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )
            out += self.tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return out


def make_answer_judge(settings):
    """The judge a ``rewards.RewardSettings`` asks for: transformers (placed by judge_device_map/judge_dtype) or vLLM."""
    if settings.judge_backend == "vllm":
        options = {
            "gpu_memory_utilization": settings.judge_vllm_gpu_memory_utilization,
            "tensor_parallel_size": settings.judge_vllm_tensor_parallel_size,
        }
        if settings.judge_vllm_max_model_length:
            options["max_model_len"] = settings.judge_vllm_max_model_length
        if settings.judge_dtype:
            options["dtype"] = settings.judge_dtype
        return VLLMAnswerJudge(
            settings.judge_model,
            max_new_tokens=settings.judge_max_new_tokens,
            device_map=settings.judge_device_map,
            **options,
        )
    return AnswerJudge(
        settings.judge_model,
        max_new_tokens=settings.judge_max_new_tokens,
        batch_size=settings.batch_size,
        device_map=settings.judge_device_map,
        dtype=settings.judge_dtype,
    )


class VLLMAnswerJudge:
    """The reward's judge on vLLM: ``replies(triples)`` like ``AnswerJudge`` (same messages, greedy)."""

    def __init__(
        self, name_or_path: str, *, max_new_tokens: int = 8, device_map: str | None = None, llm=None, **llm_kwargs
    ):
        """``device_map``: the judge's device (RewardSettings.judge_device_map, e.g. "cuda:1"); ``llm``: an existing
        engine over the same weights to share."""
        from transformers import AutoTokenizer

        from ..assets import resolve_model
        from .vllm_backend import engine_device, engine_stop_token_ids, start_engine  # loaded only for vLLM

        folder = str(resolve_model(name_or_path))
        self.name, self.max_new_tokens = name_or_path, max_new_tokens
        self.llm = llm if llm is not None else start_engine(folder, engine_device(device_map), **llm_kwargs)
        self.stop_token_ids = engine_stop_token_ids(folder, AutoTokenizer.from_pretrained(folder))

    def replies(self, triples: list[tuple[str, str, str]]) -> list[str]:
        from vllm import SamplingParams

        if not triples:
            return []
        params = SamplingParams(
            n=1,
            temperature=0.0,
            top_p=1.0,
            max_tokens=self.max_new_tokens,
            seed=None,
            stop_token_ids=self.stop_token_ids,
        )
        outputs = self.llm.chat([AnswerJudge.messages(*t) for t in triples], params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
