"""A Hugging Face Hub-compatible HTTP server for loopback use.

It answers the subset of the Hub's HTTP API that the unmodified clients (huggingface_hub, transformers, datasets,
evaluate, sentence-transformers) call to create repos, upload (regular and LFS), commit, list and download model,
dataset and Space repos. Point a client at it with ``HF_ENDPOINT=<url>`` (and ``HF_HUB_DISABLE_XET=1``), set
before the client library is imported.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from .storage import (
    REPO_TYPES,
    Commit,
    FileEntry,
    HubError,
    HubStorage,
    Repo,
    folder_entries,
    lfs_pointer,
    validate_repo_path,
    wants_lfs,
)

logger = logging.getLogger(__name__)

LOCAL_USER = "local-user"
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _card_data(storage: HubStorage, commit: Commit) -> dict | None:
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    text = storage.blob_path(entry.sha256).read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "retrieval-policies-local-hub/0.1"
    storage: HubStorage  # set on the subclass made by make_server

    # ================================================================= plumbing
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from BaseHTTPRequestHandler
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False
        url = urlsplit(self.path)
        # Split the raw path before unquoting, so that an encoded '/' (e.g. revision refs%2Fpr%2F1) stays in one part.
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        try:
            self._route(method, parts, query)
        except HubError as err:
            self._send_error(err)
        except Exception as err:  # noqa: BLE001 - answer 500 rather than dropping the connection
            logger.exception("local hub: unhandled error on %s %s", method, self.path)
            self._send_error(HubError(500, f"internal error: {type(err).__name__}: {err}"))

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _iter_body(self):
        self._body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def _json_body(self) -> dict:
        body = self._read_body()
        if not body:
            return {}
        content_type = self.headers.get("Content-Type", "")
        # paths-info is sent form-encoded by huggingface_hub; everything else is JSON.
        if "application/x-www-form-urlencoded" in content_type and not body.lstrip().startswith(b"{"):
            return {k: (v if len(v) > 1 or k == "paths" else v[0]) for k, v in parse_qs(body.decode()).items()}
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise HubError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise HubError(400, "request body must be a JSON object")
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json") -> None:
        if not self._body_consumed:
            for _ in self._iter_body():  # keep the connection usable
                pass
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()[:500]}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json({"error": err.message}, err.status, headers)

    def _base_url(self) -> str:
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        return f"http://{host}"

    # ================================================================= routing
    def _route(self, method: str, parts: list[str], query: dict) -> None:
        if parts[:1] == ["api"]:
            return self._route_api(method, parts[1:], query)
        if parts[:1] == ["lfs-upload"] and method == "PUT" and len(parts) == 3:
            return self._lfs_upload(parts[1], parts[2])
        repo_type = _TYPE_PREFIXES.get(parts[0], "model") if parts else "model"
        rest = parts[1:] if parts and parts[0] in _TYPE_PREFIXES else parts
        if len(rest) >= 4 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self.storage.get_repo(repo_type, "/".join(rest[:2]))
            return self._resolve(repo, rest[3], "/".join(rest[4:]))
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            repo = self.storage.get_repo(repo_type, f"{rest[0]}/{rest[1][:-4]}")
            return self._lfs_batch(repo)
        raise HubError(404, f"no such endpoint: {method} {self.path}")

    def _route_api(self, method: str, parts: list[str], query: dict) -> None:
        if parts == ["whoami-v2"]:
            return self._send_json({
                "type": "user", "name": LOCAL_USER, "fullname": "Local Hub user", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            })
        if parts == ["validate-yaml"] and method == "POST":
            self._read_body()
            return self._send_json({})
        if parts == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if parts == ["repos", "delete"] and method == "DELETE":
            body = self._json_body()
            repo_type = body.get("type") or "model"
            self.storage.delete_repo(repo_type, f"{body.get('organization') or LOCAL_USER}/{body.get('name')}")
            return self._send_json({})
        if len(parts) < 3 or parts[0] not in ("models", "datasets", "spaces"):
            raise HubError(404, f"no such endpoint: {method} {self.path}")
        repo_type = parts[0][:-1]
        repo = self.storage.get_repo(repo_type, f"{parts[1]}/{parts[2]}")
        action, args = (parts[3] if len(parts) > 3 else None), parts[4:]
        if action is None and method == "GET":
            return self._repo_info(repo, "main", query)
        if action == "revision" and method == "GET" and args:
            return self._repo_info(repo, "/".join(args), query)
        if action == "tree" and method == "GET" and args:
            return self._tree(repo, args[0], "/".join(args[1:]), query)
        if action == "paths-info" and method == "POST" and args:
            return self._paths_info(repo, "/".join(args))
        if action == "preupload" and method == "POST" and args:
            return self._preupload(repo, "/".join(args))
        if action == "commit" and method == "POST" and args:
            return self._commit(repo, "/".join(args), query)
        if action == "commits" and method == "GET" and args:
            return self._commits(repo, "/".join(args))
        if action == "refs" and method == "GET":
            branches = self.storage.branches(repo)
            return self._send_json({
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in sorted(branches.items())],
                "converts": [], "tags": [], "pullRequests": [],
            })
        if action == "branch" and args and method == "POST":
            body = self._json_body()
            self.storage.create_branch(repo, "/".join(args), body.get("startingPoint"), exist_ok=bool(body.get("exist_ok")))
            return self._send_json({})
        if action == "branch" and args and method == "DELETE":
            self.storage.delete_branch(repo, "/".join(args))
            return self._send_json({})
        if action == "settings" and method == "PUT":
            body = self._json_body()
            self.storage.update_settings(repo, private=body.get("private"))
            return self._send_json({})
        raise HubError(404, f"no such endpoint: {method} {self.path}")

    # ================================================================= repos
    def _create_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        name = body.get("name")
        if not name:
            raise HubError(400, "repo creation needs a 'name'")
        repo_id = f"{body.get('organization') or LOCAL_USER}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        try:
            repo = self.storage.create_repo(repo_type, repo_id, private=bool(body.get("private")), sdk=body.get("sdk"))
        except HubError as err:
            if err.status != 409:
                raise
            # like the Hub, a 409 names the existing repo: create_repo(exist_ok=True) reads its url from the body
            return self._send_json({"error": err.message, "url": f"{self._base_url()}/{prefix}{repo_id}"}, 409,
                                   {"X-Error-Message": err.message})
        return self._send_json({"url": f"{self._base_url()}/{repo.url_prefix}{repo.repo_id}", "name": repo.repo_id})

    def _repo_info(self, repo: Repo, revision: str, query: dict) -> None:
        commit = self.storage.resolve(repo, revision)
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update({"size": entry.size, "blobId": entry.git_oid})
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
            "lastModified": commit.date, "createdAt": repo.settings["created_at"],
            "private": repo.settings["private"], "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        }
        card = _card_data(self.storage, commit)
        if card is not None:
            info["cardData"] = card
            if isinstance(card.get("tags"), list):
                info["tags"] = [str(t) for t in card["tags"]]
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            if card and card.get("pipeline_tag"):
                info["pipeline_tag"] = card["pipeline_tag"]
            if card and card.get("library_name"):
                info["library_name"] = card["library_name"]
        if repo.repo_type == "space":
            info.update({"sdk": repo.settings.get("sdk"), "runtime": {"stage": "NO_APP_FILE", "hardware": {"current": None, "requested": None}}})
        return self._send_json(info)

    def _entry_json(self, path: str, entry: FileEntry | None, commit: Commit, expand: bool) -> dict:
        if entry is None:
            data = {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(), "size": 0, "path": path}
        else:
            data = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        if expand:
            data["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return data

    def _tree(self, repo: Repo, revision: str, folder: str, query: dict) -> None:
        commit = self.storage.resolve(repo, revision)
        if folder:
            validate_repo_path(folder)
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        expand = query.get("expand", ["false"])[0].lower() in ("true", "1")
        files, dirs = folder_entries(commit.files, folder, recursive)
        if folder and not files and not dirs:
            raise HubError(404, f"Entry not found: {folder!r} in {repo.repo_id}@{revision}", "EntryNotFound")
        entries = [self._entry_json(d, None, commit, expand) for d in dirs]
        entries += [self._entry_json(f, commit.files[f], commit, expand) for f in files]
        entries.sort(key=lambda e: e["path"])
        return self._send_json(entries)

    def _paths_info(self, repo: Repo, revision: str) -> None:
        body = self._json_body()
        commit = self.storage.resolve(repo, revision)
        paths = body.get("paths") or []
        paths = [paths] if isinstance(paths, str) else paths
        expand = str(body.get("expand", "false")).lower() in ("true", "1")
        entries = []
        for path in paths:
            path = validate_repo_path(path.strip("/")) if path.strip("/") else ""
            if path in commit.files:
                entries.append(self._entry_json(path, commit.files[path], commit, expand))
            elif path and any(p.startswith(path + "/") for p in commit.files):
                entries.append(self._entry_json(path, None, commit, expand))
        return self._send_json(entries)

    def _commits(self, repo: Repo, revision: str) -> None:
        history = self.storage.history(repo, revision)
        return self._send_json([
            {"id": c.sha, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": LOCAL_USER}]}
            for c in history
        ])

    # ================================================================= uploads
    def _preupload(self, repo: Repo, revision: str) -> None:
        body = self._json_body()
        head = self.storage.resolve(repo, revision)
        answers = []
        for item in body.get("files") or []:
            path = validate_repo_path(item.get("path", ""))
            sample = base64.b64decode(item.get("sample") or "")
            answers.append({"path": path, "uploadMode": "lfs" if wants_lfs(path, int(item.get("size") or 0), sample) else "regular",
                            "shouldIgnore": False})
        return self._send_json({"files": answers, "commitOid": head.sha})

    def _lfs_batch(self, repo: Repo) -> None:
        body = self._json_body()
        if body.get("operation", "upload") != "upload":
            raise HubError(400, "the local Hub serves LFS downloads through /resolve; only 'upload' batches are supported")
        objects = []
        for obj in body.get("objects") or []:
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not re.match(r"^[0-9a-f]{64}$", oid) or not isinstance(size, int) or size < 0:
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not self.storage.has_blob(oid):
                answer["actions"] = {"upload": {"href": f"{self._base_url()}/lfs-upload/{oid}/{size}"}}
            objects.append(answer)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_upload(self, oid: str, size: str) -> None:
        if not size.isdigit():
            raise HubError(400, f"invalid size {size!r}")
        self.storage.put_blob_stream(self._iter_body(), oid, int(size))
        self._send(200)

    def _commit(self, repo: Repo, revision: str, query: dict) -> None:
        if query.get("create_pr", ["0"])[0].lower() in ("1", "true"):
            raise HubError(400, "pull requests are not supported by the local Hub: commit to a branch instead")
        header, operations = None, []
        for lineno, line in enumerate(self._read_body().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HubError(400, f"commit payload line {lineno} is not a {{'key', 'value'}} JSON object") from None
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"commit payload line {lineno}: unsupported encoding {value.get('encoding')!r}")
                try:
                    data = base64.b64decode(value["content"], validate=True)
                except (ValueError, KeyError):
                    raise HubError(400, f"commit payload line {lineno}: content is not valid base64") from None
                operations.append({"kind": "add_bytes", "path": value.get("path", ""), "data": data})
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise HubError(400, f"commit payload line {lineno}: unsupported LFS hash {value.get('algo')!r}")
                operations.append({"kind": "add_lfs", "path": value.get("path", ""), "oid": value.get("oid", "")})
            elif key in ("deletedFile", "deletedFolder"):
                kind = "delete_file" if key == "deletedFile" else "delete_folder"
                operations.append({"kind": kind, "path": value.get("path", "").rstrip("/")})
            else:
                raise HubError(400, f"commit payload line {lineno}: unknown key {key!r}")
        if header is None:
            raise HubError(400, "commit payload has no header line")
        commit = self.storage.commit(repo, revision, operations, title=header.get("summary") or "update",
                                     message=header.get("description") or "", parent_commit=header.get("parentCommit"))
        url = f"{self._base_url()}/{repo.url_prefix}{repo.repo_id}/commit/{commit.sha}"
        return self._send_json({"success": True, "commitOid": commit.sha, "commitUrl": url})

    # ================================================================= downloads
    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        commit = self.storage.resolve(repo, revision)
        validate_repo_path(path)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path!r} in {repo.repo_type} repo {repo.repo_id}@{revision}", "EntryNotFound")
        blob = self.storage.blob_path(entry.sha256)
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes",
                   "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"',
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(path).name)}"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end, status = 0, entry.size - 1, 200
        match = _RANGE_RE.match(self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), entry.size - 1) if match.group(2) else entry.size - 1
            else:
                start = max(entry.size - int(match.group(2)), 0)
            if start >= entry.size or start > end:
                return self._send(416, b"", {"Content-Range": f"bytes */{entry.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(blob, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class LocalHubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False) -> LocalHubServer:
    """A server over ``root`` bound to ``host:port`` (port 0 picks a free port); refuses non-loopback hosts by default."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"refusing to bind the local Hub to {host!r}: it has no authentication; use a loopback "
                         "address (127.0.0.1) or pass allow_remote=True / --allow-remote if you really mean it")
    handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"storage": HubStorage(root)})
    return LocalHubServer((host, port), handler)


class LocalHub:
    """The local Hub running in a background thread: ``with LocalHub(root) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self._server = make_server(root, host, port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage(self) -> HubStorage:
        return self._server.RequestHandlerClass.storage

    def start(self) -> "LocalHub":
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalHub(url={self.url!r}, root={str(self.root)!r})"
