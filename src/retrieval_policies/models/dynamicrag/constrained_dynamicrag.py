"""Constrained decoding of the reranker's id list: the model can only write ``None`` or ``[i], [j], ...`` with
distinct ids in 1..N, then end, so every output parses without repair.

Hub-facing: copied into model repos; imports only torch, transformers and the standard library. A character-level
automaton over the output format (``format_selection``: ids in brackets, separated by ``,`` or ``, ``) decides which
tokens may come next; only tokens made of the format's characters are ever candidates, so a step costs a few
hundred short string walks per row, not the vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from .prompts_dynamicrag import NONE_OUTPUT

_FORMAT_CHARS = re.compile(r"^[\[\]0-9, None]+$")


@dataclass(frozen=True)
class IdListState:
    """Where a partial output stands: ``mode`` is start, none (``text`` = the part of "None" written), open (after
    "["), digits (``text`` = the digits written), closed (after "]"), comma or space (between two items)."""

    mode: str = "start"
    text: str = ""
    used: frozenset = frozenset()

    @property
    def complete(self) -> bool:
        return self.mode == "closed" or (self.mode == "none" and self.text == NONE_OUTPUT)


def _id_prefix_ok(digits: str, n: int, used: frozenset) -> bool:
    """Whether ``digits`` can still become an unused id in 1..n (no leading zero)."""
    if not digits or digits[0] == "0":
        return False
    return any(str(i).startswith(digits) for i in range(1, n + 1) if i not in used)


def advance(state: IdListState | None, text: str, n: int) -> IdListState | None:
    """The state after writing ``text``, or None when that leaves the format (ids in 1..n, each at most once)."""
    for ch in text:
        if state is None:
            return None
        mode = state.mode
        if mode == "start":
            if ch == "[" and n >= 1:
                state = IdListState("open", "", state.used)
            elif ch == NONE_OUTPUT[0]:
                state = IdListState("none", ch)
            else:
                return None
        elif mode == "none":
            written = state.text + ch
            state = IdListState("none", written) if NONE_OUTPUT.startswith(written) else None
        elif mode in ("open", "digits"):
            digits = state.text
            if ch in "0123456789":
                state = (
                    IdListState("digits", digits + ch, state.used)
                    if _id_prefix_ok(digits + ch, n, state.used)
                    else None
                )
            elif ch == "]" and mode == "digits" and int(digits) <= n and int(digits) not in state.used:
                state = IdListState("closed", "", state.used | {int(digits)})
            else:
                return None
        elif mode == "closed":
            state = IdListState("comma", "", state.used) if ch == "," and len(state.used) < n else None
        elif mode in ("comma", "space"):
            if ch == " " and mode == "comma":
                state = IdListState("space", "", state.used)
            elif ch == "[":
                state = IdListState("open", "", state.used)
            else:
                return None
    return state


class IdListLogitsProcessor(LogitsProcessor):
    """Masks every token that would take a row's output out of the id-list format (see :func:`advance`), and every
    end token before the output is complete; near ``max_new_tokens`` it closes the list instead of starting a new
    item. ``num_passages``: N per row of the batch; ``prompt_length``: where the generated tokens start."""

    def __init__(self, tokenizer, num_passages: list[int], prompt_length: int, eos_ids: list[int], max_new_tokens: int):
        self.num_passages, self.prompt_length, self.max_new_tokens = list(num_passages), prompt_length, max_new_tokens
        self.eos_ids = sorted(set(eos_ids))
        self.token_texts = format_token_texts(tokenizer)
        self._states: list[IdListState | None] = [IdListState()] * len(self.num_passages)
        self._seen = 0  # generated tokens already folded into _states

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.num_passages):
            raise ValueError(f"{input_ids.shape[0]} rows but {len(self.num_passages)} passage counts")
        generated = input_ids.shape[1] - self.prompt_length
        for step in range(self._seen, generated):  # fold in the token each row took at the last step
            for row, token in enumerate(input_ids[:, self.prompt_length + step].tolist()):
                state = self._states[row]
                if state is not None:
                    text = self.token_texts.get(token)
                    self._states[row] = None if text is None else advance(state, text, self.num_passages[row])
        self._seen = generated
        remaining = self.max_new_tokens - generated  # tokens left, this one included
        mask = torch.full_like(scores, float("-inf"))
        for row, state in enumerate(self._states):
            allowed = self._allowed(state, self.num_passages[row], remaining)
            mask[row, allowed] = 0.0
        return scores + mask

    def _allowed(self, state: IdListState | None, n: int, remaining: int) -> list[int]:
        if state is None:  # ended (an end token was taken): only end tokens, as padding
            return self.eos_ids
        # a new item is started only while the tokens left can finish it: separator, "[", the digits, "]", the end
        room = remaining > 3 + len(str(n))
        if state.complete and (state.mode == "none" or len(state.used) >= n or not room):
            return self.eos_ids
        allowed = [
            token
            for token, text in self.token_texts.items()
            if (room or "," not in text) and advance(state, text, n) is not None
        ]
        if state.complete:
            allowed += self.eos_ids
        return allowed or self.eos_ids


_TOKEN_TEXTS: dict[tuple[str, int], dict[int, str]] = {}


def format_token_texts(tokenizer) -> dict[int, str]:
    """token id -> its text, for the tokens made only of the format's characters (cached per tokenizer)."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _TOKEN_TEXTS:
        special = set(tokenizer.all_special_ids)
        texts = {}
        for token in range(len(tokenizer)):
            if token in special:
                continue
            text = tokenizer.decode([token], clean_up_tokenization_spaces=False)
            if text and _FORMAT_CHARS.match(text):
                texts[token] = text
        _TOKEN_TEXTS[key] = texts
    return _TOKEN_TEXTS[key]


def id_list_regex(n: int) -> str:
    """The format as a regular expression, for engines with regex-structured outputs (vLLM): ``None`` or a list of
    ids in 1..n. A regular expression cannot say "each id once"; the parser drops a repeat (and counts it)."""
    ids = "|".join(str(i) for i in range(n, 0, -1))
    item = rf"\[({ids})\]"
    return rf"(None|{item}(, ?{item}){{0,{max(n - 1, 0)}}})"
