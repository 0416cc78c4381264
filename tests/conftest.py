"""Shared fixtures: a local Hub per test and a runner for client code in a process pointed at it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrieval_policies.hub import LocalHub, hub_client_env


@pytest.fixture
def local_hub(tmp_path):
    with LocalHub(tmp_path / "hub") as hub:
        yield hub


class ClientRunner:
    """Runs Python code in a fresh process whose Hugging Face clients talk to the local Hub.

    The clients read HF_ENDPOINT at import time, so client code never runs in the pytest process. Each ``home``
    is a separate HF_HOME: a reader with a new home cannot be served from the writer's cache.
    """

    def __init__(self, hub: LocalHub, workdir: Path):
        self.hub, self.workdir = hub, workdir

    def __call__(self, code: str, *args: str, home: str = "writer", check: bool = True, timeout: int = 600):
        env = hub_client_env(self.hub.url, self.workdir / f"hf_home_{home}")
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=self.workdir,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"client process failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return result

    def json(self, code: str, *args: str, **kwargs):
        """Run ``code`` and parse the JSON object it prints on its last stdout line."""
        return json.loads(self(code, *args, **kwargs).stdout.strip().splitlines()[-1])


@pytest.fixture
def client(local_hub, tmp_path) -> ClientRunner:
    return ClientRunner(local_hub, tmp_path)
