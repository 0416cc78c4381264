"""The code blocks marked ``<!-- runnable -->`` in the README and the docs run as written (so a quickstart cannot
rot), and the docs' rendered tables come from the committed JSON."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testing_utils import ROOT

from scripts import docs_tables, evidence

MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w+)\s*$")


def runnable_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of every fenced block right after a runnable marker; a marker not followed by a
    python or bash block is an error naming the file and line."""
    lines, blocks = path.read_text().splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not fence or fence.group(1) not in ("python", "bash"):
            raise ValueError(f"{path}:{i + 1}: {MARKER} must be followed by a ```python or ```bash block")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append((fence.group(1), "\n".join(lines[i + 2 : end]) + "\n", i + 3))
    return blocks


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
WITH_BLOCKS = [p for p in DOCUMENTS if runnable_blocks(p)]


def test_the_readme_quickstarts_are_runnable_blocks():
    """The four quickstarts (embed, rerank and answer, train, publish) stay marked, so the slow test runs them."""
    blocks = runnable_blocks(ROOT / "README.md")
    text = "\n".join(code for _, code, _ in blocks)
    for needle in ("grace.encode(", "model.rerank(", "accelerate launch", "push model", "AutoModel.from_pretrained"):
        assert needle in text, needle


def test_a_marker_without_a_block_names_the_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"text\n{MARKER}\nnot a fence\n")
    with pytest.raises(ValueError, match=r"page.md:2"):
        runnable_blocks(page)


@pytest.mark.slow
@pytest.mark.parametrize("document", WITH_BLOCKS, ids=[str(p.relative_to(ROOT)) for p in WITH_BLOCKS])
def test_runnable_blocks_run_as_written(document, tmp_path):
    """Each block of a page runs in order in one working folder (the checkout's recipes and builders linked in),
    against the real SmolLM2 and a local Hub whose token belongs to the user ``me``."""
    from local_hub import LocalHub
    from local_hub.auth import add_token

    work = tmp_path / "work"
    work.mkdir()
    for name in ("recipes", "dataset_builders", "docs"):
        (work / name).symlink_to(ROOT / name)
    tokens = tmp_path / "hub.tokens"
    token = add_token(tokens, "me", "write")
    with LocalHub(tmp_path / "hub", token_file=tokens) as hub:
        env = {
            **hub.client_env(tmp_path / "hf_home", token=token, base=os.environ),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        }
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        for language, code, line in runnable_blocks(document):
            command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{document.name}:{line} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def test_benchmark_tables_render_every_value_with_its_caption(tmp_path):
    table = docs_tables.benchmark_table("benchmarks/results/vllm_vs_hf.json")
    assert "| generate_64x64 |" not in table and "**dynamicrag_eval**" in table
    assert "| ratio | 2.05 |" in table  # a nested value, by its key
    assert "from `benchmarks/results/vllm_vs_hf.json`, measured " in table.splitlines()[-1]


def test_evidence_markers_render_the_committed_json():
    page = "before\n<!-- render evidence grace -->\nafter"
    rendered = docs_tables.render_markers(page, "page.md")
    assert evidence.table(evidence.load("grace")) in rendered and rendered.startswith("before\n")
    with pytest.raises(ValueError, match=r"page.md: .* names benchmarks/results/missing.json"):
        docs_tables.render_markers("<!-- render benchmarks/results/missing.json -->", "page.md")
