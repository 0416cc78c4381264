"""Shared fixtures: a local Hub per test and a runner for client code in a process pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

from retrieval_policies.hub import LocalHub

# The recipes log to trackio (report_to: trackio): the suite's runs go to a folder of its own, never to ~/.cache.
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="trackio-tests-"))


def load_recipe(method: str, stage: str):
    """A recipe's entry script (recipes/<method>/<stage>.py) as a module, without running its ``__main__``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"recipe_{method}_{stage}", Path(__file__).resolve().parents[1] / "recipes" / method / f"{stage}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the recipe is executed
    spec.loader.exec_module(module)
    return module


def tiny_llama(tokenizer, *, layers: int = 1, **config) -> transformers.LlamaForCausalLM:
    """A random 32-wide Llama over SmolLM2's tokenizer (seed 0): the real chat template and tokens, seconds to run.
    For mechanics only; tests of a language model's behaviour use the real SmolLM2."""
    torch.manual_seed(0)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=2,
        pad_token_id=2,
    )
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**settings, **config}))


FAKE_VLLM = Path(__file__).resolve().parent / "fakes" / "vllm" / "__init__.py"


@pytest.fixture
def fake_vllm(monkeypatch):
    """tests/fakes/vllm as ``vllm`` for one test (the real vllm, when installed, is put back after it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm", FAKE_VLLM)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm", module)  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


def torchrun_two(script: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``script`` in 2 processes under torchrun (gloo on this CPU), one thread each, its output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=script.parent, env=env)


def kill_after_shards(command: list[str], folder: Path, shards: int, *, timeout: int = 300, cwd=None) -> list[str]:
    """Start a ``grace encode`` command, SIGKILL its whole process group (engine processes too) once ``folder``
    holds ``shards`` finished shards, and return their names."""
    import signal
    import time

    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, start_new_session=True
    )
    deadline = time.time() + timeout
    while len(list(folder.glob("shard-*.parquet"))) < shards and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return sorted(p.name for p in folder.glob("shard-*.parquet"))


def smollm2_folder() -> Path:
    from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model

    return Path(resolve_model(DEFAULT_BASE_MODEL, offline=True))


@pytest.fixture
def local_hub(tmp_path):
    with LocalHub(tmp_path / "hub", authenticated=True) as hub:  # clients send hub.token, as against the Hub
        yield hub


class ClientRunner:
    """Runs Python code in a fresh process whose Hugging Face clients talk to the local Hub.

    The clients read HF_ENDPOINT at import time, so client code never runs in the pytest process. Each ``home``
    is a separate HF_HOME: a reader with a new home cannot be served from the writer's cache.
    """

    def __init__(self, hub: LocalHub, workdir: Path):
        self.hub, self.workdir = hub, workdir

    def __call__(self, code: str, *args: str, home: str = "writer", check: bool = True, timeout: int = 600):
        env = self.hub.client_env(self.workdir / f"hf_home_{home}")
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"client process failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
            )
        return result

    def json(self, code: str, *args: str, **kwargs):
        """Run ``code`` and parse the JSON object it prints on its last stdout line."""
        return json.loads(self(code, *args, **kwargs).stdout.strip().splitlines()[-1])


@pytest.fixture
def client(local_hub, tmp_path) -> ClientRunner:
    return ClientRunner(local_hub, tmp_path)
