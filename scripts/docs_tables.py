"""Markdown tables rendered from the committed JSON (``benchmarks/results/*.json``, ``recipes/evidence/*.json``),
so the docs never hold a pasted measurement. The docs build calls these through ``docs/hooks.py``; each table's
caption names its file, the date it was measured and the commit that holds it, once."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from scripts import evidence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# <!-- render benchmarks/results/vllm_vs_hf.json --> or <!-- render evidence grace -->
MARKER = re.compile(r"^<!--\s*render\s+(\S+)(?:\s+(\S+))?\s*-->[ \t]*$", re.MULTILINE)  # on a line of its own


def committed(path: Path) -> tuple[str, str] | None:
    """(short hash, date) of the last commit that changed ``path``; None outside a checkout or when uncommitted."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs", "--", str(path)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return (out[0], out[1]) if len(out) == 2 else None


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_cell(v) for v in value)
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _pairs(rows: dict) -> list[str]:
    return ["| measure | value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows.items())]


def _records(records: list[dict]) -> list[str]:
    flat = [_flatten(r) for r in records]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in flat]
    return lines


def caption(path: Path, measured: str | None = None, ran_at: str | None = None) -> str:
    rel = path.resolve().relative_to(PROJECT_ROOT)
    commit = committed(path)
    parts = [f"from `{rel}`"]
    if measured:
        parts.append(f"measured {measured}")
    if ran_at:
        parts.append(f"run at `{ran_at[:12]}`")
    parts.append(f"committed at `{commit[0]}` ({commit[1]})" if commit else "not committed yet")
    return "*" + ", ".join(parts) + ".*"


def benchmark_table(path: str | Path) -> str:
    """One table of the file's top-level values, then one per nested object or list of records."""
    path = PROJECT_ROOT / path
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot render a table from it ({error})") from error
    measured = data.pop("date", None)
    top = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_records(v)}
    lines = _pairs(top) if top else []
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"**{key}**", "", *_pairs(_flatten(value))]
        elif _is_records(value):
            lines += ["", f"**{key}**", "", *_records(value)]
    return "\n".join([*lines, "", caption(path, measured)])


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def evidence_table(method: str) -> str:
    data = evidence.load(method)
    if data is None:
        return f"No evidence run of {method} is committed yet (`make evidence-{method}`)."
    return evidence.table(data) + "\n\n" + caption(evidence.EVIDENCE_DIR / f"{method}.json", ran_at=data["commit"])


def render_markers(markdown: str, source: str = "page") -> str:
    """Replace every render marker in ``markdown``; an unknown file is an error naming the page and the marker."""

    def replace(match: re.Match) -> str:
        what, arg = match.group(1), match.group(2)
        if what == "evidence":
            if arg not in evidence.METHODS:
                raise ValueError(f"{source}: unknown evidence method {arg!r} in {match.group(0)}")
            return evidence_table(arg)
        if not (PROJECT_ROOT / what).is_file():
            raise ValueError(f"{source}: {match.group(0)} names {what}, which does not exist")
        return benchmark_table(what)

    return MARKER.sub(replace, markdown)
