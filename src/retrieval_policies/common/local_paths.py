"""Local paths as a published repo shows them: the pushed repo's id when the folder was pushed, else its name.

A card or ``training_settings.json`` written on the machine that trained the model would otherwise carry that
machine's paths (``dataset_name: /tmp/...``), which mean nothing to a reader and leak the trainer's layout. A push
of a dataset folder records its repo id in the folder (``.hub.json``, never uploaded: the push ignores dot files),
so that a model trained on the folder names the dataset by the id it can be loaded with.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

PUSH_RECORD = ".hub.json"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def record_push(folder: str | os.PathLike, repo_id: str, *, kind: str, revision: str, commit: str | None) -> None:
    """Remember in ``folder`` which repo it was pushed to (read by :func:`portable_name`)."""
    record = {"repo_id": repo_id, "kind": kind, "revision": revision, "commit": commit}
    Path(folder, PUSH_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def pushed_repo_id(folder: str | os.PathLike) -> str | None:
    path = Path(folder, PUSH_RECORD)
    try:
        return json.loads(path.read_text())["repo_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_local_path(value: str) -> bool:
    """An absolute path, a home-relative one, or a relative one that names a file or folder here."""
    if not value or "\n" in value or "://" in value:
        return False
    if value.startswith(("/", "~", "./", "../", "\\\\")) or _WINDOWS_DRIVE.match(value):
        return True
    return ("/" in value or os.sep in value) and Path(value).exists()


def portable_name(value):
    """``value`` unless it is a local path: then the repo id it was pushed as, else the last part of the path."""
    if not isinstance(value, str) or not is_local_path(value):
        return value
    folder = Path(os.path.expanduser(value))
    return pushed_repo_id(folder) or folder.name or value.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def portable(obj):
    """``obj`` (JSON-like: dicts, lists, strings) with every local path replaced by :func:`portable_name`."""
    if isinstance(obj, dict):
        return {key: portable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(value) for value in obj]
    return portable_name(obj)
