"""DynamicRAG SFT steps with TRL's fused LM head scoring every position (TRL's CPU default) vs only the labelled ones
(`compact_fused_lm_head`, what recipes/dynamicrag/sft.py and dpo.py call): the same batches, loss and gradients.

The data is the evidence run's (`make evidence-dynamicrag`'s first stage and behaviour-cloning options: ~650-token
reranker prompts with ~20-token completions, and short generator records), built into a temporary folder unless
--data names one. Each round runs the SFT stage for --steps steps in a fresh process per mode, alternating; the first
step (warm-up) is left out of the mean.

    python benchmarks/sft_step.py [--steps 5] [--rounds 2] [--data outputs/evidence/dynamicrag/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_report  # benchmarks/report.py (this folder is sys.path[0])

ROOT = Path(__file__).resolve().parents[1]


def worker(mode: str, data: str, steps: int, output_dir: str) -> None:
    import runpy

    import trl
    from transformers import TrainerCallback

    import retrieval_policies.common.training as training

    if mode == "full":
        training.compact_fused_lm_head = lambda: None  # sft.py imports the name: TRL's own choice stays
    seconds, losses = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds.append(time.perf_counter() - self.start)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    init = trl.SFTTrainer.__init__

    def timed_init(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Timer()]
        init(self, *args, **kwargs)

    trl.SFTTrainer.__init__ = timed_init
    sys.argv = [
        "sft.py",
        "--config",
        str(ROOT / "recipes/dynamicrag/SmolLM2-135M-Instruct/config_evidence_sft.yaml"),
        "--dataset_name",
        data,
        "--output_dir",
        output_dir,
        "--max_steps",
        str(steps),
        "--report_to",
        "none",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
    ]
    runpy.run_path(str(ROOT / "recipes/dynamicrag/sft.py"), run_name="__main__")
    print("RESULT " + json.dumps({"mode": mode, "seconds": seconds, "losses": losses}), flush=True)


def build_data(folder: Path) -> None:
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "recipes/dynamicrag/evidence.py")
    evidence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evidence)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "dataset_builders/dynamicrag_training.py"),
            "--source",
            "cloze",
            *evidence.FIRST_STAGE,
            *evidence.BEHAVIOUR_CLONING,
            "--tokenizer",
            evidence.MODEL,
            "--max-seq-length",
            "1024",
            "--output-dir",
            str(folder),
        ],
        check=True,
        cwd=ROOT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", help="the evidence run's data folder (default: build it into a temporary folder)")
    parser.add_argument("--worker", choices=["full", "compact"], help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.steps, args.output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(Path(tmp) / "data")
        if not args.data:
            build_data(Path(data))
        results = {"full": [], "compact": []}
        for round_ in range(args.rounds):
            for mode in ("full", "compact"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        mode,
                        "--data",
                        data,
                        "--steps",
                        str(args.steps),
                        "--output-dir",
                        str(Path(tmp) / f"{mode}-{round_}"),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if out.returncode or line is None:
                    sys.exit(f"{mode} worker failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
                result = json.loads(line[len("RESULT ") :])
                results[mode].append(result)
                print(
                    f"round {round_ + 1} {mode:7s}: steps 2..{args.steps} "
                    f"{', '.join(f'{s:.1f}' for s in result['seconds'][1:])} s; losses "
                    f"{', '.join(f'{loss:.4f}' for loss in result['losses'])}",
                    flush=True,
                )
    mean = {m: statistics.mean(s for r in rs for s in r["seconds"][1:]) for m, rs in results.items()}
    same = all(
        abs(a - b) <= 1e-3
        for f, c in zip(results["full"], results["compact"])
        for a, b in zip(f["losses"], c["losses"])
    )
    print(
        f"SFT step (batch of 4, evidence data): every position {mean['full']:.1f} s, labelled positions only "
        f"{mean['compact']:.1f} s: {mean['full'] / mean['compact']:.2f}x; logged losses equal: {same}"
    )
    write_report(
        "sft_step",
        {
            "steps": args.steps,
            "rounds": args.rounds,
            "every_position_s": round(mean["full"], 2),
            "labelled_positions_only_s": round(mean["compact"], 2),
            "ratio": round(mean["full"] / mean["compact"], 2),
            "same_losses": same,
        },
    )


if __name__ == "__main__":
    main()
