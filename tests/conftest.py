"""Shared fixtures: SmolLM2's tokenizer, the fake vLLM, a local Hub per test and a runner for client code in a process
pointed at it. Helpers that are not fixtures are in testing_utils.py."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import transformers
from testing_utils import FAKE_VLLM, TEST_ORGS, ClientRunner

from local_hub import LocalHub
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model

# Under pytest-xdist (`make test` runs two workers on this 2-core machine) each worker, and every process it starts,
# computes on one thread: two workers with torch's default of one thread per core slow each other 10-20x.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    # vLLM-CPU binds its threads to cores: each worker's engines to a core of its own
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw") or 0)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(cores[worker % len(cores)]))

# The recipes log to trackio (report_to: trackio): the suite's runs go to a folder of its own, never to ~/.cache.
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="trackio-tests-"))


def pytest_collection_modifyitems(config, items):
    """The longest files first, by the per-file seconds last measured (benchmarks/results/suite_workers_*.json;
    files not listed keep their order, after them): xdist's workers take files in this order, so the longest start
    first and the tier does not end with one worker alone on the demo."""
    import json

    tiers = {"slow": ["slow"], "not slow": ["fast"]}.get(config.option.markexpr, ["fast", "slow"])
    measured: dict[str, float] = {}
    for tier in tiers:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"suite_workers_{tier}.json"
        for name, seconds in (json.loads(path.read_text())["slowest_files_s"] if path.is_file() else {}).items():
            measured[name] = measured.get(name, 0.0) + seconds
    position = {item: i for i, item in enumerate(items)}

    def module(item) -> str:  # as JUnit names it: tests.test_demo
        return item.nodeid.split("::")[0].removesuffix(".py").replace("/", ".")

    items.sort(key=lambda item: (-measured.get(module(item), 0.0), position[item]))


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (the packaged model's): the real chat template and tokens for the tiny random models."""
    return transformers.AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))


@pytest.fixture
def fake_vllm(monkeypatch):
    """tests/fakes/vllm as ``vllm`` for one test (the real vllm, when installed, is put back after it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm", FAKE_VLLM)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm", module)  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", module.sampling_params)
    return module


@pytest.fixture
def local_hub(tmp_path):
    """A token-authenticated Hub (clients send ``hub.token``, as against the Hub) whose user belongs to the
    organizations the tests write in."""
    with LocalHub(tmp_path / "hub", authenticated=True, orgs=TEST_ORGS) as hub:
        yield hub


@pytest.fixture
def client(local_hub, tmp_path) -> ClientRunner:
    return ClientRunner(local_hub, tmp_path)
