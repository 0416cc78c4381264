"""DynamicRAG reranker + generator: one chat LM that selects an ordered, variable-length list of passages for a query,
then answers from them (arXiv 2505.07233; method spec §1.9, §2, §5).

Hub-facing: copied into model repos next to ``configuration_dynamicrag.py`` and ``prompts_dynamicrag.py``; imports
only torch, transformers and the standard library. The weights stay a plain causal LM.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessorList
from transformers.utils import cached_file

from .configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME, DynamicRAGConfig
from .constrained_dynamicrag import IdListLogitsProcessor
from .prompts_dynamicrag import format_passages, generator_messages, parse_selection, reranker_messages

CODE_FILES = (
    "modeling_dynamicrag.py",
    "configuration_dynamicrag.py",
    "prompts_dynamicrag.py",
    "pipeline_dynamicrag.py",
    "constrained_dynamicrag.py",
)
PIPELINE_TASK = "dynamicrag-rerank-answer"
PIPELINE_ENTRY = {"impl": "pipeline_dynamicrag.DynamicRAGPipeline", "pt": ["AutoModelForCausalLM"], "type": "text"}


# ---------------------------------------------------------------------------------------------------- placement
# Copied from retrieval_policies.models.grace.modeling_grace (each Hub repo carries its own code; a test keeps the
# copies identical): _torch_dtype, _places_on_cpu, placement, load_placed, eos_token_ids, neutral_generation_config.
def _torch_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}: use e.g. 'bfloat16', 'float16', 'float32' or 'auto'")
    return value


def _places_on_cpu(device_map) -> bool:
    if isinstance(device_map, dict):
        return all(str(v) in ("cpu", "disk") for v in device_map.values())
    return str(device_map) == "cpu" or str(device_map).startswith("cpu:")


def placement(device_map=None, dtype=None) -> tuple:
    """(device_map, dtype) to load with: what was asked, else CUDA in bf16 when a GPU is there, else the CPU in fp32
    (bf16 matmuls are far slower than fp32 on most CPUs). ``device_map`` is transformers' (``"cuda"``, ``"cuda:1"``,
    ``"auto"``, ``"cpu"``, a dict); ``dtype`` a torch dtype, its name or ``"auto"`` (the checkpoint's own)."""
    dtype = _torch_dtype(dtype)
    cuda = torch.cuda.is_available()
    if device_map is None and cuda:
        device_map = "cuda"
    on_cpu = device_map is None or _places_on_cpu(device_map) or (device_map == "auto" and not cuda)
    if dtype is None:
        if on_cpu:  # fp32 even where bf16 is fast: the same command gives the same vectors on every CPU
            dtype = torch.float32  # (benchmarks/cpu_bf16.py measures what bf16 would give and change)
        else:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif on_cpu and dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        import warnings

        warnings.warn(
            "bfloat16 on a CPU without AVX512-BF16 or AMX runs its matmuls ~50x slower than float32: use float32 here",
            stacklevel=3,
        )
    return device_map, dtype


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo; else False)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_placed(auto_class, path, *, device_map=None, dtype=None, attn_implementation=None, **kwargs):
    """``auto_class.from_pretrained(path, **kwargs)`` (AutoModelForCausalLM, AutoModel, ...) placed by
    :func:`placement` (no silent CPU fp32 on a GPU machine), in eval mode."""
    device_map, dtype = placement(device_map, dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return auto_class.from_pretrained(str(path), dtype=dtype, **kwargs).eval()


def eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Where generation stops: the generation config's EOS ids and the tokenizer's together (a Llama-3 checkpoint
    whose generation config lists only ``<|end_of_text|>`` still stops at the chat turn's ``<|eot_id|>``)."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class neutral_generation_config:  # a context manager: the Hub copy imports only torch and transformers
    """Generate with the method's own settings only. transformers fills every field a ``GenerationConfig`` leaves
    unset from ``model.generation_config``, so a backbone's own ``repetition_penalty``, ``top_k``, ``num_beams``...
    would apply to every output (a Qwen2.5-Instruct checkpoint sets repetition_penalty 1.05-1.1); TRL's rollouts
    use none."""

    def __init__(self, model):
        self.model, self.saved = model, None

    def __enter__(self) -> None:
        self.saved = self.model.generation_config
        self.model.generation_config = GenerationConfig()

    def __exit__(self, *exc) -> bool:
        self.model.generation_config = self.saved
        return False  # an exception inside the block propagates


TURN_END_TOKENS = ("<|eot_id|>", "<|eom_id|>")  # Llama-3's turn ends: the released inference stopped at both (§6)


def stop_token_ids(generation_config, tokenizer) -> list[int]:
    """The EOS union of :func:`eos_token_ids` and the chat turn-end tokens the tokenizer has."""
    vocab = tokenizer.get_vocab()
    return sorted(set(eos_token_ids(generation_config, tokenizer)) | {vocab[t] for t in TURN_END_TOKENS if t in vocab})


def checkpoint_settings(settings_file, max_position_embeddings: int | None = None) -> DynamicRAGConfig:
    """A repo's ``dynamicrag_config.json``; without one (an authors' released checkpoint, a plain chat LLM) the
    released checkpoints' inference settings (§6), sized to the backbone's context."""
    if settings_file:
        return DynamicRAGConfig.load(settings_file)
    return DynamicRAGConfig.published(max_position_embeddings)


def add_auto_map(model_config) -> None:
    """Point ``AutoModel`` and ``pipeline()`` at this code in a causal LM's config (its own auto_map entries are kept)."""
    auto_map = dict(getattr(model_config, "auto_map", None) or {})
    auto_map["AutoModel"] = "modeling_dynamicrag.DynamicRAGModel"
    model_config.auto_map = auto_map
    # pipeline(model=repo, trust_remote_code=True): the entry transformers' Pipeline.save_pretrained writes for
    # PIPELINE_REGISTRY's registration in pipeline_dynamicrag.py (a test keeps the two the same)
    model_config.custom_pipelines = {PIPELINE_TASK: PIPELINE_ENTRY}


def write_repo_files(folder, config: DynamicRAGConfig) -> None:
    """The settings and the code next to a saved causal LM (its config.json must carry ``add_auto_map``)."""
    config.save(folder)
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:
        (Path(folder) / name).write_text((here / name).read_text(encoding="utf-8"), encoding="utf-8")


@dataclass
class RerankResult:
    passages: list  # the selected passages, in the model's order, as given
    indices: list[int]  # their 0-based positions in the input list
    raw: list[str] = field(default_factory=list)  # every raw reranker output (one per window and round)
    malformed: int = 0  # how many of those needed repair
    out_of_range: int = 0  # how many held an id above the passages shown (the published evaluation dropped those)
    context_tokens: int | None = None  # the selected passages' tokens as the generator reads them (with a budget)
    cut: int = 0  # selected passages left out to keep within the budget


def passage_tokens(tokenizer, passages: list) -> list[int]:
    """Tokens each passage takes in the generator's prompt (``{i}. Topic: {title}`` + ``Content: {text}`` and the
    newline that joins it to the next), counted with ``tokenizer``."""
    return [len(tokenizer(format_passages([p]) + "\n", add_special_tokens=False)["input_ids"]) for p in passages]


def cut_to_budget(tokens: list[int], *, max_k: int | None = None, max_context_tokens: int | None = None) -> int:
    """How many of a selection's passages (their ``tokens``, in the reranker's order) fit the budget: at most
    ``max_k`` passages and ``max_context_tokens`` tokens, whole passages, stopping at the first that does not fit."""
    if (max_k is not None and max_k < 0) or (max_context_tokens is not None and max_context_tokens < 0):
        raise ValueError(f"budgets must be >= 0, got max_k={max_k}, max_context_tokens={max_context_tokens}")
    kept, used = 0, 0
    for count in tokens[: len(tokens) if max_k is None else max_k]:
        if max_context_tokens is not None and used + count > max_context_tokens:
            break
        kept, used = kept + 1, used + count
    return kept


def fit_to_budget(tokenizer, passages: list, *, max_k=None, max_context_tokens=None) -> tuple[int, int]:
    """(how many of ``passages`` fit the budget, their tokens), counted with ``tokenizer`` (see :func:`cut_to_budget`)."""
    tokens = passage_tokens(tokenizer, passages)
    kept = cut_to_budget(tokens, max_k=max_k, max_context_tokens=max_context_tokens)
    return kept, sum(tokens[:kept])


class DynamicRAGModel(torch.nn.Module):
    def __init__(self, model, tokenizer, config: DynamicRAGConfig | None = None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.dynamicrag_config = config or DynamicRAGConfig()
        self.malformed_outputs = 0
        self.reranker_outputs = 0
        if tokenizer.chat_template is None:
            raise ValueError("DynamicRAG needs a chat model: the tokenizer has no chat template")

    # ------------------------------------------------------------------ construction and persistence
    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        """Called by AutoModel on remote-code classes; the repo's config.json already carries the auto_map."""

    HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *model_args,
        config=None,
        device_map=None,
        dtype=None,
        attn_implementation=None,
        torch_dtype=None,
        **kwargs,
    ):
        """Load a DynamicRAG repo or folder. ``device_map``, ``dtype`` (a dtype, its name or ``"auto"``) and
        ``attn_implementation`` are transformers'; with no placement given, a CUDA GPU in bf16 when there is one,
        else the CPU in fp32."""
        unknown = sorted(set(kwargs) - set(cls.HUB_KWARGS) - {"trust_remote_code", "_from_auto", "adapter_kwargs"})
        if unknown:
            raise TypeError(f"DynamicRAGModel.from_pretrained got unexpected arguments {unknown}")
        hub = {k: kwargs[k] for k in cls.HUB_KWARGS if kwargs.get(k) is not None}
        path = str(pretrained_model_name_or_path)
        model = load_placed(
            AutoModelForCausalLM,
            path,
            config=config,
            device_map=device_map,
            dtype=dtype if dtype is not None else torch_dtype,
            attn_implementation=attn_implementation,
            **hub,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
        settings = cached_file(path, DYNAMICRAG_CONFIG_NAME, _raise_exceptions_for_missing_entries=False, **hub)
        return cls(
            model.eval(),
            tokenizer,
            checkpoint_settings(settings, getattr(model.config, "max_position_embeddings", None)),
        )

    @classmethod
    def from_base(
        cls, name_or_path, *, resolver=None, device_map=None, dtype=None, attn_implementation=None, **settings
    ):
        """An untrained reranker from any chat LLM (resolved with retrieval_policies' model resolution when installed);
        placement as in ``from_pretrained``."""
        if resolver is None:
            try:
                resolver = importlib.import_module("retrieval_policies.assets").resolve_model
            except ImportError:
                resolver = str
        folder = str(resolver(name_or_path))
        model = load_placed(
            AutoModelForCausalLM, folder, device_map=device_map, dtype=dtype, attn_implementation=attn_implementation
        )
        # settings: DynamicRAGConfig's fields, e.g. prompt_profile="published" to run an authors' checkpoint untouched
        return cls(model.eval(), AutoTokenizer.from_pretrained(folder), DynamicRAGConfig(**settings))

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """A repo that loads as AutoModel (remote code) and as a plain AutoModelForCausalLM."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        add_auto_map(self.model.config)
        self.model.save_pretrained(folder, **kwargs)
        self.tokenizer.save_pretrained(folder)
        write_repo_files(folder, self.dynamicrag_config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        c = self.dynamicrag_config
        return (
            f"DynamicRAGModel(backbone={type(self.model).__name__}, name={self.model.config.name_or_path!r}, "
            f"max_passages={c.max_passages}, temperature={c.temperature}, task={c.task!r}, "
            f"prompt_profile={c.prompt_profile!r}, "
            + ("restate_query=True, " if c.restate_query else "")
            + f"malformed={self.malformed_outputs}/{self.reranker_outputs})"
        )

    def eos_ids(self) -> list[int]:
        return stop_token_ids(self.model.generation_config, self.tokenizer)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_texts(
        self,
        conversations: list[list[dict]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        num_samples: int = 1,
        id_lists: list[int] | None = None,
    ) -> list[str]:
        """One batched generation (left padding, KV cache) over chat conversations; returns the decoded replies,
        ``num_samples`` per conversation (consecutive). The samples of a conversation share one prefill of its
        prompt: the prompt's KV cache is computed once and repeated for each sample. ``id_lists``: N per
        conversation, to constrain each reply to an id list over 1..N (constrained_dynamicrag.py)."""
        if not conversations:
            return []
        prompts = [
            self.tokenizer(
                self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                add_special_tokens=False,
            )["input_ids"]
            for c in conversations
        ]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            pad_token_id=pad,
            eos_token_id=self.eos_ids(),
            **({"temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 else {}),
        )
        extra = {}
        if num_samples > 1:
            # Prefill all but the last prompt token once, then fan the cache out to the samples.
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            prefill = self.model(
                input_ids=input_ids[:, :-1],
                attention_mask=attention[:, :-1],
                position_ids=positions[:, :-1],
                use_cache=True,
            )
            cache = prefill.cache
            cache.batch_repeat_interleave(num_samples)
            input_ids = input_ids.repeat_interleave(num_samples, dim=0)
            attention = attention.repeat_interleave(num_samples, dim=0)
            extra["cache"] = cache
        if id_lists is not None:
            if len(id_lists) != len(conversations):
                raise ValueError(f"{len(conversations)} conversations but {len(id_lists)} passage counts")
            rows = [n for n in id_lists for _ in range(num_samples)]
            processor = IdListLogitsProcessor(self.tokenizer, rows, width, self.eos_ids(), max_new_tokens)
            extra["logits_processor"] = LogitsProcessorList([processor])
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            if seed is not None:
                torch.manual_seed(seed)
            with neutral_generation_config(self.model):
                output = self.model.generate(
                    input_ids=input_ids, attention_mask=attention, generation_config=config, **extra
                )
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in output[:, width:]]

    # ------------------------------------------------------------------ reranking
    def rerank_batch(
        self,
        queries: list[str],
        pools: list[list],
        *,
        max_passages: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        constrained: bool | None = None,
        max_k: int | None = None,
        max_context_tokens: int | None = None,
    ) -> list[RerankResult]:
        """Rerank many queries together. ``constrained`` (default: the config's ``constrained_decoding``): decode
        only well-formed lists of distinct ids within the window, so no output needs repair. ``max_k`` /
        ``max_context_tokens``: a budget at inference; the selection, in the reranker's order, is cut to at most
        that many passages / tokens of context (whole passages, counted with this model's tokenizer, which is the
        generator's when the model answers too). A pool larger than ``max_passages`` goes through a tournament: it is cut into
        windows of ``max_passages``, each window's selection is mapped back through that window's offset, the
        selections are united in order without duplicates, and this repeats until the survivors fit in one window,
        which is then reranked for the final order. Each round is one batched generation over all windows of all
        queries."""
        if len(queries) != len(pools):
            raise ValueError(f"{len(queries)} queries but {len(pools)} passage lists")
        n = max_passages or self.dynamicrag_config.max_passages
        temperature = self.dynamicrag_config.temperature if temperature is None else temperature
        constrained = self.dynamicrag_config.constrained_decoding if constrained is None else constrained
        results = [RerankResult([], []) for _ in queries]
        candidates = [list(range(len(pool))) for pool in pools]
        final = [False] * len(queries)
        round_number = 0
        while not all(final):
            jobs = []  # (query index, window of input indices)
            for q, cands in enumerate(candidates):
                if final[q]:
                    continue
                if not cands:
                    final[q] = True
                    continue
                windows = [cands[i : i + n] for i in range(0, len(cands), n)]
                jobs += [(q, window) for window in windows]
            if not jobs:
                break
            profile, restate = self.dynamicrag_config.prompt_profile, self.dynamicrag_config.restate_query
            outputs = self.generate_texts(
                [reranker_messages(queries[q], [pools[q][i] for i in window], profile, restate) for q, window in jobs],
                max_new_tokens=self.dynamicrag_config.rerank_max_new_tokens,
                temperature=temperature,
                seed=None if seed is None else seed + round_number,
                **({"id_lists": [len(window) for _, window in jobs]} if constrained else {}),
            )
            round_number += 1
            selected: dict[int, list[int]] = {}
            for (q, window), output in zip(jobs, outputs):
                parsed = parse_selection(output, len(window))
                results[q].raw.append(output)
                results[q].malformed += parsed.malformed
                results[q].out_of_range += any(v > len(window) for v in parsed.out_of_range)
                self.reranker_outputs += 1
                self.malformed_outputs += parsed.malformed
                chosen = selected.setdefault(q, [])
                chosen += [window[i - 1] for i in parsed.ids if window[i - 1] not in chosen]
            for q, chosen in selected.items():
                if len(candidates[q]) <= n:  # that was the final window: its order is the answer
                    results[q].indices = chosen
                    final[q] = True
                elif len(chosen) >= len(candidates[q]):  # no window dropped anything: keep the first n and finish
                    candidates[q] = chosen[:n]
                else:
                    candidates[q] = chosen
        for result, pool in zip(results, pools):
            result.passages = [pool[i] for i in result.indices]
            if max_k is not None or max_context_tokens is not None:
                kept, result.context_tokens = fit_to_budget(
                    self.tokenizer, result.passages, max_k=max_k, max_context_tokens=max_context_tokens
                )
                result.cut = len(result.indices) - kept
                result.indices, result.passages = result.indices[:kept], result.passages[:kept]
        return results

    def rerank(self, query: str, passages: list, **kwargs) -> RerankResult:
        return self.rerank_batch([query], [passages], **kwargs)[0]

    # ------------------------------------------------------------------ answering
    def answer_batch(self, queries: list[str], passage_lists: list[list], *, task=None, ids=None) -> list[str]:
        """Greedy answers from the given passages. ``task``: one instruction (short / fever / long / arc) or one per
        query (default from the config); ``ids``: per query, the passages' 1-based positions in the reranked pool
        (shown by the published profile)."""
        tasks = task if isinstance(task, (list, tuple)) else [task] * len(queries)
        if len(tasks) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(tasks)} tasks")
        ids = [None] * len(queries) if ids is None else ids
        profile = self.dynamicrag_config.prompt_profile
        conversations = [
            generator_messages(q, p, task=t or self.dynamicrag_config.task, profile=profile, ids=i)
            for q, p, t, i in zip(queries, passage_lists, tasks, ids)
        ]
        return self.generate_texts(conversations, max_new_tokens=self.dynamicrag_config.answer_max_new_tokens)

    def answer(self, query: str, passages: list, *, task: str | None = None) -> str:
        return self.answer_batch([query], [passages], task=task)[0]

    def call_batch(self, queries: list[str], pools: list[list], *, task=None, **kwargs) -> list[dict]:
        """Rerank, then answer from the selected passages: the two LLM calls of DynamicRAG inference. ``task`` is the
        generator's instruction (short / fever / long / arc, or one per query; default from the config)."""
        reranked = self.rerank_batch(queries, pools, **kwargs)
        answers = self.answer_batch(
            queries, [r.passages for r in reranked], task=task, ids=[[i + 1 for i in r.indices] for r in reranked]
        )
        return [
            {
                "selected": r.passages,
                "indices": r.indices,
                "answer": a,
                "raw": r.raw,
                "malformed": r.malformed,
                "out_of_range": r.out_of_range,
                "context_tokens": r.context_tokens,
            }
            for r, a in zip(reranked, answers)
        ]

    def __call__(self, query: str, passages: list, **kwargs) -> dict:
        return self.call_batch([query], [passages], **kwargs)[0]
