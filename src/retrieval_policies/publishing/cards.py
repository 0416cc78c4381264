"""Hub cards for what this project publishes: GRACE and DynamicRAG models, datasets and metric Spaces.

The Jinja templates ship in the package (``retrieval_policies.templates``) and are
rendered with ``huggingface_hub.ModelCard`` / ``DatasetCard`` / ``RepoCard``. Everything a card states is read from
the artefacts (trainer log history, mteb result files, evaluation reports, the model's own outputs), and every
``python`` block of a rendered card is meant to run as written: :func:`code_snippets` extracts them for the tests.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from ..common.local_paths import portable, portable_name
from ..templates import render_card, template_dir

CURVES_FILE = "training_curves.png"
GRACE_CURVE_KEYS = (
    "reward",
    "grace/positive_similarity",
    "grace/negative_similarity",
    "grace/consistency",
    "grace/cross",
    "grace/length_penalised_share",
    "grace/rationale_tokens",
)
DYNAMICRAG_CURVE_KEYS = (
    "loss",
    "mean_token_accuracy",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
)


def code_snippets(card_text: str) -> list[str]:
    """The ``python`` code blocks of a card, in order."""
    return [block.strip() + "\n" for block in re.findall(r"^```python\n(.*?)^```", card_text, re.DOTALL | re.MULTILINE)]


# ---------------------------------------------------------------------------------------------- training curves
def read_log_history(folder: str | os.PathLike) -> list[dict]:
    """The trainer's log history saved with a training output (``trainer_state.json``); empty when there is none."""
    path = Path(folder) / "trainer_state.json"
    return json.loads(path.read_text()).get("log_history", []) if path.is_file() else []


def plot_training_curves(
    log_history: list[dict], keys: tuple[str, ...], path: str | os.PathLike, *, title: str
) -> Path | None:
    """One panel per logged quantity over steps, as a PNG; None when nothing of ``keys`` was logged."""
    series = {}
    for key in keys:
        points = [
            (row["step"], row[key])
            for row in log_history
            if key in row and "step" in row and isinstance(row[key], (int, float)) and math.isfinite(row[key])
        ]
        if points:
            series[key] = points
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, (key, points) in zip(axes.flat, series.items()):
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o", markersize=3)
        axis.set_title(key, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def _settings(folder: Path, keys: tuple[str, ...]) -> dict:
    """The chosen keys of the settings a recipe saved (``training_settings.json``: stage + script/model/training)."""
    path = folder / "training_settings.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    flat = {"stage": saved.get("stage")}
    for part in ("script", "model", "training"):
        flat.update({k: v for k, v in (saved.get(part) or {}).items() if k not in flat})
    return portable({k: flat[k] for k in ("stage", *keys) if flat.get(k) not in (None, "", [])})


# ---------------------------------------------------------------------------------------------- GRACE
GRACE_SETTING_KEYS = (
    "model_name_or_path",
    "dataset_name",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "temperature",
    "tau",
    "lambda_consistency",
    "lambda_cross",
    "beta",
    "use_peft",
    "lora_r",
    "seed",
)
WIDGET = {
    "source_sentence": "A dog barked at the mailman all morning.",
    "sentences": [
        "The postman was barked at by a dog for hours.",
        "Stock prices fell sharply on Monday.",
        "A cat slept on the windowsill.",
    ],
}
RATIONALE_TEXTS = (
    "The mitochondrion is the organelle that produces most of the cell's chemical energy.",
    "bank: sloping land beside a body of water",
    "The treaty ended the war and redrew the borders of the region.",
)


def mteb_results(results_dir: str | os.PathLike) -> list[dict]:
    """Main score of every mteb result file under ``results_dir``: [{task, type, metric, score, split}] (saved
    per-query predictions, ``*_predictions.json``, are not result files and are skipped)."""
    import mteb

    rows = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name == "model_meta.json" or path.name.endswith("_predictions.json"):
            continue
        result = mteb.TaskResult.from_disk(path)
        task = (
            mteb.get_task(result.task_name)
            if result.task_name not in _local_task_names()
            else _local_task(result.task_name)
        )
        split = next(iter(result.scores))
        rows.append(
            {
                "task": result.task_name,
                "type": task.metadata.type,
                "metric": task.metadata.main_score,
                "score": float(result.get_score()),
                "split": split,
            }
        )
    return rows


def _local_task_names() -> set[str]:
    from ..evaluation.local_tasks import LOCAL_TASKS

    return set(LOCAL_TASKS)


def _local_task(name: str):
    from ..evaluation.local_tasks import LOCAL_TASKS

    return LOCAL_TASKS[name]()


def _eval_results(rows: list[dict]):
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=row["type"],
            dataset_type=row["task"],
            dataset_name=row["task"],
            dataset_split=row["split"],
            metric_type=row["metric"],
            metric_value=round(row["score"], 4),
        )
        for row in rows
        if math.isfinite(row["score"])  # a NaN score would be written as .nan, which no client reads back as a number
    ]


def grace_rationales(
    folder: str | os.PathLike, texts=RATIONALE_TEXTS, *, max_new_tokens: int | None = None
) -> list[dict]:
    """What the trained model writes about a few texts, greedy (the card shows them as they are)."""
    from ..models.grace import GraceEmbedder

    embedder = GraceEmbedder.from_pretrained(folder)
    _, rationales = embedder.encode(list(texts), temperature=0.0, max_new_tokens=max_new_tokens, return_rationales=True)
    return [{"text": t, "rationale": r} for t, r in zip(texts, rationales)]


def _grace_defaults(folder: Path) -> dict:
    """The decoding every loading route of the repo uses unless told otherwise (its grace_config.json)."""
    from ..models.grace import GRACE_CONFIG_NAME, GraceConfig

    path = folder / GRACE_CONFIG_NAME
    config = GraceConfig.load(path) if path.is_file() else GraceConfig()
    return {"temperature": config.temperature, "max_new_tokens": config.max_new_tokens}


def _faithfulness(folder: Path) -> list[dict]:
    """The task reports of ``retrieval-policies grace faithfulness --output FOLDER/faithfulness.json``, if run."""
    path = folder / "faithfulness.json"
    return json.loads(path.read_text())["tasks"] if path.is_file() else []


def _grace_objective(folder: Path) -> str | None:
    """What the folder's run trained (its recipe's ``contrastive`` and ``truncation``), None when not recorded."""
    from ..grace.rewards import objective_name

    script = _settings(folder, ("contrastive", "truncation"))
    if "contrastive" not in script and "truncation" not in script:
        return None
    return objective_name(script.get("contrastive", "group"), script.get("truncation", "penalty"))


def render_grace_card(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    base_model: str,
    datasets: list[str] | None = None,
    results: list[dict] | None = None,
    baseline: list[dict] | None = None,
    rationales: list[dict] | None = None,
    license: str = "apache-2.0",
    snippet_max_new_tokens: int = 32,
    local_tasks: tuple[str, ...] = ("LocalLeeSTS",),
    decoding: dict | None = None,
    faithfulness: list[dict] | None = None,
):
    """Write README.md (and the training-curve PNG when a log history is there) into a GRACE repo folder.
    ``decoding`` ({temperature, max_new_tokens}) is how ``results`` were measured: the card says so next to the
    repo's own defaults, which every loading route uses. ``faithfulness``: the task reports of ``grace faithfulness``
    (default: the folder's ``faithfulness.json``, when there is one)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    base_model, datasets = portable_name(base_model), portable(datasets) if datasets else None
    curves = plot_training_curves(
        read_log_history(folder), GRACE_CURVE_KEYS, folder / CURVES_FILE, title=f"{repo_id}: GRPO"
    )
    before = {row["task"]: row["score"] for row in baseline or []}
    data = ModelCardData(
        license=license,
        base_model=base_model,
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        model_name=repo_id,
        tags=[
            "grace",
            "embeddings",
            "custom_code",
            "mteb",
            "sentence-transformers",
            "sentence-similarity",
            "retrieval-policies",
        ],
        eval_results=_eval_results(results) if results else None,
        widget=[WIDGET],
    )
    card = render_card(
        ModelCard,
        data,
        "grace.md",
        repo_id=repo_id,
        base_model=base_model,
        datasets=datasets or [],
        results=[{**row, "before": before.get(row["task"])} for row in results or []],
        rationales=rationales or [],
        settings=_settings(folder, GRACE_SETTING_KEYS),
        objective=_grace_objective(folder),
        curves=CURVES_FILE if curves else None,
        widget=WIDGET,
        max_new_tokens=snippet_max_new_tokens,
        local_tasks=list(local_tasks),
        decoding=decoding,
        settings_defaults=_grace_defaults(folder),
        faithfulness=faithfulness if faithfulness is not None else _faithfulness(folder),
    )
    card.save(folder / "README.md")
    return card


# ---------------------------------------------------------------------------------------------- DynamicRAG
DYNAMICRAG_SETTING_KEYS = (
    "model_name_or_path",
    "dataset_name",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "beta",
    "loss_type",
    "max_passages",
    "use_peft",
    "lora_r",
    "seed",
)
EXAMPLE_QUERY = "Who wrote the play Hamlet?"
EXAMPLE_PASSAGES = [
    {"title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare around 1600."},
    {"title": "Globe Theatre", "text": "The Globe Theatre in London staged many of Shakespeare's plays."},
]
SYSTEM_ORDER = ("dynamicrag", "same-k", "top-1", "top-3", "top-5", "all")


def dynamicrag_example(folder: str | os.PathLike, query: str = EXAMPLE_QUERY, passages=EXAMPLE_PASSAGES) -> dict:
    """One real call of the model: the query, the passages, the ids it selected and its answer."""
    from ..models.dynamicrag import DynamicRAGModel

    out = DynamicRAGModel.from_pretrained(folder)(query, list(passages))
    return {
        "query": query,
        "passages": list(passages),
        "selected": [i + 1 for i in out["indices"]],
        "answer": out["answer"],
    }


def _evaluation_rows(report: dict | None) -> list[dict]:
    scores = (report or {}).get("scores", {})
    names = [n for n in SYSTEM_ORDER if n in scores] + [n for n in scores if n not in SYSTEM_ORDER]
    return [{"system": name, **scores[name]} for name in names]


def render_dynamicrag_card(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    base_model: str,
    datasets: list[str] | None = None,
    evaluation: dict | None = None,
    evaluation_data: str | None = None,
    example: dict | None = None,
    stages: dict[str, str | os.PathLike] | None = None,
    license: str = "apache-2.0",
):
    """Write README.md (and the training-curve PNG) into a DynamicRAG repo folder.

    ``evaluation`` is a report of ``retrieval-policies dynamicrag evaluate``; ``stages`` maps stage names (sft, dpo)
    to their output folders, whose training settings and log histories the card shows.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    folder = Path(folder)
    base_model, datasets = portable_name(base_model), portable(datasets) if datasets else None
    evaluation_data = portable_name(evaluation_data)
    stages = {name: Path(path) for name, path in (stages or {"training": folder}).items()}
    curves = None
    for name, path in reversed(stages.items()):  # one figure per stage would crowd the card: the last stage that logged
        curves = plot_training_curves(
            read_log_history(path), DYNAMICRAG_CURVE_KEYS, folder / CURVES_FILE, title=f"{repo_id}: {name}"
        )
        if curves:
            break
    rows = _evaluation_rows(evaluation)
    eval_results = None
    if rows and rows[0]["system"] == "dynamicrag":
        dataset = evaluation_data or "evaluation set"
        eval_results = [
            EvalResult(
                task_type="question-answering",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=metric,
                metric_name=name,
                metric_value=round(float(rows[0][metric]), 4),
            )
            for metric, name in (("exact_match", "EM"), ("f1", "F1"), ("selection_recall", "selection recall"))
        ]
    data = ModelCardData(
        license=license,
        base_model=base_model,
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag="text-generation",  # listwise and generative: not a cross-encoder ("text-ranking" invited that)
        model_name=repo_id,
        eval_results=eval_results,
        tags=["dynamicrag", "reranker", "rag", "custom_code", "retrieval-policies"],
    )
    card = render_card(
        ModelCard,
        data,
        "dynamicrag.md",
        repo_id=repo_id,
        base_model=base_model,
        datasets=datasets or [],
        rows=rows,
        evaluation_data=evaluation_data,
        questions=len((evaluation or {}).get("predictions", [])),
        example=example,
        stages={name: _settings(path, DYNAMICRAG_SETTING_KEYS) for name, path in stages.items()},
        curves=CURVES_FILE if curves else None,
        example_query=EXAMPLE_QUERY,
        example_passages=EXAMPLE_PASSAGES,
    )
    card.save(folder / "README.md")
    return card


# ---------------------------------------------------------------------------------------------- any model folder
def model_kind(folder: str | os.PathLike) -> str:
    """``grace`` or ``dynamicrag``, from the method's settings file in the folder; an error naming what is missing."""
    from ..models.dynamicrag import DYNAMICRAG_CONFIG_NAME
    from ..models.grace import GRACE_CONFIG_NAME

    folder = Path(folder)
    kinds = [
        k
        for k, name in (("grace", GRACE_CONFIG_NAME), ("dynamicrag", DYNAMICRAG_CONFIG_NAME))
        if (folder / name).is_file()
    ]
    if len(kinds) != 1:
        raise ValueError(
            f"{folder}: not a GRACE or DynamicRAG model folder (it needs exactly one of {GRACE_CONFIG_NAME} or "
            f"{DYNAMICRAG_CONFIG_NAME}, as training and save_pretrained write)"
        )
    return kinds[0]


def folder_base_model(folder: str | os.PathLike) -> str | None:
    """The model a folder was trained from, as its recipe recorded it (``training_settings.json``)."""
    path = Path(folder) / "training_settings.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    for part in ("script", "model", "training"):
        name = (saved.get(part) or {}).get("model_name_or_path")
        if name:
            return str(name)
    return None


def render_model_card(folder: str | os.PathLike, repo_id: str, *, base_model: str | None = None, examples: bool = True):
    """The card of a GRACE or DynamicRAG folder from what the folder holds (its settings, log history and, with
    ``examples``, a real call of the model), for a model trained or saved outside the demo."""
    kind = model_kind(folder)
    base_model = base_model or folder_base_model(folder)
    if not base_model:
        raise ValueError(
            f"{folder}: no training_settings.json names the base model; give it (--base-model NAME, or "
            "base_model=... in Python)"
        )
    if kind == "grace":
        rationales = grace_rationales(folder, max_new_tokens=32) if examples else None
        return render_grace_card(folder, repo_id, base_model=base_model, rationales=rationales)
    example = dynamicrag_example(folder) if examples else None
    return render_dynamicrag_card(folder, repo_id, base_model=base_model, example=example)


# ---------------------------------------------------------------------------------------------- metric Spaces
def render_metric_card(folder: str | os.PathLike, load_name: str | None = None):
    """README.md of a metric Space from its ``card.yaml`` (title, description, inputs, outputs, examples); each
    example's output is computed by the metric at render time, so the card shows what the code returns. The
    examples load ``load_name`` (the Space's repo id); without it, the packaged metric of the folder's name."""
    import evaluate
    import yaml
    from huggingface_hub import RepoCard

    folder = Path(folder)
    spec = yaml.safe_load((folder / "card.yaml").read_text())
    examples = []
    for example in spec.get("examples", []):
        metric = (
            evaluate.load(str(folder), example.get("config")) if example.get("config") else evaluate.load(str(folder))
        )
        result = metric.compute(**example["kwargs"])
        examples.append(
            {**example, "call": ", ".join(f"{k}={v!r}" for k, v in example["kwargs"].items()), "result": _short(result)}
        )
    metadata = {
        "title": spec["title"],
        "emoji": spec.get("emoji", "📏"),
        "colorFrom": "blue",
        "colorTo": "green",
        "sdk": "gradio",
        "app_file": "app.py",
        "pinned": False,
        "tags": ["evaluate", "metric", "retrieval-policies"],
        "description": spec["description"],
    }
    text = (template_dir() / "metric.md").read_text(encoding="utf-8")
    import jinja2

    rendered = jinja2.Template(text, keep_trailing_newline=True).render(
        metadata=yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000).strip(),
        load_call=json.dumps(load_name) if load_name else f"metric_path({folder.name!r})",
        packaged=not load_name,
        **{**spec, "examples": examples},
    )
    card = RepoCard(rendered)
    card.save(folder / "README.md")
    return card


SPACE_KINDS = {
    "grace": (
        "GRACE embedder",
        "Texts in; their cosine similarity matrix and the rationale the model wrote about each "
        "(the text behind each embedding) out.",
        "🧭",
    ),
    "dynamicrag": (
        "DynamicRAG reranker",
        "A question and passages in; the passages the model chose to read, in its order "
        "(as many as it judged useful), and the answer it wrote from them out.",
        "🔎",
    ),
}


def render_space_card(folder: str | os.PathLike, repo_id: str, model: str, kind: str):
    """README.md of a model's demo Space (``spaces/<kind>``): Gradio metadata naming the model repo (``models``)."""
    import jinja2
    import yaml
    from huggingface_hub import RepoCard

    description, what, emoji = SPACE_KINDS[kind]
    metadata = {
        "title": f"{kind} demo",
        "emoji": emoji,
        "colorFrom": "indigo",
        "colorTo": "green",
        "sdk": "gradio",
        "sdk_version": "6.31.0",
        "app_file": "app.py",
        "pinned": False,
        "license": "apache-2.0",
        "models": [model],
        "tags": [kind, "retrieval-policies"],
        "short_description": f"Try {model}",
    }
    text = (template_dir() / "space.md").read_text(encoding="utf-8")
    rendered = jinja2.Template(text, keep_trailing_newline=True).render(
        card_data=yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000).strip(),
        title=repo_id,
        model=model,
        model_url=f"https://huggingface.co/{model}",
        kind_description=description,
        what=what,
    )
    card = RepoCard(rendered)
    card.save(Path(folder) / "README.md")
    return card


def _short(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value
