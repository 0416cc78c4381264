"""DynamicRAG settings, stored next to the backbone's config.json as ``dynamicrag_config.json``.

Hub-facing: copied into model repos, so it imports only the standard library.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

DYNAMICRAG_CONFIG_NAME = "dynamicrag_config.json"


@dataclass
class DynamicRAGConfig:
    """Decoding defaults of the two calls (method spec §1.5, §1.9). ``max_passages`` is how many passages the reranker
    sees at once (40 for 8k-context models, 20 for 4k); larger pools are reranked in a tournament. ``prompt_profile``
    is ``"project"`` (this project's one format) or ``"published"`` (the released checkpoints' format, §6).
    ``constrained_decoding``: the reranker can only write a well-formed list of distinct ids (or None), so every
    output parses; off by default, and off for the published profile unless asked (the paper decodes freely).
    ``restate_query``: the reranker prompt repeats the query after the passages (a named prompt option, RankGPT-style;
    off, the paper's prompt, by default); a model trained with it must be run with it, so it is stored here."""

    max_passages: int = 20
    rerank_max_new_tokens: int = 100
    answer_max_new_tokens: int = 200
    temperature: float = 0.0  # reranker sampling at inference; 0 = greedy (sampling trajectories uses T = 0.4)
    task: str = "short"
    prompt_profile: str = "project"
    constrained_decoding: bool = False
    restate_query: bool = False
    format_version: int = 1

    def __post_init__(self):
        if self.prompt_profile not in ("project", "published"):
            raise ValueError(f"prompt_profile must be 'project' or 'published', got {self.prompt_profile!r}")
        if self.max_passages < 2:
            raise ValueError(f"max_passages must be >= 2, got {self.max_passages}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if min(self.rerank_max_new_tokens, self.answer_max_new_tokens) < 1:
            raise ValueError("max new tokens must be >= 1")

    @classmethod
    def published(cls, max_position_embeddings: int | None = None) -> DynamicRAGConfig:
        """The released checkpoints' inference settings (§6), for a checkpoint without ``dynamicrag_config.json``:
        the published prompts, reranker sampling at T = 0.4, and ctxs[:40] for an 8k context (ctxs[:20] below)."""
        long_context = max_position_embeddings is None or max_position_embeddings >= 8192
        return cls(
            max_passages=40 if long_context else 20,
            rerank_max_new_tokens=100,
            answer_max_new_tokens=200,
            temperature=0.4,
            prompt_profile="published",
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DynamicRAGConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown DynamicRAG settings {unknown}")
        return cls(**data)

    def save(self, folder: str | os.PathLike) -> None:
        with open(os.path.join(folder, DYNAMICRAG_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DynamicRAGConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
