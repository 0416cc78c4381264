"""Shared fixtures: SmolLM2's tokenizer, the fake vLLM, a local Hub per test and a runner for client code in a process
pointed at it. Helpers that are not fixtures are in testing_utils.py."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
import transformers
from testing_utils import FAKE_VLLM, TEST_ORGS, ClientRunner

from local_hub import LocalHub
from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model

# The recipes log to trackio (report_to: trackio): the suite's runs go to a folder of its own, never to ~/.cache.
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="trackio-tests-"))


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
