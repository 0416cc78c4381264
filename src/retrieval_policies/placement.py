"""Where the project's helper models run (the reward's judge and BERTScore encoder, the relevance labellers): the rule
of the Hub-facing models (``models.grace.modeling_grace.placement``): what was asked, else a CUDA GPU in bf16 when
there is one, else the CPU in fp32."""

from __future__ import annotations

from .models.grace.modeling_grace import placement

__all__ = ["load_placed", "placement"]


def load_placed(auto_class, name_or_path, *, device_map=None, dtype=None, attn_implementation=None, **kwargs):
    """``auto_class.from_pretrained`` (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM...) placed by
    :func:`placement`, in eval mode."""
    device_map, dtype = placement(device_map, dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return auto_class.from_pretrained(str(name_or_path), dtype=dtype, **kwargs).eval()
