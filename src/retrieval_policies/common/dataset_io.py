"""Dataset folders as the Hub wants them (Parquet per config and split + a README whose YAML declares ``configs:``),
and pushing such a folder in one commit. Used by every dataset builder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import DatasetCardData

from ..templates import render_card


def write_dataset_folder(
    folder: str | os.PathLike,
    configs: dict[str, dict[str, list[dict]]],
    *,
    pretty_name: str,
    card_body: str,
    license: str,
    tags: list[str] | None = None,
    default_config: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``data/<config>/<split>.parquet`` and README.md; built in a temporary sibling and renamed into place,
    so a failed build never replaces a previous folder with a half-written one."""
    from datasets import Dataset

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yaml_configs = []
        for name, splits in configs.items():
            files = []
            for split, rows in splits.items():
                if not rows:
                    continue
                path = Path("data") / name / f"{split}.parquet"
                (staging / path).parent.mkdir(parents=True, exist_ok=True)
                Dataset.from_list(rows).to_parquet(str(staging / path))
                files.append({"split": split, "path": str(path)})
            if files:
                entry = {"config_name": name, "data_files": files}
                if name == (default_config or next(iter(configs))):
                    entry["default"] = True
                yaml_configs.append(entry)
        data = DatasetCardData(pretty_name=pretty_name, license=license, tags=tags or [], configs=yaml_configs)
        configs = {name: splits for name, splits in configs.items() if any(splits.values())}
        if default_config in configs:  # the loading snippet shows the default config
            configs = {default_config: configs[default_config], **configs}
        render_dataset_card(data, pretty_name=pretty_name, body=card_body, configs=configs, repo_id=repo_id).save(
            staging / "README.md"
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def push_dataset_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload dataset",
) -> str:
    """Create the dataset repo if needed and upload the folder in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, repo_type="dataset", folder_path=str(folder), revision=revision, commit_message=commit_message
    )
    return info.commit_url


def format_counts(title: str, kept: dict[str, int], dropped: dict[str, int]) -> str:
    lines = [title] + [f"  kept    {name}: {count}" for name, count in kept.items()]
    lines += [f"  dropped {reason}: {count}" for reason, count in sorted(dropped.items())] or ["  dropped: none"]
    return "\n".join(lines)


def _local_folder_cache(folder: Path) -> str:
    import hashlib

    from datasets import config as datasets_config

    folder = folder.resolve()
    parts = [str(folder)] + [
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    place = (
        Path(datasets_config.HF_DATASETS_CACHE)
        / "retrieval-policies-local"
        / hashlib.sha256(parts[0].encode()).hexdigest()[:16]
    )
    current = place / hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    if place.is_dir():  # the copies of this folder's earlier contents
        for stale in place.iterdir():
            if stale != current:
                shutil.rmtree(stale, ignore_errors=True)
    return str(current)


def load_split(
    name: str,
    config: str | None = None,
    split: str = "train",
    *,
    columns: list[str] | None = None,
    kinds: list[str] | None = None,
    limit: int | None = None,
):
    """``datasets.load_dataset(name, config, split=split)`` that never serves a stale copy of a local folder; a local
    JSONL/JSON/Parquet/CSV file is read as it is (its one split, no config). ``columns`` keeps those (each must
    exist), ``kinds`` keeps the rows whose ``kind`` column is one of them, ``limit`` the first rows.

    datasets caches a local folder under its base name, config and relative file layout, not its content: a folder
    rebuilt in place (or another folder with the same name and layout) would be served from the old Arrow cache, or
    refused with the old one's features even with force_redownload. A local folder is therefore always re-read (cheap
    for Parquet) into a cache of its own, keyed by its absolute path and its files' sizes and times; Hub repos use the
    cache as usual.
    """
    dataset = _load_dataset(name, config, split)
    missing = sorted((set(columns or ()) | ({"kind"} if kinds else set())) - set(dataset.column_names))
    if missing:
        raise ValueError(f"{name} ({config}/{split}) has no column {missing}; columns: {dataset.column_names}")
    if kinds:
        selected = dataset.filter(lambda row: row["kind"] in kinds)
        if len(selected) == 0:  # the kinds there are read only to name them in the error
            there = sorted(set(dataset["kind"]))
            raise ValueError(f"{name} ({config}/{split}): no rows of kinds {kinds} (kinds there: {there})")
        dataset = selected
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.select_columns(columns) if columns is not None else dataset


DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def data_file_builder(name) -> str | None:
    """The ``datasets`` builder of a data file's name (``json``, ``parquet``, ``csv``), None for anything else. A
    name that is a local path (a data-file suffix, or starting with ``.``, ``/`` or ``~``) must exist: it is not a Hub
    id, so say so instead of the Hub client's repo-id error."""
    builder = DATA_FILE_BUILDERS.get(Path(name).suffix.lower())
    if (builder is not None or str(name).startswith((".", "/", "~"))) and not Path(name).exists():
        raise FileNotFoundError(f"{name}: no such file or folder")
    return builder


def _load_dataset(name: str, config: str | None, split: str):
    from datasets import load_dataset

    builder = data_file_builder(name)
    if builder and Path(name).is_file() and Path(name).stat().st_size == 0:
        raise ValueError(f"{name}: the file is empty")
    if Path(name).is_file() and builder:  # a downloaded file (e.g. the Echo training mix's JSONL): no config
        return load_dataset(builder, data_files=str(name), split="train", download_mode="force_redownload")
    if Path(name).is_dir():
        return load_dataset(
            name,
            config,
            split=split,
            download_mode="force_redownload",
            verification_mode="no_checks",
            cache_dir=_local_folder_cache(Path(name)),
        )
    return load_dataset(name, config, split=split)


# ---------------------------------------------------------------------------------------------- dataset cards
def dataset_schema(configs: dict[str, dict[str, list[dict]]]) -> list[dict]:
    """Per config: its splits with row counts and the columns with the type of their first non-null value."""
    out = []
    for name, splits in configs.items():
        rows = [row for split in splits.values() for row in split]
        columns = {}
        for row in rows:
            for key, value in row.items():
                if key not in columns or columns[key] == "null":
                    columns[key] = "null" if value is None else type(value).__name__
        out.append({"name": name, "splits": {split: len(r) for split, r in splits.items() if r}, "columns": columns})
    return out


def render_dataset_card(
    card_data, *, pretty_name: str, body: str, configs: dict[str, dict[str, list[dict]]], repo_id: str | None = None
):
    """The dataset card: what the builder says about the data (sources, how it was built, counts, command), its
    schema, and how to load it."""
    from huggingface_hub import DatasetCard

    return render_card(
        DatasetCard,
        card_data,
        "dataset.md",
        pretty_name=pretty_name,
        body=body.strip(),
        schema=dataset_schema(configs),
        repo_id=repo_id,
        default_config=next(iter(configs), None),
    )
