"""Publishing folders as Hub repos: models (GRACE / DynamicRAG repos), datasets (Parquet + card) and `evaluate`
metrics (Spaces).

Before anything is uploaded the folder is checked and refused, naming what is missing; the upload is one commit
(`upload_folder`), so a failed push leaves the previous revision as it was; transient HTTP errors are retried with
back-off; afterwards the repo is loaded back from the Hub in a fresh process where this project is not importable.
The token is never printed or logged: errors are reported by status code and message only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)
KINDS = {"model": "model", "dataset": "dataset", "metric": "space", "space": "space"}
IGNORE = [".git/*", "__pycache__/*", "**/__pycache__/*", "checkpoint-*/*", "*.lock", ".*"]


class IncompleteFolderError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------- checks
def _card_metadata(folder: Path, problems: list[str]) -> dict:
    readme = folder / "README.md"
    if not readme.is_file():
        problems.append("README.md (the card) is missing")
        return {}
    text = readme.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if match is None:
        problems.append("README.md has no YAML metadata block (--- ... ---)")
        return {}
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        problems.append(f"README.md metadata is not valid YAML: {err}")
        return {}
    if not isinstance(data, dict):
        problems.append("README.md metadata is not a mapping")
        return {}
    return data


def model_problems(folder: Path) -> list[str]:
    problems: list[str] = []
    config_file = folder / "config.json"
    config = {}
    if not config_file.is_file():
        problems.append("config.json is missing")
    else:
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"config.json is not JSON: {err}")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        problems += [
            f"weight shard {s} (named in {index.name}) is missing" for s in sorted(shards) if not (folder / s).is_file()
        ]
    elif not list(folder.glob("*.safetensors")) and not list(folder.glob("pytorch_model*.bin")):
        problems.append("weights are missing (no *.safetensors or pytorch_model*.bin)")
    if not (folder / "tokenizer_config.json").is_file() or not any(
        (folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")
    ):
        problems.append(
            "tokenizer files are missing (tokenizer_config.json and tokenizer.json / tokenizer.model / vocab.json)"
        )
    for auto_class, reference in (config.get("auto_map") or {}).items():
        module = reference.split("--")[-1].split(".")[0] + ".py"
        path = folder / module
        if not path.is_file():
            problems.append(f"code file {module} (auto_map {auto_class}) is missing")
            continue
        for sibling in re.findall(r"^from \.(\w+) import", path.read_text(encoding="utf-8"), re.MULTILINE):
            if not (folder / f"{sibling}.py").is_file():
                problems.append(f"code file {sibling}.py (imported by {module}) is missing")
    metadata = _card_metadata(folder, problems)
    if metadata:
        problems += [f"card metadata has no {key!r}" for key in ("license", "pipeline_tag") if not metadata.get(key)]
        if "model-index" in metadata:
            try:
                from huggingface_hub.repocard_data import model_index_to_eval_results

                model_index_to_eval_results(metadata["model-index"])
            except Exception as err:  # noqa: BLE001 - any malformed model-index
                problems.append(f"card model-index does not validate: {err}")
    return sorted(set(problems), key=problems.index)


def dataset_problems(folder: Path) -> list[str]:
    problems: list[str] = []
    metadata = _card_metadata(folder, problems)
    if metadata:
        if not metadata.get("license"):
            problems.append("card metadata has no 'license'")
        configs = metadata.get("configs") or []
        if not configs:
            problems.append("card metadata has no 'configs' (config_name + data_files)")
        for config in configs:
            for entry in config.get("data_files") or []:
                paths = entry.get("path") if isinstance(entry, dict) else entry
                for path in [paths] if isinstance(paths, str) else paths:
                    if not list(folder.glob(path)):
                        problems.append(f"data file {path} (config {config.get('config_name')!r}) is missing")
    return problems


def metric_problems(folder: Path) -> list[str]:
    problems: list[str] = []
    module = folder / f"{folder.name}.py"
    if not module.is_file():
        problems.append(f"metric module {module.name} is missing")
    elif "evaluate.Metric" not in module.read_text(encoding="utf-8"):
        problems.append(f"{module.name} defines no evaluate.Metric subclass")
    if not (folder / "requirements.txt").is_file():
        problems.append("requirements.txt is missing")
    metadata = _card_metadata(folder, problems)
    if metadata:
        if metadata.get("sdk") not in ("gradio", "streamlit", "static", "docker"):
            problems.append("card metadata has no valid Space 'sdk'")
        app = metadata.get("app_file")
        if app and not (folder / app).is_file():
            problems.append(f"app_file {app} (named in the card) is missing")
    return problems


def space_problems(folder: Path) -> list[str]:
    """A model's demo Space: its app, requirements, a Gradio card naming the model repo, and the repo in
    space_config.json (what the app loads)."""
    problems = [
        f"{name} is missing"
        for name in ("app.py", "space_model.py", "requirements.txt", "space_config.json")
        if not (folder / name).is_file()
    ]
    metadata = _card_metadata(folder, problems)
    if metadata:
        if metadata.get("sdk") != "gradio":
            problems.append("card metadata: 'sdk' must be gradio")
        if not metadata.get("models"):
            problems.append("card metadata names no model repo ('models')")
        elif (folder / "space_config.json").is_file():
            model = json.loads((folder / "space_config.json").read_text()).get("model")
            if model not in metadata["models"]:
                problems.append(
                    f"space_config.json's model {model!r} is not among the card's models {metadata['models']}"
                )
    return problems


CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "model": model_problems,
    "dataset": dataset_problems,
    "metric": metric_problems,
    "space": space_problems,
}


def check_folder(kind: str, folder: str | os.PathLike) -> list[str]:
    if kind not in CHECKS:
        raise ValueError(f"kind must be one of {sorted(CHECKS)}, got {kind!r}")
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    return CHECKS[kind](folder)


# ---------------------------------------------------------------------------------------------- upload
def _transient(err: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    transport = [ConnectionError, TimeoutError]
    try:  # huggingface_hub 2.x talks through httpx2; its transport errors are not builtin ConnectionErrors
        import httpx2

        transport.append(httpx2.TransportError)
    except ImportError:
        pass
    seen = 0
    while err is not None and seen < 5:  # huggingface_hub wraps a failed upload: RuntimeError from the transport error
        if isinstance(err, tuple(transport)):
            return True
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            return err.response.status_code in (408, 429) or err.response.status_code >= 500
        err, seen = err.__cause__, seen + 1
    return False


def with_retries(call: Callable, *, what: str, attempts: int = 4, delay: float = 1.0):
    """``call()``, retried with exponential back-off on transient HTTP errors only."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - filtered just below
            if attempt == attempts or not _transient(err):
                raise
            wait = delay * 2 ** (attempt - 1)
            status = getattr(getattr(err, "response", None), "status_code", None)
            logger.warning(
                "%s: transient error (%s%s), retrying in %.0f s (attempt %d/%d)",
                what,
                type(err).__name__,
                f" {status}" if status else "",
                wait,
                attempt + 1,
                attempts,
            )
            time.sleep(wait)


def files_to_upload(folder: Path) -> list[tuple[str, int]]:
    from fnmatch import fnmatch

    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(fnmatch(relative, pattern) or fnmatch(path.name, pattern) for pattern in IGNORE):
            out.append((relative, path.stat().st_size))
    return out


PACKAGE = Path(__file__).resolve().parents[1]


def _packaged(kind: str, folder: str | os.PathLike) -> Path:
    """``folder``, or the packaged metric / demo Space it names ("rag_answer", "grace") when no such path exists."""
    from ..metrics import METRICS, metric_path
    from ..spaces import SPACES, space_path

    if Path(folder).exists():
        return Path(folder)
    if kind == "metric" and str(folder) in METRICS:
        return Path(metric_path(str(folder)))
    if kind == "space" and str(folder) in SPACES:
        return Path(space_path(str(folder)))
    return Path(folder)


def push_folder(
    kind: str,
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    model: str | None = None,
) -> dict:
    """Check, then upload everything in one commit. Returns the files and, unless ``dry_run``, the commit and URL.

    A metric folder with a ``card.yaml`` is uploaded from a staging copy whose card is rendered for ``repo_id`` (its
    example then loads the Space it is shown on). After the upload the folder records its repo id (``.hub.json``,
    a dot file that no push uploads), unless it is a metric of the installed package (``folder`` may name one:
    ``rag_answer``), which stays as installed."""
    folder = _packaged(kind, folder)
    packaged = folder.resolve().is_relative_to(PACKAGE)  # an installed package is not written to
    if kind == "space":  # a model's demo Space (spaces/<kind>): staged with the model it shows and its card
        from .cards import SPACE_KINDS, render_space_card

        if not model:
            raise IncompleteFolderError(f"{folder}: a demo Space needs the model repo it shows (--model OWNER/NAME)")
        if folder.name not in SPACE_KINDS:
            raise IncompleteFolderError(
                f"{folder}: not a demo Space folder (its name must be one of {sorted(SPACE_KINDS)})"
            )
        with tempfile.TemporaryDirectory() as staging:
            staged = Path(staging) / folder.name
            shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("__pycache__", "*.png"))
            shared = folder.parent / "space_model.py"  # the model loader the app imports
            if shared.is_file():
                shutil.copy(shared, staged / shared.name)
            (staged / "space_config.json").write_text(json.dumps({"model": model}, indent=2) + "\n")
            render_space_card(staged, repo_id, model, folder.name)
            report = _push_checked(
                kind,
                staged,
                repo_id,
                revision=revision,
                private=private,
                dry_run=dry_run,
                commit_message=commit_message,
            )
    elif kind == "metric" and (folder / "card.yaml").is_file():
        from .cards import render_metric_card

        with tempfile.TemporaryDirectory() as staging:
            staged = Path(staging) / folder.name
            shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("__pycache__"))
            widget = folder.parent / "metric_widget.py"  # the Gradio widget the metric's app.py imports
            if widget.is_file():
                shutil.copy(widget, staged / widget.name)
            render_metric_card(staged, repo_id)
            report = _push_checked(
                kind,
                staged,
                repo_id,
                revision=revision,
                private=private,
                dry_run=dry_run,
                commit_message=commit_message,
            )
    else:
        if kind == "model" and folder.is_dir() and needs_own_card(folder):
            _render_missing_card(folder, repo_id)
        report = _push_checked(
            kind, folder, repo_id, revision=revision, private=private, dry_run=dry_run, commit_message=commit_message
        )
    if not dry_run and not packaged:  # later cards name this folder by its repo id (local_paths.portable_name)
        from ..common.local_paths import record_push

        record_push(folder, repo_id, kind=kind, revision=report["revision"], commit=report.get("commit"))
    return report


def needs_own_card(folder: Path) -> bool:
    """No README.md, or only the placeholder TRL's trainers write when they save (tagged ``trl``, not a card of this
    project): push and ``retrieval-policies card`` render the model's own card then, and keep any other."""
    folder = Path(folder)
    if not (folder / "README.md").exists():
        return True
    tags = _card_metadata(folder, []).get("tags") or []
    return isinstance(tags, list) and "trl" in tags and "retrieval-policies" not in tags


def _render_missing_card(folder: Path, repo_id: str) -> None:
    """A trained folder without a card gets one rendered from what it holds, as `retrieval-policies card` does."""
    from .cards import render_model_card

    try:
        render_model_card(folder, repo_id)
    except ValueError as err:
        raise IncompleteFolderError(
            f"README.md (the card) is missing and cannot be rendered from the folder: {err}. Render it with "
            f"`retrieval-policies card {folder} {repo_id} --base-model NAME`"
        ) from None
    print(f"{folder}: no card of its own, rendered README.md from the folder (`retrieval-policies card` refreshes it)")


def _push_checked(kind: str, folder: Path, repo_id: str, *, revision, private, dry_run, commit_message) -> dict:
    problems = check_folder(kind, folder)
    if problems:
        raise IncompleteFolderError(
            f"{folder} is not a complete {kind} repo; nothing was uploaded:\n  - " + "\n  - ".join(problems)
        )
    files = files_to_upload(folder)
    report = {
        "repo_id": repo_id,
        "kind": kind,
        "revision": revision or "main",
        "files": [f for f, _ in files],
        "bytes": sum(size for _, size in files),
    }
    if dry_run:
        return {**report, "dry_run": True}
    from huggingface_hub import HfApi

    api, repo_type = HfApi(), KINDS[kind]
    extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
    with_retries(
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra),
        what="create_repo",
    )
    if revision and revision != "main":
        with_retries(
            lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
            what="create_branch",
        )
    info = with_retries(
        lambda: api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            ignore_patterns=IGNORE,
            commit_message=commit_message or f"Upload {kind} from retrieval-policies",
        ),
        what="upload_folder",
    )
    return {**report, "commit": info.oid, "url": info.commit_url}


# ---------------------------------------------------------------------------------------------- verification
VERIFY = {
    "model": """
        from transformers import AutoModel
        model = AutoModel.from_pretrained(REPO, revision=REVISION, trust_remote_code=True)
        if hasattr(model, "encode"):
            vectors = model.encode(["A dog barked all night.", "Puppies bark."], max_new_tokens=8)
            result = {"class": type(model).__name__, "shape": list(vectors.shape)}
        else:
            out = model("Who wrote Hamlet?", ["Hamlet is a tragedy by William Shakespeare.", "Paris is in France."])
            result = {"class": type(model).__name__, "selected": out["indices"], "answer": out["answer"]}
    """,
    "dataset": """
        from datasets import load_dataset
        data = load_dataset(REPO, revision=REVISION)
        result = {"splits": {name: len(split) for name, split in data.items()}}
    """,
    "space": """
        import importlib.util
        from huggingface_hub import snapshot_download
        folder = snapshot_download(REPO, repo_type="space", revision=REVISION)
        sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location("space_app", folder + "/app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        result = {"app": "app.py", **app.check()}
    """,
    "metric": """
        import evaluate
        metric = evaluate.load(REPO, revision=REVISION)
        result = {"name": metric.name, "features": sorted(metric.features.keys()) if hasattr(metric.features, "keys") else str(metric.features)}
    """,
}


# The card's python blocks, run as written (those that need retrieval-policies itself are left to the tests).
RUN_CARD_SNIPPETS = """
    import re
    from huggingface_hub import hf_hub_download
    card = open(hf_hub_download(REPO, "README.md", repo_type=REPO_TYPE, revision=REVISION), encoding="utf-8").read()
    result["card_snippets_run"] = 0
    for number, block in enumerate(re.findall(r"^```python\\n(.*?)^```", card, re.DOTALL | re.MULTILINE), 1):
        if "retrieval_policies" not in block:
            exec(compile(block, f"<card snippet {number}>", "exec"), {"__name__": "__card__"})
            result["card_snippets_run"] += 1
"""


def verify_repo(
    kind: str, repo_id: str, *, revision: str | None = None, env: dict | None = None, timeout: int = 900
) -> dict:
    """Load the pushed repo from the Hub in a fresh process without this project importable and run its card's
    examples; returns what it saw."""
    code = (
        "import json, sys\nsys.modules['retrieval_policies'] = None\n"
        + f"REPO, REVISION, REPO_TYPE = {repo_id!r}, {revision!r}, {KINDS[kind]!r}\n"
        + textwrap.dedent(VERIFY[kind])
        + textwrap.dedent(RUN_CARD_SNIPPETS)
        + "print(json.dumps(result))\n"
    )
    if kind == "metric":  # evaluate.load takes a Space by its id with no revision argument
        code = code.replace("evaluate.load(REPO, revision=REVISION)", "evaluate.load(REPO)")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{repo_id} was pushed but does not load from the Hub without retrieval-policies:\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- command line
def hub_repo_id(text: str) -> str:
    """An argparse type: a repo id the Hub accepts, checked before anything is read or uploaded."""
    import argparse

    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub repo id (owner/name): {err}") from None
    return text


def add_push_arguments(parser, *, space: bool = False) -> None:
    parser.add_argument(
        "folder",
        help="the folder to publish; for a metric or a demo Space also a packaged one's name (rag_answer, grace)",
    )
    if space:
        parser.add_argument(
            "--model", required=True, type=hub_repo_id, help="the model repo the Space shows (named in its card)"
        )
    parser.add_argument(
        "repo_id", type=hub_repo_id, help="owner/name on the Hub (HF_ENDPOINT; the token from HF_TOKEN or the login)"
    )
    parser.add_argument("--revision", help="a branch to commit to (created if needed; default main)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the repo back in a fresh process")
    parser.add_argument("--commit-message")


def run_push(kind: str, args) -> int:
    try:
        report = push_folder(
            kind,
            args.folder,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            dry_run=args.dry_run,
            commit_message=args.commit_message,
            model=getattr(args, "model", None),
        )
    except IncompleteFolderError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    if report.get("dry_run"):
        print(
            f"would upload {len(report['files'])} files ({report['bytes'] / 1e6:.1f} MB) to {kind} repo {args.repo_id}"
            f"@{report['revision']}:"
        )
        print("\n".join(f"  {name}" for name in report["files"]))
        return 0
    print(f"pushed {args.repo_id}@{report['revision']}: commit {report['commit']} -> {report['url']}")
    if not args.no_verify:
        print(
            f"verified from the Hub without retrieval-policies: {json.dumps(verify_repo(kind, args.repo_id, revision=args.revision))}"
        )
    return 0
