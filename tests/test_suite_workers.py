"""How `make test` runs the suite: under pytest-xdist every worker computes on one thread, and so does what it starts
(two workers with torch's default of a thread per core slow each other 10-20x on this 2-core machine)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="runs on a pytest-xdist worker only")
def test_a_worker_and_its_subprocesses_compute_on_one_thread():
    assert torch.get_num_threads() == 1
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True
    )
    assert child.stdout.strip() == "1"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] in {str(c) for c in os.sched_getaffinity(0)}
