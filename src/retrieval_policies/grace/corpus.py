"""``retrieval-policies grace encode``: a corpus of any size embedded once, as Parquet shards plus a manifest.

The corpus is streamed (``datasets`` streaming: never all in memory) and cut into shards of ``shard_size`` rows in
stream order; shard k is encoded by process ``k % num_processes`` (``accelerate launch`` / ``torchrun`` give each
process its slice), written to a temporary file and renamed, so a shard file that exists is complete. A rerun with
the same settings skips every finished shard (an interruption loses at most the shards in progress); other settings
are refused rather than mixed into one output. At the end each process writes its part of the manifest and process 0
merges them into ``manifest.json`` (model, revision, settings, shards, counts). ``retrieval.encoded.load_encoded``
and ``retrieval.DenseRetriever.from_encoded`` read the folder back, ``retrieval.encoded.faiss_index`` indexes it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..retrieval.encoded import FORMAT, MANIFEST

logger = logging.getLogger(__name__)

SETTINGS = "encode_settings.json"


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that decides the vectors: a rerun must match it to reuse finished shards."""

    model: str
    revision: str | None
    data: str
    config: str | None
    split: str
    column: str
    id_column: str | None
    shard_size: int
    rationale: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    system_prompt: str
    chat_template_kwargs: dict
    max_text_tokens: int
    pool_eos: bool
    normalize: bool
    dtype: str
    backend: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_data(
    data, *, config: str | None = None, split: str = "train", column: str = "text", id_column: str | None = "id"
) -> None:
    """Fail before a model loads: the data is there and its first row has the columns asked for."""
    for _ in stream_texts(data, config=config, split=split, column=column, id_column=id_column):
        return
    raise ValueError(f"{data} ({config or 'default'}/{split}) has no rows: nothing to encode")


def stream_texts(
    data: str, *, config: str | None = None, split: str = "train", column: str = "text", id_column: str | None = "id"
) -> Iterator[tuple[str, str]]:
    """(id, text) pairs of a dataset folder, a Parquet/JSONL file or a Hub dataset id, streamed, or of records in
    memory (any passage form: strings, dicts, the corpus readers' records). Without an ``id_column`` (or when the
    rows have none) the id is the row number."""
    from datasets import load_dataset

    if not isinstance(data, (str, os.PathLike)):
        from ..common.passages import iter_passage_texts

        yield from iter_passage_texts(data)
        return

    from ..common.dataset_io import data_file_builder

    path, builder = Path(data), data_file_builder(data)
    if path.is_file() and path.stat().st_size == 0:  # datasets' readers end an empty file in StopIteration
        return
    if path.is_file():
        suffix = path.suffix.lower()
        if builder is None:
            raise ValueError(f"{data}: unknown file type {suffix!r}; expected .parquet, .jsonl, .json or .csv")
        stream = load_dataset(builder, data_files=str(path), split="train", streaming=True)
    else:
        stream = load_dataset(str(data), config, split=split, streaming=True)
    for row_number, row in enumerate(stream):
        if column not in row:
            raise ValueError(f"{data}: row {row_number} has no column {column!r}; columns: {sorted(row)}")
        text = row[column]
        if not isinstance(text, str):
            raise ValueError(f"{data}: row {row_number}, column {column!r} is {type(text).__name__}, not a string")
        if id_column and id_column in row:
            yield str(row[id_column]), text
        elif id_column and id_column != "id":
            raise ValueError(f"{data}: row {row_number} has no id column {id_column!r}; columns: {sorted(row)}")
        else:
            yield str(row_number), text


# benchmarks/grace_encode.py on 2 cores (SmolLM2, fp32): 44.6 / 57.1 / 62.4 generated tokens/s at batch 8 / 32 / 64;
# 32 takes most of the gain at half the padding waste of 64
CPU_BATCH_SIZE = 32


def pick_batch_size(embedder, *, rationale: bool = True, memory_share: float = 0.5, most: int = 512) -> int:
    """The batch ``grace encode`` uses when none is given: on the CPU a fixed size, on a GPU as many texts as the KV
    cache of full-length sequences (system prefix + ``max_text_tokens`` + ``max_new_tokens``) fits in
    ``memory_share`` of the free memory, rounded down to a power of two (at least 8, at most ``most``)."""
    import torch

    device = embedder.device
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    c, text = embedder.grace_config, embedder.model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width = embedder.system_prefix_length + c.max_text_tokens + (c.max_new_tokens if rationale else 0)
    per_text = 2 * text.num_hidden_layers * heads * head_dim * embedder.model.dtype.itemsize * width
    per_text += 4 * text.hidden_size * embedder.model.dtype.itemsize * width  # the pooling pass's activations
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * memory_share // per_text)
    size = 8
    while size * 2 <= min(fits, most):
        size *= 2
    return size


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def local_device(device: str | None) -> str | None:
    """The device of this process: under a multi-process launch on GPUs each process takes its own
    (``cuda`` -> ``cuda:<LOCAL_RANK>``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and (device in (None, "cuda", "auto")) and _cuda():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def process_slice() -> tuple[int, int, callable]:
    """(process index, number of processes, barrier) under ``accelerate launch`` or ``torchrun``; (0, 1, no-op) alone.
    On CPUs accelerate reports one process even when torchrun started several, so the launcher's environment decides."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, lambda: None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if _cuda() else "gloo")
    return dist.get_rank(), dist.get_world_size(), dist.barrier


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_settings(folder: Path, settings: EncodeSettings, process_index: int, barrier) -> None:
    """Refuse an output encoded with other settings. Every process reads what is there before process 0 writes, so all
    of them refuse alike (none is left waiting at a barrier)."""
    path = folder / SETTINGS
    existing = json.loads(path.read_text()) if path.is_file() else None
    barrier()
    if existing is not None:
        changed = sorted(k for k, v in settings.to_dict().items() if existing.get(k) != v)
        if changed:
            raise ValueError(
                f"{folder} holds shards encoded with other settings ({', '.join(changed)} differ): "
                "use another --output or delete it"
            )
        return
    if process_index == 0:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
    barrier()
    if process_index != 0 and json.loads(path.read_text()) != settings.to_dict():
        raise ValueError(f"{folder}: process {process_index} was started with other settings than process 0")


def _write_shard(
    path: Path, ids: list[str], texts: list[str], vectors: np.ndarray, rationales: list[str | None]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.astype(np.float32).ravel(), pa.float32()), dim
            ),
            "rationale": pa.array(rationales, pa.string()),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def encode_corpus(
    embedder,
    data,
    output: str | os.PathLike,
    *,
    model_name: str,
    config: str | None = None,
    split: str = "train",
    column: str = "text",
    id_column: str | None = "id",
    batch_size: int | None = None,
    shard_size: int = 10_000,
    backend: str | None = None,
    rationale: bool = True,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed=None,
    show_progress_bar: bool = True,
    slice_=None,
) -> dict | None:
    """Embed every text of ``data`` (a dataset as ``stream_texts`` reads it, or passage records in memory) into
    ``output`` (see the module docstring); returns the merged manifest on process 0 (None on the others)."""
    from tqdm.auto import tqdm

    label = str(data)
    if not isinstance(data, (str, os.PathLike)):  # records in memory: named by their content, so a rerun resumes
        from ..common.passages import as_passages
        from ..retrieval import corpus_fingerprint

        data = as_passages(data)
        label = f"in-memory corpus {corpus_fingerprint(data)} ({len(data)} passages)"

    if batch_size is None:
        batch_size = pick_batch_size(embedder, rationale=rationale)
        logger.info("batch size %d (pick_batch_size on %s)", batch_size, embedder.device)
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    c = embedder.grace_config
    seed = c.seed if seed is None else seed
    settings = EncodeSettings(
        model=model_name,
        revision=embedder.revision,
        data=label,
        config=config,
        split=split,
        column=column,
        id_column=id_column,
        shard_size=shard_size,
        rationale=rationale,
        max_new_tokens=c.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=c.temperature if temperature is None else temperature,
        top_p=c.top_p if top_p is None else top_p,
        seed=seed,
        system_prompt=c.system_prompt,
        chat_template_kwargs=c.chat_template_kwargs,
        max_text_tokens=c.max_text_tokens,
        pool_eos=c.pool_eos,
        normalize=c.normalize,
        dtype=str(embedder.model.dtype).removeprefix("torch."),
        backend=backend or c.backend,
    )
    if rationale and settings.temperature > 0 and settings.seed is None:
        raise ValueError("grace encode writes reproducible shards: give a --seed or --temperature 0")
    process_index, num_processes, barrier = slice_ or process_slice()
    folder = Path(output)
    _check_settings(folder, settings, process_index, barrier)
    options = {
        "rationale": rationale,
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
        "batch_size": batch_size,
        "backend": backend,
        "show_progress_bar": False,
    }

    mine, done, dim = [], 0, embedder.embedding_dim
    bar = tqdm(
        desc=f"grace encode [{process_index}/{num_processes}]",
        unit="text",
        disable=not show_progress_bar,
        position=process_index,
    )
    started = time.perf_counter()

    def flush(index: int, ids: list[str], texts: list[str]) -> None:
        nonlocal done
        vectors, rationales = embedder.encode(texts, return_rationales=True, **options)
        if not rationale:
            rationales = [None] * len(texts)
        _write_shard(folder / _shard_name(index), ids, texts, vectors, rationales)
        done += len(texts)
        bar.update(len(texts))
        elapsed = time.perf_counter() - started
        bar.set_postfix(texts_per_s=f"{done / elapsed:.1f}")

    total, ids, texts, seen = 0, [], [], {}
    for row, (text_id, text) in enumerate(
        stream_texts(data, config=config, split=split, column=column, id_column=id_column)
    ):
        if text_id in seen:  # a search over the output could not tell the two rows apart (rag refuses them too)
            raise ValueError(
                f"{label}: rows {seen[text_id]} and {row} have the same id {text_id!r}; ids must be unique"
            )
        seen[text_id] = row
        total = row + 1
        shard = row // shard_size
        if shard % num_processes == process_index:
            ids.append(text_id)
            texts.append(text)
        if total % shard_size == 0:
            _finish_shard(folder, shard, ids, texts, mine, flush, process_index, num_processes)
            ids, texts = [], []
    if total == 0:
        raise ValueError(f"{label} ({config or 'default'}/{split}) has no rows: nothing to encode")
    if total % shard_size:  # the last, shorter shard
        _finish_shard(folder, total // shard_size, ids, texts, mine, flush, process_index, num_processes)
    bar.close()
    part = {
        "process": process_index,
        "shards": mine,
        "encoded_now": done,
        "seconds": round(time.perf_counter() - started, 3),
        "rows_seen": total,
    }
    (folder / f".manifest.process-{process_index}.json").write_text(json.dumps(part))
    barrier()
    if process_index != 0:
        return None
    return _merge_manifest(folder, settings, num_processes, total, dim)


def _finish_shard(folder, shard, ids, texts, mine, flush, process_index, num_processes) -> None:
    if shard % num_processes != process_index:
        return
    path = folder / _shard_name(shard)
    if path.is_file():
        logger.info("shard %d already encoded: skipped", shard)
    elif ids:
        flush(shard, ids, texts)
    mine.append({"file": path.name, "index": shard, "rows": len(ids)})


def _merge_manifest(folder: Path, settings: EncodeSettings, num_processes: int, total: int, dim: int) -> dict:
    parts = [json.loads((folder / f".manifest.process-{i}.json").read_text()) for i in range(num_processes)]
    shards = sorted((s for p in parts for s in p["shards"]), key=lambda s: s["index"])
    missing = [s["file"] for s in shards if not (folder / s["file"]).is_file()]
    if missing or sum(s["rows"] for s in shards) != total:
        raise RuntimeError(f"{folder}: shards missing after encoding ({missing[:5]}...) or rows do not add up")
    manifest = {
        "format": FORMAT,
        "settings": settings.to_dict(),
        "embedding_dim": dim,
        "rows": total,
        "shards": shards,
        "processes": num_processes,
        "encoded_now": sum(p["encoded_now"] for p in parts),
        "seconds": max(p["seconds"] for p in parts),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    for i in range(num_processes):
        (folder / f".manifest.process-{i}.json").unlink(missing_ok=True)
    return manifest
