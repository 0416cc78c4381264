"""`grace encode` of the Wikipedia passages: 2 processes x 1 thread (torchrun, one slice each) against 1 process x 2
threads, measured in one run on the same corpus and settings; prints texts/s of each and the ratio.

    .venv/bin/python benchmarks/grace_encode_processes.py [--limit N] [--rationale --max-new-tokens 16]

Both runs write to fresh folders and their vectors are compared (the split must not change a vector). Run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, help="first N passages only (default: all 4,957)")
    parser.add_argument("--rationale", action="store_true", help="generate rationales (default: prompt only)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from retrieval_policies.corpora import iter_wikipedia_passages
    from retrieval_policies.retrieval.encoded import load_encoded

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        passages = list(iter_wikipedia_passages())[: args.limit]
        data = tmp / "passages.jsonl"
        data.write_text("".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in passages))
        common = [
            "grace",
            "encode",
            "--model",
            args.model,
            "--data",
            str(data),
            "--batch-size",
            str(args.batch_size),
            "--shard-size",
            "256",
            "--no-progress",
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ]
        common += (
            ["--temperature", "0", "--max-new-tokens", str(args.max_new_tokens)]
            if args.rationale
            else ["--no-rationale"]
        )
        one = run(
            [sys.executable, "-m", "retrieval_policies.cli", "--quiet", *common, "--output", str(tmp / "one")],
            threads=2,
        )
        two = run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "retrieval_policies.cli",
                "--quiet",
                *common,
                "--output",
                str(tmp / "two"),
            ],
            threads=1,
        )
        a, b = load_encoded(tmp / "one")[1], load_encoded(tmp / "two")[1]
        n = len(passages)
        print(
            f"grace encode, {n} Wikipedia passages, {f'rationales of <= {args.max_new_tokens} tokens' if args.rationale else 'prompt only'}, "
            f"batch {args.batch_size}"
        )
        print(f"  1 process  x 2 threads: {n / one:6.2f} texts/s ({one:.0f} s, model loading included)")
        print(f"  2 processes x 1 thread: {n / two:6.2f} texts/s ({two:.0f} s, model loading included)")
        print(
            f"  ratio 2x1 / 1x2: {one / two:.2f}x; max |difference| between the two outputs: {np.abs(a - b).max():.2e}"
        )
        write_report(
            "grace_encode_processes",
            {
                "texts": n,
                "rationale": bool(args.rationale),
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "one_process_two_threads_s": round(one, 1),
                "two_processes_one_thread_s": round(two, 1),
                "ratio": round(one / two, 2),
                "max_difference": float(np.abs(a - b).max()),
            },
        )


if __name__ == "__main__":
    main()
