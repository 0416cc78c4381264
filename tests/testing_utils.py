"""Helpers shared by the tests (imported as ``from testing_utils import ...``, as in TRL); fixtures are in
conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

import retrieval_policies.metrics
import retrieval_policies.spaces

ROOT = Path(__file__).resolve().parents[1]  # the checkout
PACKAGED_METRICS = Path(retrieval_policies.metrics.__file__).parent  # the metric modules shipped in the package
PACKAGED_SPACES = Path(retrieval_policies.spaces.__file__).parent  # the demo Spaces shipped in the package
# the organizations the user of the ``local_hub`` fixture belongs to: the namespaces the tests push to
TEST_ORGS = ("org", "demo", "a", "weights", "test", "me")


def load_recipe(method: str, stage: str):
    """A recipe's entry script (recipes/<method>/<stage>.py) as a module, without running its ``__main__``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{method}_{stage}", ROOT / "recipes" / method / f"{stage}.py")
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


class ClientRunner:
    """Runs Python code in a fresh process whose Hugging Face clients talk to the local Hub.

    The clients read HF_ENDPOINT at import time, so client code never runs in the pytest process. Each ``home``
    is a separate HF_HOME: a reader with a new home cannot be served from the writer's cache.
    """

    def __init__(self, hub, workdir: Path, token: str | None = None):  # hub: a local_hub.LocalHub
        self.hub, self.workdir, self.token = hub, workdir, token  # token: HF_TOKEN (default: the hub's write token)

    def __call__(self, code: str, *args: str, home: str = "writer", check: bool = True, timeout: int = 600):
        env = self.hub.client_env(self.workdir / f"hf_home_{home}", token=self.token)
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
