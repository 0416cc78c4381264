"""The package as its users install it: the sdist and wheel built from the checkout, ``twine check``ed, the wheel
installed into a fresh virtual environment outside the checkout, and every kind of CLI command run from a temporary
folder where nothing of the checkout is importable."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from testing_utils import ROOT, tiny_llama

from retrieval_policies.common.dataset_io import write_dataset_folder
from retrieval_policies.metrics import METRICS
from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    # the sdist, then the wheel built from the unpacked sdist (so the sdist is complete, and no stale build/ of the
    # checkout reaches the wheel); no isolation: the build backend (setuptools) is the environment's, none downloaded
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], out)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> dict:
    """A fresh venv holding the wheel; this environment's packages (torch and the rest) are visible after its own
    through a path file, but not its editable install of the checkout (path files there are not processed)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv.parent)
    (Path(purelib.stdout.strip()) / "tested-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(dist["wheel"])], venv.parent)
    workdir = tmp_path_factory.mktemp("elsewhere")  # not the checkout: nothing of it on the path
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RETRIEVAL_POLICIES_CARD_TEMPLATES")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = run([str(python), "-c", "import retrieval_policies; print(retrieval_policies.__file__)"], workdir, env)
    package = Path(where.stdout.strip()).parent  # the imported package's folder
    return {"python": str(python), "cli": str(venv / "bin" / "retrieval-policies"), "cwd": workdir, "env": env,
            "package": package}  # fmt: skip


def test_both_artifacts_pass_twine_check_and_the_wheel_holds_the_package_data(dist):
    run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])],
        dist["wheel"].parent,
    )
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    for template in ("grace.md", "dynamicrag.md", "dataset.md", "metric.md", "space.md"):
        assert f"retrieval_policies/templates/{template}" in names
    assert "retrieval_policies/metrics/metric_widget.py" in names
    assert {"local_hub/app.py", "local_hub/routes.py", "local_hub/transport.py"} <= names  # the Hub, its own package
    for metric in METRICS:
        for file in (f"{metric}.py", "README.md", "card.yaml", "app.py", "requirements.txt"):
            assert f"retrieval_policies/metrics/{metric}/{file}" in names
    assert not any("__pycache__" in name or name.startswith(("tests/", "scripts/", "recipes/")) for name in names)


def test_the_installed_package_is_the_wheel_and_reads_nothing_outside_it(installed):
    package = str(installed["package"])
    assert package.startswith(str(Path(installed["python"]).parents[1])) and str(ROOT) not in package
    text = run([installed["cli"], "--help"], installed["cwd"], installed["env"]).stdout
    for command in ("assets", "hub", "grace", "dynamicrag", "push"):
        assert command in text
    assets = run([installed["cli"], "assets", "list"], installed["cwd"], installed["env"]).stdout
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in assets


def test_packaged_metrics_load_and_compute(installed):
    code = """
import json, evaluate
from retrieval_policies.metrics import METRICS, metric_path
out = {name: evaluate.load(metric_path(name)).name for name in METRICS}
out["em"] = evaluate.load(metric_path("rag_answer")).compute(predictions=["Paris"], references=[["Paris"]])["exact_match"]
print(json.dumps(out))
"""
    result = run([installed["python"], "-c", code], installed["cwd"], installed["env"])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["em"] == 1.0 and set(out) == {*METRICS, "em"}


def test_cards_render_from_the_packaged_templates(installed, tokenizer, tmp_path):
    folder = tmp_path / "grace"
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(folder)
    code = """
import sys
from retrieval_policies.publishing.cards import render_grace_card
render_grace_card(sys.argv[1], "me/grace-tiny", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
"""
    run([installed["python"], "-c", code, str(folder)], installed["cwd"], installed["env"])
    card = (folder / "README.md").read_text()
    assert "me/grace-tiny" in card and "AutoModel.from_pretrained" in card


def test_dynamicrag_evaluate_runs_on_four_rows(installed, tokenizer, tmp_path):
    model = tmp_path / "dynamicrag"
    config = DynamicRAGConfig(max_passages=3, rerank_max_new_tokens=4, answer_max_new_tokens=4)
    DynamicRAGModel(tiny_llama(tokenizer), tokenizer, config).save_pretrained(model)
    rows = []
    for q, answer in enumerate(["Paris", "Rome", "Oslo", "Bern"]):
        ctxs = [{"id": str(i), "title": "", "text": f"filler {i}", "has_answer": False} for i in range(3)]
        ctxs[q % 3] = {"id": str(q % 3), "title": "", "text": f"The answer is {answer}.", "has_answer": True}
        rows.append({"id": f"q{q}", "question": f"question {q}?", "answers": [answer], "ctxs": ctxs})
    write_dataset_folder(tmp_path / "eval", {"mini": {"test": rows}}, pretty_name="mini", card_body="x", license="mit")
    command = [installed["cli"], "--quiet", "dynamicrag", "evaluate", "--model", str(model), "--data"]
    command += [str(tmp_path / "eval"), "--config", "mini", "--top-k", "1", "--output", str(tmp_path / "report.json")]
    result = run(command, installed["cwd"], installed["env"])
    assert "4 questions from" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["scores"]) == {"dynamicrag", "same-k", "top-1", "all"}


def test_grace_encode_runs_on_four_texts(installed, tokenizer, tmp_path):
    model = tmp_path / "grace"
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(model)
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "text": f"text number {i}"}) + "\n" for i in range(4)))
    command = [installed["cli"], "grace", "encode", "--model", str(model), "--data", str(data)]
    command += ["--output", str(tmp_path / "encoded"), "--batch-size", "2", "--no-progress"]
    run(command, installed["cwd"], installed["env"])
    manifest = json.loads((tmp_path / "encoded" / "manifest.json").read_text())
    assert manifest["rows"] == 4 and manifest["embedding_dim"] == 32


def test_a_packaged_metric_and_space_are_pushed_by_name_and_the_install_is_not_written_to(
    installed, tokenizer, tmp_path
):
    from local_hub import LocalHub
    from retrieval_policies.assets import DEFAULT_BASE_MODEL
    from retrieval_policies.publishing.cards import render_grace_card

    before = sorted(p.name for p in installed["package"].rglob("*") if "__pycache__" not in p.parts)
    with LocalHub(tmp_path / "hub", authenticated=True, user="me") as hub:
        env = {**hub.client_env(tmp_path / "hf_home"), "PATH": installed["env"]["PATH"]}
        env.pop("PYTHONPATH", None)
        result = run([installed["cli"], "push", "metric", "rag_answer", "me/rag_answer"], installed["cwd"], env)
        model = tmp_path / "grace"
        GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(model)
        render_grace_card(model, "me/grace", base_model=DEFAULT_BASE_MODEL)
        run([installed["cli"], "push", "model", str(model), "me/grace", "--no-verify"], installed["cwd"], env)
        space = run([installed["cli"], "push", "space", "grace", "me/grace-demo", "--model", "me/grace"],
                    installed["cwd"], env).stdout  # fmt: skip
    assert "pushed me/rag_answer@main" in result.stdout and '"name": "rag_answer"' in result.stdout
    assert "pushed me/grace-demo@main" in space and '"model": "me/grace"' in space
    after = sorted(p.name for p in installed["package"].rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # no .hub.json (nor anything else) written into the installed package


def test_hub_serve_rag_ask_and_grace_evaluate(installed, tokenizer, tmp_path):
    import urllib.request

    from retrieval_policies.corpora import iter_wikipedia_passages

    server = subprocess.Popen(
        [installed["cli"], "hub", "serve", "--root", str(tmp_path / "hub"), "--port", "0"],
        cwd=installed["cwd"],
        env=installed["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        body = json.dumps({"name": "served", "organization": "me", "type": "model"}).encode()
        request = urllib.request.Request(f"{url}/api/repos/create", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0

    generator = tmp_path / "generator"
    config = DynamicRAGConfig(answer_max_new_tokens=4)
    DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, config).save_pretrained(generator)
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": f"p{i}", "text": p.text} for i, p in zip(range(6), iter_wikipedia_passages())]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [installed["cli"], "rag", "ask", "--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache")]
    command += ["--generator", str(generator), "--top-k", "2", "--json", "What is anarchism?"]
    [answer] = json.loads(run(command, installed["cwd"], installed["env"]).stdout)
    assert len(answer["passages"]) == 2 and {p["id"] for p in answer["passages"]} <= {r["id"] for r in rows}

    grace = tmp_path / "grace"
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(grace)
    command = [installed["cli"], "grace", "evaluate", "--model", str(grace), "--tasks", "LocalLeeSTS"]
    command += ["--no-rationale", "--output-dir", str(tmp_path / "mteb")]
    result = run(command, installed["cwd"], installed["env"])
    assert next(line for line in result.stdout.splitlines() if line.startswith("LocalLeeSTS")).split()[1] == (
        "cosine_spearman"
    )
