"""Where training logs go: trackio, local and offline (the CPU recipes set ``report_to: trackio`` and the project
below). ``TRACKIO_DIR`` chooses the folder (default ``$HF_HOME/trackio``); ``trackio show`` opens the dashboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = "retrieval-policies"


def trackio_dir(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("TRACKIO_DIR"):
        return Path(env["TRACKIO_DIR"])
    home = env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "trackio"


def logged_runs(folder: str | os.PathLike, project: str = PROJECT) -> list[str]:
    """The runs trackio holds for ``project`` in ``folder`` (asked of trackio's own command line); [] when none."""
    result = subprocess.run(
        [sys.executable, "-m", "trackio.cli", "list", "runs", "--project", project, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRACKIO_DIR": str(folder)},
    )
    if result.returncode != 0:
        return []
    return list(json.loads(result.stdout)["runs"])


def dashboard_command(folder: str | os.PathLike, project: str = PROJECT) -> str:
    return f"TRACKIO_DIR={folder} trackio show --project {project}"
