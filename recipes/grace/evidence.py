"""`make evidence-grace`: does GRACE training make SmolLM2 a better embedder on this CPU? (at most 90 minutes, resumable)

1. 990 WordNet definition triplets (definition -> its synset's words; the builder's `wordnet-definitions` source, the
   evaluation's held-out synsets never among them) and 110 for validation (the choices in the config were made on
   these, `grace evaluate --validation-data`, never on the test tasks);
2. the untrained SmolLM2 on the local tasks with the evidence config's prompt and greedy decoding;
3. the CPU evidence recipe (`recipes/grace/SmolLM2-135M-Instruct/config_evidence.yaml`) with two seeds;
4. each trained model on the same tasks with the same prompt and decoding;
5. `recipes/evidence/grace.json`: before (untrained), after (mean of the seeds), the run-to-run noise (the two
   seeds' difference per task), the criteria, the rationale length over training.

Criteria: the held-out `LocalWordNetDefinitionRetrieval` nDCG@10 of both seeds above the untrained model's, and no
other local task lowered by more than its run-to-run noise. Every stage that has its output is skipped, so an
interrupted run continues where it stopped (GRPO resumes from its last checkpoint).

    python recipes/grace/evidence.py [--output-dir outputs/evidence/grace] [--seeds 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "recipes" / "grace" / "SmolLM2-135M-Instruct" / "config_evidence.yaml"
HELD_OUT = "LocalWordNetDefinitionRetrieval"
TASKS = ("LocalWordNetDefinitionRetrieval", "LocalWikipediaSectionRetrieval", "LocalLeeSTS")


def training_log(run: Path) -> list[dict]:
    """TRL's log history of a run: the latest checkpoint's trainer_state.json."""
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def main(argv: list[str] | None = None) -> int:
    import yaml

    sys.path.insert(0, str(ROOT))  # the checkout's scripts/: the runner and the JSON it writes
    from retrieval_policies.publishing.cards import mteb_results
    from scripts import evidence

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/evidence/grace")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--eval-max-new-tokens", type=int, default=64)
    # 64 texts per generate call: on this CPU decoding runs at 1.4x the tokens/s of batch 8 (benchmarks/grace_encode.py
    # (c)), and the three evaluations were most of the run's wall time (a run at batch 8, at 022a6f5, took 122 minutes)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--evidence-dir", default=str(evidence.EVIDENCE_DIR), help="where grace.json is written")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    logs = out / "logs"
    config = yaml.safe_load(CONFIG.read_text())
    stage = evidence.Stages(logs, cwd=ROOT)

    data = out / "data"
    stage.run(
        "data",
        data / "README.md",
        [
            sys.executable,
            "dataset_builders/grace_triplets.py",
            "--source",
            "offline",
            "--offline-sources",
            "wordnet-definitions",
            "--max-rows",
            "1100",
            "--validation-share",
            "0.1",
            "--output-dir",
            str(data),
        ],
    )
    decoding = [
        "--tasks",
        *TASKS,
        "--temperature",
        "0",
        "--max-new-tokens",
        str(args.eval_max_new_tokens),
        "--system-prompt",
        config["system_prompt"],
        "--batch-size",
        str(args.eval_batch_size),
    ]
    evaluate = [sys.executable, "-m", "retrieval_policies.cli", "grace", "evaluate"]
    stage.run(
        "evaluate untrained",
        out / "eval" / "untrained" / "done",
        [
            *evaluate,
            "--model",
            config["model_name_or_path"],
            "--name",
            "local/untrained",
            "--output-dir",
            str(out / "eval" / "untrained"),
            *decoding,
        ],
    )
    for seed in args.seeds:
        run = out / f"seed-{seed}"
        stage.run(
            f"train seed {seed}",
            run / "grace_config.json",
            [
                sys.executable,
                "recipes/grace/grpo.py",
                "--config",
                str(CONFIG),
                "--dataset_name",
                str(data),
                "--output_dir",
                str(run),
                "--seed",
                str(seed),
            ],
        )
        stage.run(
            f"evaluate seed {seed}",
            out / "eval" / f"seed-{seed}" / "done",
            [
                *evaluate,
                "--model",
                str(run),
                "--name",
                f"local/seed-{seed}",
                "--output-dir",
                str(out / "eval" / f"seed-{seed}"),
                *decoding,
            ],
        )

    def scores(name: str) -> dict[str, float]:
        return {r["task"]: r["score"] for r in mteb_results(out / "eval" / name)}

    before = scores("untrained")
    seeds = {seed: scores(f"seed-{seed}") for seed in args.seeds}
    after = {task: statistics.fmean(s[task] for s in seeds.values()) for task in TASKS}
    noise = {task: max(s[task] for s in seeds.values()) - min(s[task] for s in seeds.values()) for task in TASKS}
    criteria = {
        f"{HELD_OUT} above untrained for every seed": all(s[HELD_OUT] > before[HELD_OUT] for s in seeds.values())
    }
    for task in TASKS:
        if task != HELD_OUT:
            criteria[f"{task} not lowered beyond run-to-run noise"] = before[task] - after[task] <= noise[task]
    runs = {}
    for seed in args.seeds:
        history = training_log(out / f"seed-{seed}")
        runs[f"seed-{seed}"] = {
            "scores": seeds[seed],
            "rationale_tokens": [h["grace/rationale_tokens"] for h in history if "grace/rationale_tokens" in h],
            "negative_similarity": [
                h["grace/negative_similarity"] for h in history if "grace/negative_similarity" in h
            ],
            "truncated_share": [
                h["grace/length_penalised_share"] for h in history if "grace/length_penalised_share" in h
            ],
        }
    report = {
        "before": before,
        "after": after,
        "noise": noise,
        "criteria": criteria,
        "criteria_met": all(criteria.values()),
        "seeds": list(args.seeds),
        "command": "make evidence-grace",
        "config": config,
        "decoding": {"temperature": 0, "max_new_tokens": args.eval_max_new_tokens, "batch_size": args.eval_batch_size},
        "runs": runs,
    }
    evidence.finish("grace", report, stage, Path(args.evidence_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
