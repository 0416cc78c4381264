"""Expert relevance labels for (question, passage) pairs, pluggable (method spec §1.2).

- ``has_answer``: a normalised gold answer occurs, on word boundaries, in the normalised passage.
- ``LLMJudge``: a local causal chat LM asked whether the passage answers the question; the label compares the
  next-token logits of "yes" and "no".
- ``MonoT5Judge``: monoT5 by name (Hub): ``Query: … Document: … Relevant:``, label = "true" beats "false" as the
  first decoded token.
"""

from __future__ import annotations

import re
import string

import torch

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation (the same rule as metrics/rag_answer, which must stay self-contained for its Space)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def has_answer(passage: str, answers) -> bool:
    answers = [answers] if isinstance(answers, str) else answers
    haystack = f" {normalize_answer(passage)} "
    return any(needle and f" {needle} " in haystack for needle in (normalize_answer(a) for a in answers))


JUDGE_SYSTEM_PROMPT = "You judge whether a passage contains the answer to a question. Reply with yes or no only."


def _first_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words}
    return sorted(ids)


class LLMJudge:
    """Pointwise relevance from a causal chat LM: P(yes) vs P(no) for the first answer token."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.yes_ids = _first_token_ids(tokenizer, ["yes", "Yes", " yes", " Yes"])
        self.no_ids = _first_token_ids(tokenizer, ["no", "No", " no", " No"])
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError("the tokenizer maps 'yes' and 'no' to a shared first token; cannot judge from logits")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device_map=None, dtype=None, **kwargs) -> LLMJudge:
        """Placed like every model of the project: a GPU in bf16 when there is one, else the CPU in fp32."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..assets import resolve_model
        from ..common.placement import load_placed

        folder = resolve_model(name_or_path)
        model = load_placed(AutoModelForCausalLM, folder, device_map=device_map, dtype=dtype)
        return cls(model, AutoTokenizer.from_pretrained(folder), **kwargs)

    def prompt(self, question: str, passage: str) -> str:
        messages = [
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"Question: {question}\nPassage: {passage}\nDoes the passage answer the question?",
            },
        ]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """log P(yes) - log P(no) per (question, passage); > 0 means relevant."""
        out = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        for start in range(0, len(pairs), self.batch_size):
            ids = [
                self.tokenizer(self.prompt(q, p), add_special_tokens=False)["input_ids"]
                for q, p in pairs[start : start + self.batch_size]
            ]
            width = max(len(x) for x in ids)
            device = self.model.device
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
            attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            logits = (
                self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits[:, -1].float()
            )
            logp = logits.log_softmax(-1)
            out += (logp[:, self.yes_ids].logsumexp(-1) - logp[:, self.no_ids].logsumexp(-1)).tolist()
        return out

    def labels(self, pairs: list[tuple[str, str]]) -> list[bool]:
        return [score > 0 for score in self.scores(pairs)]


class MonoT5Judge:
    """monoT5 (e.g. castorini/monot5-base-msmarco) as a binary classifier, as in the published pipeline."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.true_id = tokenizer("true", add_special_tokens=False)["input_ids"][0]
        self.false_id = tokenizer("false", add_special_tokens=False)["input_ids"][0]

    @classmethod
    def from_pretrained(
        cls, name: str = "castorini/monot5-base-msmarco", *, device_map=None, dtype=None, **kwargs
    ) -> MonoT5Judge:
        """Placed like every model of the project: a GPU in bf16 when there is one, else the CPU in fp32."""
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from ..common.placement import load_placed

        model = load_placed(AutoModelForSeq2SeqLM, name, device_map=device_map, dtype=dtype)
        return cls(model, AutoTokenizer.from_pretrained(name), **kwargs)

    @staticmethod
    def prompt(question: str, passage: str) -> str:
        return f"Query: {question} Document: {passage} Relevant:"

    @torch.no_grad()
    def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """logit("true") - logit("false") at the first decoding step; > 0 means relevant."""
        out = []
        start_id = self.model.config.decoder_start_token_id
        for start in range(0, len(pairs), self.batch_size):
            batch = self.tokenizer(
                [self.prompt(q, p) for q, p in pairs[start : start + self.batch_size]],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=512,
            ).to(self.model.device)
            decoder = torch.full((batch["input_ids"].shape[0], 1), start_id, dtype=torch.long, device=self.model.device)
            logits = self.model(**batch, decoder_input_ids=decoder).logits[:, 0].float()
            out += (logits[:, self.true_id] - logits[:, self.false_id]).tolist()
        return out

    def labels(self, pairs: list[tuple[str, str]]) -> list[bool]:
        return [score > 0 for score in self.scores(pairs)]
