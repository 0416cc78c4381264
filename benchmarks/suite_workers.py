"""A tier of the test suite run twice in one go: in one process (torch's 2 threads) and on 2 pytest-xdist workers
of one thread each (what `make test` does, tests/conftest.py); prints the seconds of each and the ratio, and the
slowest tests of the one-process run (their own durations, undisturbed by a second worker).

    .venv/bin/python benchmarks/suite_workers.py [--tier fast|slow] [--workers 2] [--top 25]

Writes results/suite_workers_<tier>.json. Run it alone: the runs would slow each other and anything beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from report import write_report  # benchmarks/report.py (this folder is sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {"fast": "not slow", "slow": "slow"}


def run_tier(marker: str, workers: int, junit: Path) -> dict:
    """One pytest run of the tier; its seconds, its outcome counts, and the per-test times from its JUnit XML."""
    command = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    if workers:
        command += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]  # as the Makefile's XDIST
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    if done.returncode not in (0, 5):
        print(done.stdout[-5000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    tests = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        tests[f"{case.get('classname')}::{case.get('name')}"] = float(case.get("time", 0))
    return {"seconds": round(seconds, 1), "returncode": done.returncode, "counts": counts, "tests": tests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=sorted(MARKERS), default="fast")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="how many of the slowest tests to record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial = run_tier(MARKERS[args.tier], 0, Path(tmp) / "serial.xml")
        print(f"one process: {serial['seconds']} s {serial['counts']}", flush=True)
        parallel = run_tier(MARKERS[args.tier], args.workers, Path(tmp) / "parallel.xml")
        print(f"{args.workers} workers: {parallel['seconds']} s {parallel['counts']}", flush=True)
    slowest = sorted(serial["tests"].items(), key=lambda kv: -kv[1])[: args.top]
    by_file: dict[str, float] = {}
    for name, seconds in serial["tests"].items():
        module = name.split("::")[0]
        by_file[module] = by_file.get(module, 0.0) + seconds
    report = {
        "tier": args.tier,
        "marker": MARKERS[args.tier],
        "workers": args.workers,
        "one_process_s": serial["seconds"],
        "workers_s": parallel["seconds"],
        "ratio": round(serial["seconds"] / parallel["seconds"], 2),
        "one_process_counts": serial["counts"],
        "workers_counts": parallel["counts"],
        "returncodes": [serial["returncode"], parallel["returncode"]],
        "slowest_tests_s": {name: round(s, 1) for name, s in slowest},
        # every file (tests/conftest.py starts the longest first)
        "slowest_files_s": {m: round(s, 1) for m, s in sorted(by_file.items(), key=lambda kv: -kv[1])},
    }
    print(f"ratio (one process / {args.workers} workers): {report['ratio']}")
    write_report(f"suite_workers_{args.tier}", report)


if __name__ == "__main__":
    main()
