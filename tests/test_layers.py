"""The library's import layers and its freedom from cycles ([tool.importlinter] in pyproject.toml), checked by
import-linter on the package and on a copy with violations put in (the contracts must catch them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from testing_utils import ROOT

LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def lint(package_parent, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [*LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_the_package_keeps_its_layers_and_has_no_cycles(tmp_path):
    result = lint(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 kept, 0 broken" in result.stdout


def test_an_upward_import_a_cycle_and_a_models_dependency_are_caught(tmp_path):
    copy = tmp_path / "src" / "retrieval_policies"
    for package in ("retrieval_policies", "local_hub"):
        shutil.copytree(
            ROOT / "src" / package, tmp_path / "src" / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    with (copy / "retrieval" / "dense.py").open("a") as f:  # generic retrieval reaching up into a method
        f.write("\n\ndef _upward():\n    from ..grace import corpus  # noqa: F401\n")
    with (copy / "dynamicrag" / "vllm_backend.py").open("a") as f:  # judges imports vllm_backend: a cycle
        f.write("\n\ndef _cycle():\n    from . import judges  # noqa: F401\n")
    with (copy / "models" / "grace" / "configuration_grace.py").open("a") as f:
        f.write("\n\ndef _dependency():\n    import numpy  # noqa: F401\n")
    with (tmp_path / "src" / "local_hub" / "storage.py").open("a") as f:  # the Hub depending on the library
        f.write("\n\ndef _library():\n    import retrieval_policies.common  # noqa: F401\n")
    with (copy / "publishing" / "push.py").open("a") as f:  # the library depending on the Hub
        f.write("\n\ndef _hub():\n    import local_hub  # noqa: F401\n")
    result = lint(tmp_path / "src", tmp_path)
    assert result.returncode != 0
    assert "0 kept, 5 broken" in result.stdout, result.stdout[-3000:]
    assert "local_hub.storage -> retrieval_policies" in result.stdout
    assert "retrieval_policies.retrieval.dense -> retrieval_policies.grace.corpus" in result.stdout
    assert "retrieval_policies.models.grace.configuration_grace -> numpy" in result.stdout
