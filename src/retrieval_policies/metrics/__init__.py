"""The project's ``evaluate`` metric modules, shipped inside the package.

Each ``<name>/`` folder is a self-contained metric (``<name>.py``, ``card.yaml``, the rendered ``README.md``,
``requirements.txt`` and the Space's ``app.py``; ``metric_widget.py`` is copied beside it when it is pushed), so
``evaluate.load`` reads it offline and ``retrieval-policies push --kind metric`` publishes it as a Space.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

METRICS = ("rag_answer", "rerank_selection", "retrieval")


def metric_path(name: str) -> str:
    """The folder of a packaged metric, for ``evaluate.load(metric_path("rag_answer"))``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: the packaged metrics are {', '.join(METRICS)}")
    folder = resources.files(__name__) / name
    if not isinstance(folder, Path) or not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(f"the packaged metric {name!r} is missing from {folder}: reinstall retrieval-policies")
    return str(folder)


def load_metric(name: str, config: str | None = None):
    """``evaluate.load`` of a packaged metric; ``name`` may also be a metric folder or a Hub id (an override)."""
    import evaluate

    path = metric_path(name) if name in METRICS else name
    return evaluate.load(path, config) if config else evaluate.load(path)
