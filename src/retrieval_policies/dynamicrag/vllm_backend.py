"""DynamicRAG with vLLM doing the generation (GPU users): the same prompts, parser, tournament and sampling code as
``DynamicRAGModel``, only ``generate_texts`` is replaced. Needs ``pip install -e ".[vllm]"``.

vLLM calls used (and faked in the tests, ``tests/fakes/vllm``): ``vllm.LLM(model=, generation_config="vllm", ...)``,
``vllm.SamplingParams(n, temperature, top_p, max_tokens, seed, stop_token_ids)``, ``LLM.chat(conversations, params,
use_tqdm=False)`` and each result's ``.outputs[k].text``."""

from __future__ import annotations

from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel, eos_token_ids


class VLLMDynamicRAG(DynamicRAGModel):
    def __init__(self, path: str, config: DynamicRAGConfig | None = None, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError('vLLM generation needs vllm: pip install -e ".[vllm]" (GPU only)') from err
        from pathlib import Path

        from transformers import AutoTokenizer, GenerationConfig

        settings = Path(path) / DYNAMICRAG_CONFIG_NAME
        super().__init__(None, AutoTokenizer.from_pretrained(path),
                         config or (DynamicRAGConfig.load(settings) if settings.is_file() else DynamicRAGConfig()))
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json
            generation_config = None
        self.stop_token_ids = eos_token_ids(generation_config, self.tokenizer)  # the same union as DynamicRAGModel
        # vLLM's own defaults, not the checkpoint's generation_config.json (as the HF path sets it aside)
        self.llm = LLM(model=str(path), **{"generation_config": "vllm", **llm_kwargs})

    def eos_ids(self) -> list[int]:
        return list(self.stop_token_ids)

    def generate_texts(self, conversations, *, max_new_tokens: int, temperature: float = 0.0, seed: int | None = None,
                       num_samples: int = 1) -> list[str]:
        """The replies, ``num_samples`` per conversation (consecutive), like ``DynamicRAGModel.generate_texts``."""
        if not conversations:
            return []
        from vllm import SamplingParams

        params = SamplingParams(n=num_samples, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, seed=seed,
                                stop_token_ids=self.stop_token_ids)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [completion.text for output in outputs for completion in output.outputs]

    def __repr__(self) -> str:
        return f"VLLMDynamicRAG(max_passages={self.dynamicrag_config.max_passages})"
