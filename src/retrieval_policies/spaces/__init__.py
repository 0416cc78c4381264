"""The models' demo Spaces (Gradio apps), shipped inside the package: ``grace`` (texts → similarity matrix and
rationales) and ``dynamicrag`` (question + passages → selected passages and answer). Each ``<name>/`` holds its
``app.py`` and ``requirements.txt``; ``retrieval-policies push space <name> OWNER/NAME --model REPO`` stages it with
``space_model.py`` (the model loader the apps import), the model it shows and its card."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SPACES = ("grace", "dynamicrag")


def space_path(name: str) -> str:
    """The folder of a packaged demo Space."""
    if name not in SPACES:
        raise ValueError(f"unknown demo Space {name!r}: the packaged ones are {', '.join(SPACES)}")
    folder = resources.files(__name__) / name
    if not isinstance(folder, Path) or not (folder / "app.py").is_file():
        raise FileNotFoundError(f"the packaged Space {name!r} is missing from {folder}: reinstall retrieval-policies")
    return str(folder)
