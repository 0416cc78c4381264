"""Environment for a process whose Hugging Face clients must talk to a local Hub.

The clients read these variables when they are imported, so they must be in place before ``import huggingface_hub``
(or transformers, datasets, evaluate): pass this environment to a subprocess rather than patching ``os.environ``
in a process that already imported them.
"""

from __future__ import annotations

import os
from pathlib import Path

# Variables that would make a client skip the Hub or talk to another one.
_CLEARED = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_EVALUATE_CACHE",
    "HF_MODULES_CACHE",
    "HF_TOKEN_PATH",
)


def hub_client_env(
    endpoint: str, hf_home: str | os.PathLike, *, token: str = "local-hub-token", base: dict | None = None
) -> dict:
    """A copy of ``base`` (default: ``os.environ``) with the clients pointed at ``endpoint`` and caches in ``hf_home``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _CLEARED}
    Path(hf_home).mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HF_ENDPOINT": endpoint.rstrip("/"),
            "HF_TOKEN": token,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "HF_HUB_DOWNLOAD_TIMEOUT": "60",
        }
    )
    return env
