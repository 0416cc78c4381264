"""Publishing: folder checks that refuse incomplete repos before uploading, dry runs, one-commit pushes through the
unmodified huggingface_hub client to the local Hub, verification in a process without the project (which catches a
repo whose code file was removed), retries on transient errors only, and the token never printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx2
import pytest
from testing_utils import PACKAGED_METRICS, PACKAGED_SPACES, tiny_llama
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder
from retrieval_policies.publishing.push import check_folder, files_to_upload, with_retries

ROOT = Path(__file__).resolve().parents[1]
CARD = "---\nlicense: apache-2.0\npipeline_tag: feature-extraction\nlibrary_name: transformers\n---\n\n# tiny GRACE\n"


@pytest.fixture
def grace_folder(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    folder = tmp_path / "grace"
    GraceEmbedder(tiny_llama(tokenizer), tokenizer, GraceConfig(max_new_tokens=4)).save_pretrained(folder)
    (folder / "README.md").write_text(CARD)
    return folder


def test_a_complete_model_folder_passes_and_each_missing_part_is_named(grace_folder):
    assert check_folder("model", grace_folder) == []
    (grace_folder / "configuration_grace.py").unlink()
    assert check_folder("model", grace_folder) == [
        "code file configuration_grace.py (imported by modeling_grace.py) is missing"
    ]
    (grace_folder / "modeling_grace.py").unlink()
    (grace_folder / "model.safetensors").unlink()
    (grace_folder / "tokenizer.json").unlink()
    (grace_folder / "README.md").write_text("---\npipeline_tag: feature-extraction\n---\n")
    problems = check_folder("model", grace_folder)
    assert "weights are missing (no *.safetensors or pytorch_model*.bin)" in problems
    assert any(p.startswith("tokenizer files are missing") for p in problems)
    assert "code file modeling_grace.py (auto_map AutoModel) is missing" in problems
    assert "card metadata has no 'license'" in problems


def test_dataset_and_metric_folders(tmp_path):
    assert check_folder("metric", PACKAGED_METRICS / "rag_answer") == []
    metric = shutil.copytree(PACKAGED_METRICS / "retrieval", tmp_path / "retrieval")
    (metric / "app.py").unlink()
    assert check_folder("metric", metric) == ["app_file app.py (named in the card) is missing"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text(
        "---\nlicense: other\nconfigs:\n- config_name: pairs\n  data_files:\n"
        "  - split: train\n    path: data/pairs/train.parquet\n---\n"
    )
    assert check_folder("dataset", data) == ["data file data/pairs/train.parquet (config 'pairs') is missing"]
    assert check_folder("dataset", tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} is not a folder"]


def test_caches_and_checkpoints_are_not_uploaded(grace_folder):
    (grace_folder / "checkpoint-5").mkdir()
    (grace_folder / "checkpoint-5" / "optimizer.pt").write_text("x")
    (grace_folder / "__pycache__").mkdir()
    (grace_folder / "__pycache__" / "m.pyc").write_text("x")
    names = [name for name, _ in files_to_upload(grace_folder)]
    assert "README.md" in names and "model.safetensors" in names
    assert not any(n.startswith(("checkpoint-5", "__pycache__")) for n in names)


def test_retries_only_transient_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise httpx2.ConnectError("connection refused")
        return "done"

    assert with_retries(flaky, what="test", delay=0) == "done" and len(calls) == 3
    calls.clear()

    def wrapped():  # huggingface_hub re-raises a failed upload as RuntimeError from the transport error
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("Error while uploading 'model.safetensors' to the Hub.") from httpx2.ReadError("reset")
        return "done"

    assert with_retries(wrapped, what="test", delay=0) == "done" and len(calls) == 2
    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("not an HTTP problem")

    with pytest.raises(ValueError):
        with_retries(broken, what="test", delay=0)
    assert len(calls) == 1


PUSH = """
import sys
from retrieval_policies.cli import main
sys.exit(main(["push", *sys.argv[1:]]))
"""


def test_push_refuses_an_incomplete_folder_and_uploads_nothing(client, grace_folder):
    (grace_folder / "model.safetensors").unlink()
    result = client(PUSH, "model", str(grace_folder), "demo/tiny-grace", check=False)
    assert result.returncode == 2 and "weights are missing" in result.stderr and "nothing was uploaded" in result.stderr
    assert (
        client.json(
            "import json; from huggingface_hub import HfApi; print(json.dumps(HfApi().repo_exists('demo/tiny-grace')))"
        )
        is False
    )


def test_dry_run_lists_and_uploads_nothing(client, grace_folder):
    out = client(PUSH, "model", str(grace_folder), "demo/tiny-grace", "--dry-run").stdout
    assert "would upload" in out and "  modeling_grace.py" in out and "  model.safetensors" in out
    assert (
        client.json(
            "import json; from huggingface_hub import HfApi; print(json.dumps(HfApi().repo_exists('demo/tiny-grace')))"
        )
        is False
    )


@pytest.mark.slow
def test_push_verifies_from_the_hub_and_catches_a_removed_code_file(client, grace_folder):
    result = client(PUSH, "model", str(grace_folder), "demo/tiny-grace", "--revision", "v1")
    out = result.stdout
    assert "pushed demo/tiny-grace@v1: commit " in out and "/demo/tiny-grace/commit/" in out
    verified = json.loads(out.split("verified from the Hub without retrieval-policies: ")[1].splitlines()[0])
    assert verified == {"class": "GraceEmbedder", "shape": [2, 32], "card_snippets_run": 0}
    assert "local-hub-token" not in result.stdout + result.stderr  # the token is never printed
    broken = client(
        """
        import json
        from huggingface_hub import HfApi
        from retrieval_policies.publishing.push import verify_repo
        HfApi().delete_file("modeling_grace.py", "demo/tiny-grace", revision="v1")
        try:
            verify_repo("model", "demo/tiny-grace", revision="v1")
        except RuntimeError as err:
            print(json.dumps({"caught": "does not load" in str(err)}))
    """,
        home="reader",
    )
    assert json.loads(broken.stdout.strip().splitlines()[-1]) == {"caught": True}


@pytest.mark.slow
def test_push_dataset_and_metric_and_load_them_back(client, tmp_path):
    from retrieval_policies.common.dataset_io import write_dataset_folder

    data = write_dataset_folder(
        tmp_path / "data",
        {"pairs": {"train": [{"a": 1}, {"a": 2}]}},
        pretty_name="t",
        card_body="test",
        license="other",
    )
    out = client(PUSH, "dataset", str(data), "demo/pairs").stdout
    assert '{"splits": {"train": 2}, "card_snippets_run": 0}' in out
    metrics = tmp_path / "metrics"  # a copy: a push records its repo id in the folder it pushed (.hub.json)
    shutil.copytree(PACKAGED_METRICS / "rag_answer", metrics / "rag_answer")
    shutil.copy(PACKAGED_METRICS / "metric_widget.py", metrics / "metric_widget.py")
    out = client(PUSH, "metric", str(metrics / "rag_answer"), "demo/rag_answer").stdout
    assert '"name": "rag_answer"' in out
    assert json.loads((metrics / "rag_answer" / ".hub.json").read_text())["repo_id"] == "demo/rag_answer"
    files = client.json(
        "import json; from huggingface_hub import HfApi; "
        "print(json.dumps(HfApi().list_repo_files('demo/rag_answer', repo_type='space')))"
    )
    assert "metric_widget.py" in files and ".hub.json" not in files  # the widget app.py imports travels with it


@pytest.mark.slow
def test_push_a_demo_space_names_its_model_and_runs_its_example_from_the_hub(client, grace_folder, tmp_path):
    assert "pushed " in client(PUSH, "model", str(grace_folder), "demo/tiny-grace", "--no-verify").stdout
    space = shutil.copytree(PACKAGED_SPACES / "grace", tmp_path / "spaces" / "grace")
    shutil.copy(PACKAGED_SPACES / "space_model.py", tmp_path / "spaces" / "space_model.py")
    refused = client(PUSH, "space", str(space), "demo/grace-space", check=False)
    assert refused.returncode == 2 and "--model" in refused.stderr  # argparse: the model repo is required
    out = client(PUSH, "space", str(space), "demo/grace-space", "--model", "demo/tiny-grace").stdout
    verified = json.loads(out.split("verified from the Hub without retrieval-policies: ")[1].splitlines()[0])
    assert verified == {
        "app": "app.py",
        "model": "demo/tiny-grace",
        "matrix": [3, 4],
        "rationales": 3,
        "explained": 2,
        "card_snippets_run": 0,
    }
    card = client.json(
        "import json; from huggingface_hub import ModelCard, hf_hub_download; "
        "print(json.dumps(ModelCard.load('demo/grace-space', repo_type='space').data.to_dict()))"
    )
    assert card["models"] == ["demo/tiny-grace"] and card["sdk"] == "gradio" and card["app_file"] == "app.py"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path):
    import subprocess
    import sys
    import time

    from local_hub import hub_client_env

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "retrieval_policies.cli", "hub", "serve", "--root", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx2.get(f"{url}/api/models", timeout=1)
            break
        except httpx2.TransportError:
            time.sleep(0.05)
    return server, lambda home: hub_client_env(url, root.parent / f"hf_home_{home}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a temporary file that was just renamed into place
        return 0


HEAD = """
import hashlib, json
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
files = sorted(api.list_repo_files("demo/tiny-grace"))
weights = open(hf_hub_download("demo/tiny-grace", "model.safetensors"), "rb").read()
print(json.dumps({"sha": api.model_info("demo/tiny-grace").sha, "files": files, "weights": hashlib.sha256(weights).hexdigest()}))
"""


@pytest.mark.slow
def test_a_push_cut_off_by_the_server_stopping_leaves_the_previous_revision_served(grace_folder, tmp_path):
    """The server is killed while the second push is uploading; restarted, it still serves the first commit, whole."""
    import hashlib
    import os
    import subprocess
    import sys
    import time

    root = tmp_path / "hub"

    def run(code, env, *args):
        return subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
        )

    server, env_for = _serve(root)
    try:
        first = run(PUSH, env_for("writer"), "model", str(grace_folder), "demo/tiny-grace", "--no-verify")
        assert first.returncode == 0, first.stderr[-3000:]
        before = json.loads(run(HEAD, env_for("reader1")).stdout.strip().splitlines()[-1])
        assert before["weights"] == hashlib.sha256((grace_folder / "model.safetensors").read_bytes()).hexdigest()

        # the second push changes the weights and adds a large file; the server dies while it is being uploaded
        from safetensors.torch import load_file, save_file

        weights = {k: v + 1 for k, v in load_file(grace_folder / "model.safetensors").items()}
        save_file(weights, grace_folder / "model.safetensors", metadata={"format": "pt"})
        (grace_folder / "extra.bin").write_bytes(os.urandom(256 << 20))
        second = subprocess.Popen(
            [sys.executable, "-c", PUSH, "model", str(grace_folder), "demo/tiny-grace", "--no-verify"],
            env=env_for("writer"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        while not any(_size(p) > (1 << 20) for p in (root / "tmp").iterdir()):
            assert second.poll() is None, (
                f"the second push ended before the server was stopped:\n{second.communicate()}"
            )
            time.sleep(0.005)
        server.kill()
        server.wait()
        out, err = second.communicate(timeout=300)
        assert second.returncode != 0 and "Traceback" in err  # the push failed ...
    finally:
        server.kill()
        server.wait()

    server, env_for = _serve(root)  # ... and the restarted server serves the first revision, unchanged
    try:
        after = json.loads(run(HEAD, env_for("reader2")).stdout.strip().splitlines()[-1])
        assert after == before and "extra.bin" not in after["files"]
    finally:
        server.kill()
        server.wait()
