"""The model a demo Space shows: named in space_config.json (written by the push) or by MODEL_REPO, loaded once with
its repo's own code. The push copies this file next to each Space's app.py (a checkout's apps find it here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoModel

_loaded = {}


def model_repo(here: Path) -> str:
    if os.environ.get("MODEL_REPO"):
        return os.environ["MODEL_REPO"]
    return json.loads((here / "space_config.json").read_text())["model"]


def model_name(here: Path) -> str:
    """The repo id, or a local folder's name (not the path of the machine serving it)."""
    repo = model_repo(here)
    return Path(repo).name if Path(repo).is_dir() else repo


def model(here: Path):
    repo = model_repo(here)
    if repo not in _loaded:
        _loaded[repo] = AutoModel.from_pretrained(repo, trust_remote_code=True)
    return _loaded[repo]
