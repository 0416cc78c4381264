"""`make evidence-grace`: does GRACE training make SmolLM2 a better embedder on this CPU? (at most 90 minutes, resumable)

1. 990 WordNet definition triplets (definition -> its synset's words; the builder's `wordnet-definitions` source, the
   evaluation's held-out synsets never among them) and 110 for validation (the choices in the config were made on
   these, `grace evaluate --validation-data`, never on the test tasks);
2. the untrained SmolLM2 in its three configurations, all with the evidence decoding (greedy, 64 new tokens): the
   evidence config's short prompt, the published GRACE prompt, and no rationale at all;
3. the CPU evidence recipe (`recipes/grace/SmolLM2-135M-Instruct/config_evidence.yaml`: GRACE with a per-member
   contrastive reward, a named deviation) with three seeds;
4. each trained model on the same tasks with the short prompt and the same decoding;
5. `recipes/evidence/grace.json`: before (the best untrained configuration per task), after (the seeds' mean), per
   task the seeds' mean difference from that baseline with its 95% paired bootstrap interval over queries (over
   pairs for LeeSTS) and the sign test over queries, the seeds' spread, the criteria, the weights' provenance, the
   rationale length over training.

The tasks: `LocalWordNetDefinitionRetrieval` (held-out items of the training source), `LocalFoldocDefinitionRetrieval`
(a source no training data touches: transfer), `LocalWikipediaSectionRetrieval` and `LocalLeeSTS` (other shapes).
Criteria: the 95% interval of the WordNet gain over the best untrained configuration lies above 0 (the headline);
the same for FOLDOC (transfer); on the other two tasks the interval's upper bound is not below 0 (not lowered).
Every stage that has its output is skipped, so an interrupted run continues where it stopped (GRPO resumes from its
last checkpoint).

    python recipes/grace/evidence.py [--output-dir outputs/evidence/grace] [--seeds 1 2 3]
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
TRANSFER = "LocalFoldocDefinitionRetrieval"
TASKS = (HELD_OUT, TRANSFER, "LocalWikipediaSectionRetrieval", "LocalLeeSTS")
# the untrained model's configurations (name -> `grace evaluate` options besides the decoding); the claim is made
# against the best of them on each task
BASELINES = {
    "short prompt": "config",  # the evidence config's system prompt, as the trained models are evaluated
    "published prompt": None,  # GraceConfig's default: the paper's instruction
    "no rationale": "none",
}


def objective(config: dict) -> str:
    """The trained objective's name, with its named deviations from the published method."""
    from retrieval_policies.grace.rewards import objective_name

    return objective_name(config.get("contrastive", "group"), config.get("truncation", "penalty"))


def training_log(run: Path) -> list[dict]:
    """TRL's log history of a run: the latest checkpoint's trainer_state.json."""
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def criteria_of(comparisons: dict) -> dict[str, bool]:
    criteria = {
        f"{HELD_OUT}: the 95% CI of the gain over the best untrained configuration above 0": comparisons[HELD_OUT][
            "ci95"
        ][0]
        > 0,
        f"{TRANSFER} (unseen source): the 95% CI of the gain above 0": comparisons[TRANSFER]["ci95"][0] > 0,
    }
    for task in TASKS[2:]:
        criteria[f"{task}: not lowered (the 95% CI's upper bound >= 0)"] = comparisons[task]["ci95"][1] >= 0
    return criteria


def main(argv: list[str] | None = None) -> int:
    import yaml

    sys.path.insert(0, str(ROOT))  # the checkout's scripts/: the runner and the JSON it writes
    from retrieval_policies.evaluation.paired import compare
    from retrieval_policies.publishing.cards import mteb_results
    from scripts import evidence

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/evidence/grace")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-max-new-tokens", type=int, default=64)
    # 64 texts per generate call: on this CPU decoding runs at 1.4x the tokens/s of batch 8 (benchmarks/grace_encode.py
    # (c)), and the evaluations are most of the run's wall time (a run at batch 8, at 022a6f5, took 122 minutes)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples per interval")
    parser.add_argument("--evidence-dir", default=str(evidence.EVIDENCE_DIR), help="where grace.json is written")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    config = yaml.safe_load(CONFIG.read_text())
    stage = evidence.Stages(out / "logs", cwd=ROOT)

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
        "--batch-size",
        str(args.eval_batch_size),
    ]
    short_prompt = ["--system-prompt", config["system_prompt"]]

    def evaluate(name: str, model: str, options: list[str]) -> Path:
        folder = out / "eval" / name
        stage.run(
            f"evaluate {name}",
            folder / "done",
            [
                sys.executable,
                "-m",
                "retrieval_policies.cli",
                "grace",
                "evaluate",
                "--model",
                model,
                "--name",
                f"local/{name}",
                "--output-dir",
                str(folder),
                "--predictions-dir",
                str(folder / "predictions"),
                *decoding,
                *options,
            ],
        )
        return folder

    baseline_folders = {}
    for label, kind in BASELINES.items():
        options = short_prompt if kind == "config" else ["--no-rationale"] if kind == "none" else []
        baseline_folders[label] = evaluate(
            f"untrained-{label.replace(' ', '-')}", config["model_name_or_path"], options
        )
    seed_folders = {}
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
        seed_folders[seed] = evaluate(f"seed-{seed}", str(run), short_prompt)

    def scores(folder: Path) -> dict[str, float]:
        return {r["task"]: r["score"] for r in mteb_results(folder)}

    baselines = {label: scores(folder) for label, folder in baseline_folders.items()}
    seeds = {seed: scores(folder) for seed, folder in seed_folders.items()}
    best = {task: max(baselines, key=lambda label: baselines[label][task]) for task in TASKS}
    before = {task: baselines[best[task]][task] for task in TASKS}
    after = {task: statistics.fmean(s[task] for s in seeds.values()) for task in TASKS}
    comparisons = {
        task: {
            "baseline": best[task],
            **compare(
                task,
                baseline_folders[best[task]] / "predictions",
                [folder / "predictions" for folder in seed_folders.values()],
                resamples=args.resamples,
            ),
        }
        for task in TASKS
    }
    criteria = criteria_of(comparisons)
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
        "before_label": "the best untrained configuration per task",
        "after_label": f"the mean of {len(args.seeds)} seeds",
        "baselines": baselines,
        "comparisons": comparisons,
        "noise": {task: statistics.stdev(s[task] for s in seeds.values()) if len(seeds) > 1 else 0.0 for task in TASKS},
        "criteria": criteria,
        "criteria_met": all(criteria.values()),
        "headline": f"{HELD_OUT}: the 95% CI of the gain over the best untrained configuration above 0",
        "seeds": list(args.seeds),
        "command": "make evidence-grace",
        "provenance": {"weights": evidence.PACKAGED_WEIGHTS, "objective": objective(config)},
        "config": config,
        "decoding": {"temperature": 0, "max_new_tokens": args.eval_max_new_tokens, "batch_size": args.eval_batch_size},
        "runs": runs,
    }
    evidence.finish("grace", report, stage, Path(args.evidence_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
