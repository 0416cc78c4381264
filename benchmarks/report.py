"""``write_report(name, report)``: a benchmark's measurements as ``benchmarks/results/<name>.json``, with the date,
the machine and the command, which the docs render as tables (docs/benchmarks.md)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(name: str, report: dict, folder: Path = RESULTS) -> Path:
    import torch

    path = Path(folder) / f"{name}.json"
    data = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **report,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
