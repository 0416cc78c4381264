"""GRACE settings, stored next to the backbone's own config.json as ``grace_config.json``.

Hub-facing: copied into model repos, so it imports only the standard library.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

GRACE_CONFIG_NAME = "grace_config.json"
# Llama 3.x chat templates print today's date into the system turn (``strftime_now``) unless ``date_string`` is
# given: pinned, a text's prompt, embedding and cached rationale do not change from day to day. The value is the one
# Llama's own template falls back to.
PINNED_DATE_STRING = "26 Jul 2024"
BACKENDS = ("hf", "vllm")
# Method spec §1: the same system prompt in training, in the reward and at evaluation.
GRACE_SYSTEM_PROMPT = (
    "Read and analyze the following text, then you need to provide your reasoning within <think></think> tags. "
    "Finally, generate a comprehensive understanding of this text."
)


@dataclass
class GraceConfig:
    """How a GRACE embedder turns a text into a vector.

    Decisions where the published code was inconsistent (method spec §8): the final EOS is pooled everywhere
    (``pool_eos``), embeddings are L2-normalised by default, over-long *user text* is truncated to
    ``max_text_tokens`` before templating (the template is never cut), and sampling is seeded (``seed``) so
    encodings are reproducible; ``temperature=0`` is greedy decoding. ``chat_template_kwargs`` pins the template's
    variables (Llama 3.x's ``date_string``), and ``backend`` says whether transformers or vLLM writes the rationales.
    """

    system_prompt: str = GRACE_SYSTEM_PROMPT
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0
    pool_eos: bool = True
    normalize: bool = True
    max_text_tokens: int = 1024
    pooling: str = "mean_without_system_prefix"
    # extra variables of the chat template, the same wherever a prompt is rendered (encode, GRPO, the reward)
    chat_template_kwargs: dict = field(default_factory=lambda: {"date_string": PINNED_DATE_STRING})
    backend: str = "hf"  # who writes the rationales: "hf" (transformers generate) or "vllm"; pooling is always HF
    format_version: int = 1

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be >= 1, got {self.max_text_tokens}")
        if not isinstance(self.chat_template_kwargs, dict):
            raise ValueError(f"chat_template_kwargs must be a dict, got {type(self.chat_template_kwargs).__name__}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; known: {list(BACKENDS)}")
        if self.pooling != "mean_without_system_prefix":
            raise ValueError(f"unknown pooling {self.pooling!r}: only 'mean_without_system_prefix' is defined")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GraceConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GRACE settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, folder: str | os.PathLike) -> None:
        with open(os.path.join(folder, GRACE_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> GraceConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
