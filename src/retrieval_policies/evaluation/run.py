"""``retrieval-policies grace evaluate``: local tasks offline, built-in MTEB tasks when the Hub is reachable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .benchmarks import resolve_benchmark

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreRow:
    task: str
    metric: str
    score: float


def resolve_tasks(names: list[str] | None, validation_data: str | None = None) -> list:
    """Task instances: local task names (the default set by default, none when only ``validation_data`` is given) or
    built-in mteb task names, and ``TripletValidationRetrieval`` on ``validation_data``'s validation split."""
    import mteb

    from .local_tasks import DEFAULT_LOCAL_TASKS, LOCAL_TASKS, TripletValidationRetrieval

    if validation_data is not None:
        return [*(resolve_tasks(names) if names else []), TripletValidationRetrieval(validation_data)]
    names = names or [cls.metadata.name for cls in DEFAULT_LOCAL_TASKS]
    builtin = [n for n in names if n not in LOCAL_TASKS]
    tasks = [LOCAL_TASKS[n]() for n in names if n in LOCAL_TASKS]
    if builtin:
        try:
            tasks += list(mteb.get_tasks(tasks=builtin))
        except Exception as err:  # noqa: BLE001 - name the unknown task rather than mteb's internals
            raise ValueError(
                f"unknown task(s) {builtin}: local tasks are {sorted(LOCAL_TASKS)}; built-in MTEB names "
                f"need the Hub for their data ({type(err).__name__}: {err})"
            ) from None
    return tasks


def results_name(model: str) -> str:
    """An mteb model name ("org/model") for a Hub id, or "local/<folder>" for a path."""
    if Path(model).exists() or model.count("/") != 1:
        return f"local/{Path(model.rstrip('/')).name}"
    return model


def evaluate_model(
    model: str,
    *,
    tasks: list[str] | None = None,
    benchmark: str | None = None,
    output_dir: str | Path = "results/mteb",
    sentence_transformer: bool = False,
    name: str | None = None,
    batch_size: int = 8,
    placement: dict | None = None,
    document_options: dict | None = None,
    query_options: dict | None = None,
    system_prompt: str | None = None,
    validation_data: str | None = None,
    predictions_dir: str | Path | None = None,
    **encode_options,
) -> list[ScoreRow]:
    """Evaluate a GRACE model (repo, folder or base chat LLM) or a sentence-transformers model on ``tasks`` or a
    ``benchmark`` (an mteb benchmark name or a project preset); write mteb's result files under ``output_dir`` and
    return the main score of each task. ``placement``: ``device_map`` / ``dtype`` / ``attn_implementation``;
    ``system_prompt`` replaces the repo's rationale instruction (to compare an untrained model under a trained one's);
    ``validation_data``: a GRACE triplet dataset whose validation split is evaluated too (``TripletValidationRetrieval``);
    ``predictions_dir``: where mteb also saves each task's per-query predictions (for ``evaluation.paired``)."""
    import mteb

    from ..assets import resolve_model

    task_list = (
        resolve_benchmark(benchmark) if benchmark else resolve_tasks(tasks, validation_data)
    )  # before any model is loaded
    path = resolve_model(model)
    name = name or results_name(model)
    placement = placement or {}
    if sentence_transformer:
        from sentence_transformers import SentenceTransformer

        model_kwargs = {k: v for k, v in placement.items() if k in ("dtype", "attn_implementation")}
        device = placement.get("device_map")
        encoder = SentenceTransformer(
            str(path), device=None if device == "auto" else device, model_kwargs=model_kwargs or None
        )
        encoder.model_card_data.model_name = name
    else:
        from ..models.grace import GraceEmbedder
        from .mteb_encoder import GraceMtebEncoder

        embedder = GraceEmbedder.from_pretrained(path, **placement)
        if system_prompt is not None:
            embedder.grace_config.system_prompt = system_prompt
        encoder = GraceMtebEncoder(
            embedder,
            name=name,
            batch_size=batch_size,
            query_options=query_options,
            document_options=document_options,
            **encode_options,
        )
    results = mteb.evaluate(
        encoder,
        task_list,
        cache=mteb.ResultCache(str(output_dir)),
        encode_kwargs={"batch_size": batch_size},
        overwrite_strategy="always",
        prediction_folder=str(predictions_dir) if predictions_dir else None,
        show_progress_bar=False,
    )
    by_name = {r.task_name: r for r in results.task_results}
    return [ScoreRow(t.metadata.name, t.metadata.main_score, by_name[t.metadata.name].get_score()) for t in task_list]


def format_table(rows: list[ScoreRow]) -> str:
    width = max([len(r.task) for r in rows] + [4])
    lines = [f"{'task':<{width}}  {'metric':<16}  score", f"{'-' * width}  {'-' * 16}  ------"]
    lines += [f"{r.task:<{width}}  {r.metric:<16}  {r.score:.4f}" for r in rows]
    return "\n".join(lines)
