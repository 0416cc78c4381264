"""A GRACE embedder as an mteb encoder (``AbsEncoder`` + ``ModelMeta``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from ..models.grace import GraceEmbedder

# Keyword arguments of GraceEmbedder.encode that an evaluation may set.
ENCODE_OPTIONS = ("rationale", "max_new_tokens", "temperature", "top_p", "seed", "cache_dir", "backend")


def _license_of(embedder: GraceEmbedder) -> str | None:
    """The license recorded with the weights (our provenance file or the card's metadata), if any."""
    folder = Path(str(embedder.model.config.name_or_path))
    provenance = folder / "retrieval_policies_source.json"
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("license")
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
            if line.startswith("license:"):
                return line.split(":", 1)[1].strip() or None
    return None


def grace_training_datasets(embedder: GraceEmbedder) -> set[str] | None:
    """The mteb names of what the weights were trained on, from the repo's ``training_settings.json``: none for an
    untrained backbone (no such file) or an unsupervised run (sentences, no MTEB task); a supervised run's list when its
    settings name one (``script.mteb_training_datasets``), else unknown (None) rather than a guess."""
    source = embedder.source or str(embedder.model.config.name_or_path)
    settings = Path(source) / "training_settings.json" if source else None
    if settings is None or not settings.is_file():
        return set()
    recorded = json.loads(settings.read_text())
    if str(recorded.get("stage", "")).endswith("unsupervised"):
        return set()
    named = (recorded.get("script") or {}).get("mteb_training_datasets")
    return set(named) if named is not None else None


def load_grace_mteb_encoder(
    model_name: str,
    revision: str | None = None,
    device: str | None = None,
    *,
    model_path: str | None = None,
    batch_size: int = 8,
    **settings,
) -> GraceMtebEncoder:
    """mteb's loader for a GRACE model (``ModelMeta.load_model``): the repo (or ``model_path``) placed on ``device``,
    with the experiment settings the results were made with (``query_*`` / ``document_*`` for one side)."""
    hub = {"revision": revision} if revision and not str(revision).startswith("local-") and model_path is None else {}
    embedder = GraceEmbedder.from_pretrained(model_path or model_name, device_map=device, **hub)
    query = {k.removeprefix("query_"): v for k, v in settings.items() if k.startswith("query_")}
    document = {k.removeprefix("document_"): v for k, v in settings.items() if k.startswith("document_")}
    common = {k: v for k, v in settings.items() if not k.startswith(("query_", "document_"))}
    return GraceMtebEncoder(
        embedder,
        name=model_name,
        batch_size=batch_size,
        query_options=query or None,
        document_options=document or None,
        **common,
    )


def grace_model_meta(
    embedder: GraceEmbedder,
    *,
    name: str,
    revision: str | None = None,
    license: str | None = None,
    settings: dict | None = None,
) -> ModelMeta:
    parameters = sum(p.numel() for p in embedder.model.parameters())
    embedding = embedder.model.get_input_embeddings().weight.numel()
    source = embedder.source or str(embedder.model.config.name_or_path)
    return ModelMeta(
        loader=load_grace_mteb_encoder,
        loader_kwargs={"model_path": source} if source and Path(source).exists() else {},
        name=name,
        revision=revision or embedder.revision,
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=parameters,
        n_embedding_parameters=embedding,
        memory_usage_mb=round(parameters * next(embedder.model.parameters()).element_size() / 2**20, 1),
        max_tokens=getattr(embedder.model.config.get_text_config(), "max_position_embeddings", None),
        embed_dim=embedder.embedding_dim,
        license=license or _license_of(embedder),
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Sentence Transformers"],
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=grace_training_datasets(embedder),
        modalities=["text"],
        model_type=["dense"],
        experiment_kwargs=settings or None,
    )


class GraceMtebEncoder(AbsEncoder):
    """Runs ``GraceEmbedder.encode`` for mteb. Queries and documents are treated alike (the published setting)
    unless ``query_options`` / ``document_options`` override encode options for one side (e.g. documents without
    rationales)."""

    MEMO_LIMIT = 20_000  # embeddings kept per task for texts that mteb asks for again

    def __init__(
        self,
        embedder: GraceEmbedder,
        *,
        name: str,
        batch_size: int = 8,
        query_options: dict | None = None,
        document_options: dict | None = None,
        license: str | None = None,
        **encode_options,
    ):
        for options in (encode_options, query_options or {}, document_options or {}):
            unknown = set(options) - set(ENCODE_OPTIONS)
            if unknown:
                raise ValueError(f"unknown encode options {sorted(unknown)}; allowed: {ENCODE_OPTIONS}")
        self.model = embedder
        self.batch_size = batch_size
        self.encode_options = encode_options
        self.query_options, self.document_options = query_options or {}, document_options or {}
        settings = {k: v for k, v in encode_options.items() if k != "cache_dir"}
        settings.update({f"query_{k}": v for k, v in self.query_options.items() if k != "cache_dir"})
        settings.update({f"document_{k}": v for k, v in self.document_options.items() if k != "cache_dir"})
        self.mteb_model_meta = grace_model_meta(embedder, name=name, license=license, settings=settings)
        self._seen_in: tuple | None = None  # (task, split, subset) whose vectors ``_seen`` holds
        self._seen: dict[tuple, np.ndarray] = {}

    def _reproducible(self, options: dict) -> bool:
        c = self.model.grace_config
        temperature = options.get("temperature", c.temperature)
        return not options.get("rationale", True) or temperature == 0 or options.get("seed", c.seed) is not None

    def encode(
        self,
        inputs,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ):
        texts = [text for batch in inputs for text in batch["text"]]
        options = dict(self.encode_options)
        if prompt_type == PromptType.query:
            options.update(self.query_options)
        elif prompt_type == PromptType.document:
            options.update(self.document_options)

        def encode(todo):
            return self.model.encode(
                todo,
                batch_size=kwargs.get("batch_size", self.batch_size),
                show_progress_bar=kwargs.get("show_progress_bar", len(todo) > 64),
                **options,
            )

        if not self._reproducible(options):
            return encode(texts)
        # mteb asks for the same texts more than once within a task (an STS task encodes both sides of every pair:
        # Lee's 50 documents as 2 x 1225 texts). A reproducible embedding is computed once per task and options; at
        # most MEMO_LIMIT of them are kept (a large retrieval corpus is encoded once anyway).
        where = (task_metadata.name, hf_split, hf_subset)
        if where != self._seen_in:
            self._seen_in, self._seen = where, {}
        settings = tuple(sorted((k, repr(v)) for k, v in options.items()))
        todo = list(dict.fromkeys(t for t in texts if (settings, t) not in self._seen))
        fresh = dict(zip(todo, encode(todo))) if todo else {}
        for text in todo[: max(0, self.MEMO_LIMIT - len(self._seen))]:
            self._seen[(settings, text)] = fresh[text]
        return np.stack([fresh[t] if t in fresh else self._seen[(settings, t)] for t in texts])

    def __repr__(self) -> str:
        return (
            f"GraceMtebEncoder(name={self.mteb_model_meta.name!r}, options={self.encode_options}, model={self.model!r})"
        )
