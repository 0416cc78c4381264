"""On-disk storage of the local Hub: content-addressed blobs plus one JSON snapshot per commit.

Layout under ``root``::

    blobs/ab/<sha256>                                  file contents, shared by all repos
    repos/<type>s/<namespace>/<name>/repo.json         repo settings (private, sdk, created_at)
    repos/<type>s/<namespace>/<name>/refs.json         {"branches": {"main": <sha>}}
    repos/<type>s/<namespace>/<name>/commits/<sha>.json   full file manifest of that commit
    tmp/                                               staging area; everything is renamed into place

Every write goes to ``tmp/`` first and is moved with ``os.replace``, and a branch only moves after its commit file
exists, so an interrupted request never leaves a half-written blob, commit or ref behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

REPO_TYPES = ("model", "dataset", "space")
LOCAL_USER = "local-user"  # the user of a Hub without tokens, and the author of commits made before authors
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Files stored through LFS whatever their size, as the Hub's default .gitattributes does.
LFS_SUFFIXES = (
    ".7z",
    ".arrow",
    ".bin",
    ".bz2",
    ".ckpt",
    ".ftz",
    ".gguf",
    ".gz",
    ".h5",
    ".joblib",
    ".mlmodel",
    ".model",
    ".msgpack",
    ".npy",
    ".npz",
    ".onnx",
    ".ot",
    ".parquet",
    ".pb",
    ".pickle",
    ".pkl",
    ".pt",
    ".pth",
    ".rar",
    ".safetensors",
    ".tar",
    ".tflite",
    ".tgz",
    ".wasm",
    ".xz",
    ".zip",
    ".zst",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
INITIAL_GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)


class HubError(Exception):
    """An error answered to the client: HTTP status, the Hub's ``X-Error-Code`` and a message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def repo_not_found(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, f"{repo_type} repository {repo_id!r} not found", "RepoNotFound")


def validate_repo_path(path: str) -> str:
    """Refuse file names that could escape the repo or that git would not store (``..``, absolute, empty parts)."""
    if not isinstance(path, str) or not path:
        raise HubError(400, "empty file path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file system or git stores it
        raise HubError(
            400, f"file path {path.encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8"
        ) from None
    if "\\" in path or CONTROL_RE.search(path):
        raise HubError(400, f"invalid character (a backslash or a control character) in file path {path!r}")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise HubError(400, f"absolute file path {path!r} is not allowed")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HubError(400, f"file path {path!r} must not contain empty, '.' or '..' segments")
    if any(part.lower() == ".git" for part in parts):
        raise HubError(400, f"file path {path!r} must not have a '.git' segment")
    if any(len(part.encode("utf-8")) > 255 for part in parts):
        raise HubError(400, f"file path {path[:80]!r}...: a segment is longer than 255 bytes (a file name limit)")
    if len(path) > 1000:
        raise HubError(400, f"file path is longer than 1000 characters: {path[:50]!r}...")
    return path


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(NAME_RE.match(p) for p in parts) or parts[1].endswith(".git"):
        raise HubError(
            400, f"invalid repo id {repo_id!r}: expected 'namespace/name' made of letters, digits, '.', '_', '-'"
        )
    return parts[0], parts[1]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def wants_lfs(path: str, size: int, sample: bytes = b"") -> bool:
    """The upload mode the Hub would pick: LFS for large, binary or LFS-tracked files, regular otherwise."""
    if size == 0:
        return False
    return size >= LFS_SIZE_THRESHOLD or path.lower().endswith(LFS_SUFFIXES) or b"\x00" in sample


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    lfs: bool
    git_oid: str  # sha1 of the git blob (the LFS pointer for LFS files)

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "git_oid": self.git_oid}


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, FileEntry]
    author: str = LOCAL_USER

    def to_json(self) -> dict:
        return {
            "sha": self.sha,
            "parent": self.parent,
            "title": self.title,
            "message": self.message,
            "date": self.date,
            "author": self.author,
            "files": {path: entry.to_json() for path, entry in sorted(self.files.items())},
        }

    @classmethod
    def from_json(cls, data: dict) -> Commit:
        files = {path: FileEntry(**entry) for path, entry in data["files"].items()}
        author = data.get("author", LOCAL_USER)  # commits written before authors were recorded
        return cls(data["sha"], data["parent"], data["title"], data["message"], data["date"], files, author)


@dataclass(frozen=True)
class Repo:
    repo_type: str
    repo_id: str
    path: Path
    settings: dict

    @property
    def url_prefix(self) -> str:
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"


class HubStorage:
    """Repos, commits and blobs of the local Hub, persisted under ``root``; safe to use from many threads."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        for folder in (self.blobs, self.tmp, self.root / "repos"):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.removed_at_start = self._remove_orphans()

    def _remove_orphans(self) -> int:
        """Temporary files a killed server left in ``tmp/`` (never referenced: everything is renamed out of it)."""
        removed = 0
        for leftover in self.tmp.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    # ----------------------------------------------------------------- atomic file helpers
    def _write_json(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(path, json.dumps(data, indent=1).encode())

    def _write_atomically(self, path: Path | None, data: bytes) -> str:
        """Write ``data`` to a temp file and rename it to ``path`` (None: return the temp file). The temp file is
        removed on every failure (a full disk must not stay full of half-written files)."""
        fd, tmp = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if path is not None:
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    @staticmethod
    def _read_json(path: Path) -> dict:
        with open(path) as f:
            return json.load(f)

    # ----------------------------------------------------------------- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return bool(SHA256_RE.match(sha256)) and self.blob_path(sha256).is_file()

    def put_blob_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            tmp = self._write_atomically(None, data)
            try:
                self._publish_blob(tmp, sha256)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)  # already renamed, unless publishing failed
        return sha256

    def put_blob_stream(
        self, stream: BinaryIO | Iterable[bytes], expected_sha256: str, expected_size: int | None
    ) -> None:
        """Store an uploaded LFS object, refusing it (and keeping nothing) when its content is not what was declared."""
        if not SHA256_RE.match(expected_sha256):
            raise HubError(400, f"invalid LFS oid {expected_sha256!r}: expected 64 lowercase hex digits")
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                chunks = iter(lambda: stream.read(1 << 20), b"") if hasattr(stream, "read") else stream
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != expected_sha256:
                raise HubError(
                    400, f"uploaded content has sha256 {digest.hexdigest()}, not the declared oid {expected_sha256}"
                )
            if expected_size is not None and size != expected_size:
                raise HubError(400, f"uploaded content has {size} bytes, not the declared size {expected_size}")
            self._publish_blob(tmp, expected_sha256)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _publish_blob(self, tmp: str, sha256: str) -> None:
        target = self.blob_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)

    # ----------------------------------------------------------------- repos
    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
        namespace, name = validate_repo_id(repo_id)
        return self.root / "repos" / f"{repo_type}s" / namespace / name

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        path = self._repo_dir(repo_type, repo_id)
        if not (path / "refs.json").is_file():
            raise repo_not_found(repo_type, repo_id)
        return Repo(repo_type, repo_id, path, self._read_json(path / "repo.json"))

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None) -> Repo:
        path = self._repo_dir(repo_type, repo_id)
        with self._lock:
            if (path / "refs.json").is_file():
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            settings = {"private": bool(private), "created_at": _now()}
            if repo_type == "space":
                settings["sdk"] = sdk or "gradio"
            self._write_json(path / "repo.json", settings)
            repo = Repo(repo_type, repo_id, path, settings)
            files = {".gitattributes": self._regular_entry(INITIAL_GITATTRIBUTES.encode())}
            commit = self._new_commit(repo, None, "initial commit", "", files)
            self._write_json(path / "refs.json", {"branches": {"main": commit.sha}})
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> int:
        """Delete the repo and the blobs no other repo references (its data does not stay behind); returns how many
        blobs were removed."""
        repo = self.get_repo(repo_type, repo_id)
        with self._lock:
            doomed = self._blobs_of(repo.path)
            trash = self.tmp / f"deleted-{uuid.uuid4().hex}"
            os.replace(repo.path, trash)
            for dirpath, dirnames, filenames in os.walk(trash, topdown=False):
                for filename in filenames:
                    os.unlink(os.path.join(dirpath, filename))
                for dirname in dirnames:
                    os.rmdir(os.path.join(dirpath, dirname))
            os.rmdir(trash)
            for other in (self.root / "repos").glob("*/*/*"):
                doomed -= self._blobs_of(other)
                if not doomed:
                    break
            for sha256 in doomed:
                self.blob_path(sha256).unlink(missing_ok=True)
            return len(doomed)

    def _blobs_of(self, repo_path: Path) -> set[str]:
        """The sha256 of every file in every commit of a repo (its whole history, as downloads by sha can reach)."""
        blobs = set()
        for commit in (repo_path / "commits").glob("*.json"):
            blobs.update(entry["sha256"] for entry in self._read_json(commit)["files"].values())
        return blobs

    def head_blobs(self, repo: Repo) -> set[str]:
        """The sha256 of the files at the repo's branch heads."""
        return {e.sha256 for sha in self.branches(repo).values() for e in self.resolve(repo, sha).files.values()}

    def update_settings(self, repo: Repo, **changes) -> Repo:
        with self._lock:
            settings = {**repo.settings, **{k: v for k, v in changes.items() if v is not None}}
            self._write_json(repo.path / "repo.json", settings)
            return Repo(repo.repo_type, repo.repo_id, repo.path, settings)

    # ----------------------------------------------------------------- refs and commits
    def branches(self, repo: Repo) -> dict[str, str]:
        return self._read_json(repo.path / "refs.json")["branches"]

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch name or a full commit sha → that commit; anything else is RevisionNotFound."""
        revision = revision.removeprefix("refs/heads/")
        sha = self.branches(repo).get(revision)
        if sha is None and SHA1_RE.match(revision) and (repo.path / "commits" / f"{revision}.json").is_file():
            sha = revision
        if sha is None:
            raise HubError(
                404, f"Invalid rev id: {revision} in {repo.repo_type} repo {repo.repo_id}", "RevisionNotFound"
            )
        return Commit.from_json(self._read_json(repo.path / "commits" / f"{sha}.json"))

    def history(self, repo: Repo, revision: str) -> list[Commit]:
        commits = [self.resolve(repo, revision)]
        while commits[-1].parent:
            commits.append(Commit.from_json(self._read_json(repo.path / "commits" / f"{commits[-1].parent}.json")))
        return commits

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None = None, exist_ok: bool = False) -> None:
        if not BRANCH_RE.match(branch) or ".." in branch or SHA1_RE.match(branch):
            raise HubError(400, f"invalid branch name {branch!r}")
        with self._lock:
            refs = self._read_json(repo.path / "refs.json")
            if branch in refs["branches"]:
                if exist_ok:
                    return
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            refs["branches"][branch] = self.resolve(repo, starting_point or "main").sha
            self._write_json(repo.path / "refs.json", refs)

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self._lock:
            refs = self._read_json(repo.path / "refs.json")
            if branch == "main":
                raise HubError(403, "the main branch cannot be deleted")
            if refs["branches"].pop(branch, None) is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            self._write_json(repo.path / "refs.json", refs)

    def _regular_entry(self, data: bytes) -> FileEntry:
        return FileEntry(self.put_blob_bytes(data), len(data), False, git_blob_sha1(data))

    def lfs_entry(self, sha256: str) -> FileEntry:
        if not self.has_blob(sha256):
            raise HubError(422, f"LFS object {sha256} was never uploaded (upload it through the LFS batch API first)")
        size = self.blob_path(sha256).stat().st_size
        return FileEntry(sha256, size, True, git_blob_sha1(lfs_pointer(sha256, size)))

    def _new_commit(
        self,
        repo: Repo,
        parent: str | None,
        title: str,
        message: str,
        files: dict[str, FileEntry],
        author: str = LOCAL_USER,
    ) -> Commit:
        date = _now()
        seed = json.dumps(
            [parent, title, message, date, uuid.uuid4().hex, sorted((p, e.git_oid) for p, e in files.items())]
        )
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, date, files, author)
        self._write_json(repo.path / "commits" / f"{commit.sha}.json", commit.to_json())
        return commit

    def commit(
        self,
        repo: Repo,
        branch: str,
        operations: list[dict],
        *,
        title: str,
        message: str = "",
        parent_commit: str | None = None,
        author: str = LOCAL_USER,
    ) -> Commit:
        """Apply ``operations`` (already-validated dicts: add_bytes / add_lfs / delete_file / delete_folder) to ``branch``.

        All operations are checked before anything moves: one bad operation fails the whole commit and ``branch``
        keeps its previous commit.
        """
        with self._lock:
            branch = branch.removeprefix("refs/heads/")
            if SHA1_RE.match(branch):
                raise HubError(400, f"cannot commit to a commit sha ({branch}): name a branch")
            head = self.resolve(repo, branch)  # a sha was refused above, so this is a branch or RevisionNotFound
            if parent_commit and parent_commit != head.sha:
                raise HubError(412, f"parent commit {parent_commit} is not the head of {branch} ({head.sha})")
            files = dict(head.files)
            for op in operations:
                kind, path = op["kind"], validate_repo_path(op["path"])
                if kind == "add_bytes":
                    files[path] = self._regular_entry(op["data"])
                elif kind == "add_lfs":
                    files[path] = self.lfs_entry(op["oid"])
                elif kind == "delete_file":
                    if files.pop(path, None) is None:
                        raise HubError(
                            404, f"cannot delete {path!r}: no such file in {repo.repo_id}@{branch}", "EntryNotFound"
                        )
                elif kind == "delete_folder":
                    doomed = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                    if not doomed:
                        raise HubError(
                            404,
                            f"cannot delete folder {path!r}: no such folder in {repo.repo_id}@{branch}",
                            "EntryNotFound",
                        )
                    for p in doomed:
                        del files[p]
                else:  # pragma: no cover - the server only builds the kinds above
                    raise HubError(400, f"unknown commit operation {kind!r}")
            check_no_file_folder_conflict(files)
            commit = self._new_commit(repo, head.sha, title, message, files, author)
            refs = self._read_json(repo.path / "refs.json")
            refs["branches"][branch] = commit.sha
            self._write_json(repo.path / "refs.json", refs)
            return commit


def check_no_file_folder_conflict(files: dict) -> None:
    """Refuse a tree where a file has the name of a folder ("a" and "a/b"): git cannot store it, clients fail on it."""
    folders = {path.rsplit("/", 1)[0] for path in files if "/" in path}
    folders = {"/".join(folder.split("/")[:depth]) for folder in folders for depth in range(1, folder.count("/") + 2)}
    clash = sorted(folders & files.keys())
    if clash:
        raise HubError(409, f"{clash[0]!r} would be both a file and a folder: delete one of them first")


def folder_entries(files: dict[str, FileEntry], folder: str, recursive: bool) -> tuple[list[str], list[str]]:
    """Files and sub-folders under ``folder`` ("" is the root), sorted; with ``recursive`` every level."""
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    out_files, out_dirs = [], set()
    for path in files:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        if len(rest) == 1:
            out_files.append(path)
            continue
        for depth in range(1, len(rest) if recursive else 2):
            out_dirs.add(prefix + "/".join(rest[:depth]))
        if recursive:
            out_files.append(path)
    return sorted(out_files), sorted(out_dirs)
