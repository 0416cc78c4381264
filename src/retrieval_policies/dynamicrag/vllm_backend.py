"""DynamicRAG with vLLM doing the generation (GPU users): the same prompts, parser, tournament and sampling code as
``DynamicRAGModel``, only ``generate_texts`` is replaced. Needs ``pip install -e ".[vllm]"``."""

from __future__ import annotations

from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.modeling_dynamicrag import DynamicRAGModel


class VLLMDynamicRAG(DynamicRAGModel):
    def __init__(self, path: str, config: DynamicRAGConfig | None = None, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError('vLLM generation needs vllm: pip install -e ".[vllm]" (GPU only)') from err
        from pathlib import Path

        from transformers import AutoTokenizer

        settings = Path(path) / DYNAMICRAG_CONFIG_NAME
        super().__init__(None, AutoTokenizer.from_pretrained(path),
                         config or (DynamicRAGConfig.load(settings) if settings.is_file() else DynamicRAGConfig()))
        self.llm = LLM(model=str(path), **llm_kwargs)

    def generate_texts(self, conversations, *, max_new_tokens: int, temperature: float = 0.0, seed: int | None = None,
                       num_samples: int = 1) -> list[str]:
        """The replies, ``num_samples`` per conversation (consecutive), like ``DynamicRAGModel.generate_texts``."""
        if not conversations:
            return []
        from vllm import SamplingParams

        params = SamplingParams(n=num_samples, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, seed=seed)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [completion.text for output in outputs for completion in output.outputs]

    def __repr__(self) -> str:
        return f"VLLMDynamicRAG(max_passages={self.dynamicrag_config.max_passages})"
