"""Where the project's helper models run (the reward's judge and BERTScore encoder, the relevance labellers): the rule
of the Hub-facing models, whose code this re-exports: what was asked, else a CUDA GPU in bf16 when there is one, else
the CPU in fp32."""

from __future__ import annotations

from ..models.grace.modeling_grace import load_placed, placement

__all__ = ["load_placed", "placement"]
