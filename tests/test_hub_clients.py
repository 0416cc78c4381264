"""Round trips through the local Hub with the unmodified clients (huggingface_hub, transformers, datasets, evaluate)."""

from __future__ import annotations

import hashlib
import os

import pytest


def test_upload_folder_with_lfs_file_and_download(client, local_hub, tmp_path):
    folder = tmp_path / "to_upload"
    (folder / "weights").mkdir(parents=True)
    big = os.urandom(11 * 1024 * 1024)  # over the 10 MiB LFS threshold, and binary
    (folder / "weights" / "big.bin").write_bytes(big)
    (folder / "config.json").write_text('{"hidden": 4}')
    out = client.json(
        """
        import json, sys
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        url = api.create_repo("org/lfs-model")
        info = api.upload_folder(repo_id="org/lfs-model", folder_path=sys.argv[1], commit_message="weights")
        path = hf_hub_download("org/lfs-model", "weights/big.bin")
        siblings = {s.rfilename: s for s in api.model_info("org/lfs-model", files_metadata=True).siblings}
        print(json.dumps({"url": str(url), "commit": info.oid, "path": path,
                          "lfs_sha": siblings["weights/big.bin"].lfs.sha256, "cfg_lfs": siblings["config.json"].lfs is not None}))
    """,
        str(folder),
    )
    assert out["url"] == f"{local_hub.url}/org/lfs-model"
    with open(out["path"], "rb") as f:
        assert f.read() == big
    assert out["lfs_sha"] == hashlib.sha256(big).hexdigest()
    assert out["cfg_lfs"] is False
    # The server really stored it as an LFS object, on disk.
    repo = local_hub.storage.get_repo("model", "org/lfs-model")
    entry = local_hub.storage.resolve(repo, out["commit"]).files["weights/big.bin"]
    assert entry.lfs and local_hub.storage.blob_path(entry.sha256).stat().st_size == len(big)


def test_model_card_push_and_load(client):
    out = client.json("""
        import json
        from huggingface_hub import HfApi, ModelCard, ModelCardData
        HfApi().create_repo("org/carded")
        card = ModelCard.from_template(ModelCardData(license="apache-2.0", language="en", tags=["retrieval"]),
                                       model_id="carded", model_description="A card pushed to the local Hub.")
        card.push_to_hub("org/carded")
        loaded = ModelCard.load("org/carded")
        print(json.dumps({"license": loaded.data.license, "tags": loaded.data.tags,
                          "has_text": "A card pushed to the local Hub." in loaded.text}))
    """)
    assert out == {"license": "apache-2.0", "tags": ["retrieval"], "has_text": True}


def test_snapshot_download_of_an_older_revision_by_sha(client):
    out = client.json("""
        import json, os, tempfile
        from huggingface_hub import HfApi, snapshot_download
        api = HfApi()
        api.create_repo("org/versions")
        first = api.upload_file(path_or_fileobj=b"version one", path_in_repo="notes.txt", repo_id="org/versions").oid
        second = api.upload_file(path_or_fileobj=b"version two", path_in_repo="notes.txt", repo_id="org/versions").oid
        api.upload_file(path_or_fileobj=b"added later", path_in_repo="extra.txt", repo_id="org/versions")
        old = snapshot_download("org/versions", revision=first)
        new = snapshot_download("org/versions")
        read = lambda d, f: open(os.path.join(d, f)).read()
        print(json.dumps({"old": read(old, "notes.txt"), "old_files": sorted(os.listdir(old)),
                          "new": read(new, "notes.txt"), "new_files": sorted(os.listdir(new)), "distinct": first != second}))
    """)
    assert out["old"] == "version one" and "extra.txt" not in out["old_files"]
    assert out["new"] == "version two" and "extra.txt" in out["new_files"]
    assert out["distinct"]


TINY_MODELING = """
import torch
from transformers import PretrainedConfig, PreTrainedModel


class TinyEchoConfig(PretrainedConfig):
    model_type = "tiny-echo"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)


class TinyEchoModel(PreTrainedModel):
    config_class = TinyEchoConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)

    def describe(self):
        return f"tiny echo of width {self.config.width}"
"""


def test_automodel_with_trust_remote_code_from_the_hub(client, tmp_path):
    code_dir = tmp_path / "tiny_code"
    code_dir.mkdir()
    (code_dir / "modeling_tiny_echo.py").write_text(TINY_MODELING)
    pushed = client.json(
        """
        import json, sys, tempfile, torch
        sys.path.insert(0, sys.argv[1])
        from modeling_tiny_echo import TinyEchoConfig, TinyEchoModel
        TinyEchoConfig.register_for_auto_class()
        TinyEchoModel.register_for_auto_class("AutoModel")
        torch.manual_seed(0)
        model = TinyEchoModel(TinyEchoConfig(width=4))
        out = tempfile.mkdtemp()
        model.save_pretrained(out)
        from huggingface_hub import HfApi
        HfApi().create_repo("org/tiny-echo")
        HfApi().upload_folder(repo_id="org/tiny-echo", folder_path=out)
        print(json.dumps({"y": model(torch.ones(1, 4)).tolist()}))
    """,
        str(code_dir),
    )
    # A new process with an empty cache, where the model's module is not importable: it must come from the repo.
    loaded = client.json(
        """
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("org/tiny-echo", trust_remote_code=True)
        print(json.dumps({"class": type(model).__name__, "describe": model.describe(),
                          "y": model(torch.ones(1, 4)).tolist()}))
    """,
        home="reader",
    )
    assert loaded["class"] == "TinyEchoModel"
    assert loaded["describe"] == "tiny echo of width 4"
    assert loaded["y"][0] == pytest.approx(pushed["y"][0])


def test_dataset_push_to_hub_and_load_dataset(client):
    rows = client.json("""
        import json
        from datasets import Dataset, DatasetDict
        DatasetDict({
            "train": Dataset.from_dict({"query": ["q1", "q2", "q3"], "label": [1, 0, 1]}),
            "test": Dataset.from_dict({"query": ["t1"], "label": [0]}),
        }).push_to_hub("org/tiny-ds")
        print(json.dumps({}))
    """)
    assert rows == {}
    loaded = client.json(
        """
        import json
        from datasets import load_dataset
        ds = load_dataset("org/tiny-ds")
        print(json.dumps({split: ds[split].to_dict() for split in sorted(ds)}))
    """,
        home="reader",
    )
    assert loaded == {
        "test": {"query": ["t1"], "label": [0]},
        "train": {"query": ["q1", "q2", "q3"], "label": [1, 0, 1]},
    }


METRIC_SOURCE = '''
import datasets
import evaluate


class ExactFraction(evaluate.Metric):
    """Fraction of predictions equal to their reference."""

    def _info(self):
        return evaluate.MetricInfo(
            description="fraction of exact matches", citation="", inputs_description="predictions, references",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return {"exact_fraction": sum(p == r for p, r in zip(predictions, references)) / len(references)}
'''


def test_evaluate_load_metric_from_a_space(client, tmp_path):
    space = tmp_path / "space"
    space.mkdir()
    (space / "exact_fraction.py").write_text(METRIC_SOURCE)
    (space / "requirements.txt").write_text("evaluate\n")
    (space / "README.md").write_text(
        "---\ntitle: exact_fraction\nsdk: gradio\ntags:\n- evaluate\n- metric\n---\n# exact_fraction\n"
    )
    client(
        """
        import sys
        from huggingface_hub import HfApi
        HfApi().create_repo("org/exact_fraction", repo_type="space", space_sdk="gradio")
        HfApi().upload_folder(repo_id="org/exact_fraction", repo_type="space", folder_path=sys.argv[1])
    """,
        str(space),
    )
    out = client.json(
        """
        import json, evaluate
        metric = evaluate.load("org/exact_fraction")
        print(json.dumps(metric.compute(predictions=["a", "b", "c", "d"], references=["a", "x", "c", "d"])))
    """,
        home="reader",
    )
    assert out == {"exact_fraction": 0.75}


def test_client_errors_for_missing_repo_file_and_revision(client):
    out = client.json("""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import RepositoryNotFoundError, RemoteEntryNotFoundError, RevisionNotFoundError
        HfApi().create_repo("org/exists")
        caught = {}
        for name, call in {
            "repo": lambda: hf_hub_download("org/does-not-exist", "config.json"),
            "repo_info": lambda: HfApi().model_info("org/does-not-exist"),
            "file": lambda: hf_hub_download("org/exists", "missing.json"),
            "revision": lambda: HfApi().model_info("org/exists", revision="no-such-branch"),
        }.items():
            try:
                call()
                caught[name] = None
            except (RepositoryNotFoundError, RemoteEntryNotFoundError, RevisionNotFoundError) as err:
                caught[name] = type(err).__name__
        caught["exists"] = [HfApi().repo_exists("org/exists"), HfApi().repo_exists("org/does-not-exist")]
        print(json.dumps(caught))
    """)
    assert out == {
        "repo": "RepositoryNotFoundError",
        "repo_info": "RepositoryNotFoundError",
        "file": "RemoteEntryNotFoundError",
        "revision": "RevisionNotFoundError",
        "exists": [True, False],
    }


def test_branches_and_deletes(client):
    out = client.json("""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        api.create_repo("org/branched")
        api.upload_file(path_or_fileobj=b"main", path_in_repo="a/x.txt", repo_id="org/branched")
        api.create_branch("org/branched", branch="dev")
        api.upload_file(path_or_fileobj=b"dev", path_in_repo="a/x.txt", repo_id="org/branched", revision="dev")
        api.delete_folder("a", repo_id="org/branched")
        refs = api.list_repo_refs("org/branched")
        print(json.dumps({
            "branches": sorted(b.name for b in refs.branches),
            "dev": open(hf_hub_download("org/branched", "a/x.txt", revision="dev")).read(),
            "main_files": api.list_repo_files("org/branched"),
            "commits": len(api.list_repo_commits("org/branched")),
        }))
    """)
    assert out == {"branches": ["dev", "main"], "dev": "dev", "main_files": [".gitattributes"], "commits": 3}


def test_create_repo_with_exist_ok_on_an_existing_repo(client):
    out = client.json("""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api = HfApi()
        first = api.create_repo("demo/again", repo_type="dataset")
        second = api.create_repo("demo/again", repo_type="dataset", exist_ok=True)  # the 409 body names the repo
        try:
            api.create_repo("demo/again", repo_type="dataset")
            status = None
        except HfHubHTTPError as err:
            status = err.response.status_code
        print(json.dumps({"same": str(first) == str(second), "url": str(second), "status": status}))
    """)
    assert out["same"] and out["url"].endswith("/datasets/demo/again") and out["status"] == 409
