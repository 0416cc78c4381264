"""A Hugging Face Hub-compatible HTTP server for loopback use.

It answers the subset of the Hub's HTTP API that the unmodified clients (huggingface_hub, transformers, datasets,
evaluate, sentence-transformers) call to create repos, upload (regular and LFS), commit, list and download model,
dataset and Space repos. Point a client at it with ``HF_ENDPOINT=<url>`` (and ``HF_HUB_DISABLE_XET=1``), set
before the client library is imported.

The HTTP layer is Starlette on uvicorn (h11): request parsing, Content-Length and chunked bodies, header encoding
and routing come from those libraries; this module maps the Hub's endpoints onto :class:`HubStorage`. A request
body is read whole (within a size limit and a time limit) before anything is stored, so a body cut off before its
declared end commits nothing.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import Principal, Tokens
from .cards import card_data
from .storage import (
    LOCAL_USER,
    REPO_TYPES,
    Commit,
    FileEntry,
    HubError,
    HubStorage,
    Repo,
    folder_entries,
    lfs_pointer,
    repo_not_found,
    validate_repo_path,
    wants_lfs,
)
from .transport import BODY_TIMEOUT_S, BlobResponse, error_response, header_safe, is_number, read_body

logger = logging.getLogger(__name__)

UPLOAD_CHUNK = 1 << 20  # bytes handed to the writer thread at a time when receiving an LFS upload
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_KINDS = {"models": "model", **_TYPE_PREFIXES}
MAX_JSON_BYTES = 16 * 1024 * 1024  # JSON bodies (preupload, paths-info, LFS batch, settings)
MAX_ANONYMOUS_JSON_BYTES = 256 * 1024  # JSON bodies of requests without a token (validate-yaml, paths-info)
MAX_PATHS_INFO = 10_000  # paths asked about in one paths-info request
MAX_COMMIT_BYTES = 256 * 1024 * 1024  # an NDJSON commit with its inline (regular, < 10 MB each) files
UPLOAD_READ_AHEAD = 8  # chunks of an LFS upload received while the worker thread hashes and writes earlier ones
MAX_UPLOADS = 24  # LFS uploads in progress at once: below the 40 worker threads, so other requests are always served
MAX_UPLOADS_PER_USER = 6  # and per user, so one user's stalled uploads cannot take every upload slot
UPLOAD_MIN_RATE = 64 * 1024  # bytes/s an LFS upload must average (after BODY_TIMEOUT_S of grace) to be kept open


def raw_parts(request: Request) -> list[str]:
    """The path's segments, each percent-decoded on its own, so that an encoded '/' (a revision like refs%2Fpr%2F1)
    stays inside its segment (the routes match the decoded path, where it could not be told apart)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(p) for p in raw.decode("latin-1").split("?")[0].split("/")[1:]]


def _flag(query, name: str) -> bool:
    return str(query.get(name, "false")).lower() in ("true", "1")


class HubApp:
    """The Hub's endpoints over a :class:`HubStorage`, as a Starlette application (``.app``)."""

    def __init__(
        self,
        storage: HubStorage,
        *,
        tokens: Tokens | None = None,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_commit_bytes: int = MAX_COMMIT_BYTES,
        body_timeout: float = BODY_TIMEOUT_S,
    ):
        """``tokens``: the token file; without it every request may read and write everything (unauthenticated)."""
        self.storage, self.tokens = storage, tokens
        self._upload_secret = secrets.token_bytes(32)  # signs LFS upload URLs (the clients PUT to them without a token)
        self._uploaded: set[tuple[str, str]] = set()  # (user, sha256) of the LFS objects each user uploaded
        self.max_uploads, self.max_uploads_per_user = MAX_UPLOADS, MAX_UPLOADS_PER_USER
        self._uploading: collections.Counter[str] = collections.Counter()  # uploads in progress per user
        self.max_json_bytes, self.max_commit_bytes, self.body_timeout = max_json_bytes, max_commit_bytes, body_timeout
        repo = "/api/{kind}/{namespace}/{name}"
        routes = [
            Route("/api/whoami-v2", self._wrap(self._whoami), methods=["GET"]),
            Route("/api/validate-yaml", self._wrap(self._validate_yaml, body="json"), methods=["POST"]),
            Route("/api/repos/create", self._wrap(self._create_repo, body="json", write=True), methods=["POST"]),
            Route("/api/repos/delete", self._wrap(self._delete_repo, body="json", write=True), methods=["DELETE"]),
            Route(repo, self._wrap(self._repo_info), methods=["GET"]),
            Route(repo + "/revision/{rest:path}", self._wrap(self._repo_info), methods=["GET"]),
            Route(repo + "/tree/{rest:path}", self._wrap(self._tree), methods=["GET"]),
            Route(repo + "/paths-info/{rest:path}", self._wrap(self._paths_info, body="json"), methods=["POST"]),
            Route(
                repo + "/preupload/{rest:path}", self._wrap(self._preupload, body="json", write=True), methods=["POST"]
            ),
            Route(repo + "/commit/{rest:path}", self._wrap(self._commit, body="commit", write=True), methods=["POST"]),
            Route(repo + "/commits/{rest:path}", self._wrap(self._commits), methods=["GET"]),
            Route(repo + "/refs", self._wrap(self._refs), methods=["GET"]),
            Route(
                repo + "/branch/{rest:path}",
                self._wrap(self._branch, body="json", write=True),
                methods=["POST", "DELETE"],
            ),
            Route(repo + "/settings", self._wrap(self._settings, body="json", write=True), methods=["PUT"]),
            Route("/lfs-upload/{oid}/{size}", self._lfs_upload, methods=["PUT"]),
        ]
        for prefix in ("", "/datasets", "/spaces"):
            routes += [
                Route(
                    prefix + "/{namespace}/{name}/info/lfs/objects/batch",
                    self._wrap(self._lfs_batch, body="json", write=True),
                    methods=["POST"],
                ),
                Route(prefix + "/{namespace}/{name}/resolve/{rest:path}", self._wrap(self._resolve), methods=["GET"]),
            ]
        self.app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_found})

    # ================================================================= plumbing
    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return error_response(HubError(404, header_safe(f"no such endpoint: {request.method} {request.url.path}")))

    def _wrap(self, handler, *, body: str | None = None, write: bool = False):
        """An endpoint: check the token (a write token for ``write``), read the body whole (``json`` or ``commit``
        limits), then run ``handler(request, body)`` in a worker thread (storage is blocking file IO); a HubError
        becomes the Hub's error response."""

        async def endpoint(request: Request) -> Response:
            try:
                principal = self._principal(request)
                if write:
                    self._require_write(principal)
                data = None
                if body is not None:
                    limit = self.max_commit_bytes if body == "commit" else self.max_json_bytes
                    if principal is None:  # anyone may send these: holding big bodies must need a token
                        limit = min(limit, MAX_ANONYMOUS_JSON_BYTES)
                    data = await read_body(request, limit, self.body_timeout)
                return await run_in_threadpool(handler, request, data)
            except HubError as err:
                return error_response(err)
            except Exception as err:  # noqa: BLE001 - a 500 that names the error, and the traceback in the log
                logger.exception("local hub: unhandled error on %s %s", request.method, request.url.path)
                return error_response(HubError(500, f"internal error: {type(err).__name__}"))

        return endpoint

    # ================================================================= authentication
    def _principal(self, request: Request) -> Principal | None:
        """The request's token holder; None without a token. Unauthenticated servers treat everyone as a writer."""
        if "principal" in request.scope:
            return request.scope["principal"]
        if self.tokens is None:
            principal = Principal(LOCAL_USER, "write", everywhere=True)
        else:
            principal = None
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                principal = self.tokens.lookup(token.strip())
                if principal is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
            elif scheme:
                raise HubError(401, "Authorization header must be 'Bearer <token>'")
        request.scope["principal"] = principal
        return principal

    @staticmethod
    def _require_write(principal: Principal | None) -> None:
        if principal is None:
            raise HubError(401, "this local Hub needs a write token for this request (Authorization: Bearer <token>)")
        if not principal.can_write:
            raise HubError(403, f"the token of {principal.user!r} is read-only: this request needs a write token")

    def _upload_signature(self, oid: str, size: int, expires: int, user: str) -> str:
        return hmac.new(self._upload_secret, f"{oid}:{size}:{expires}:{user}".encode(), hashlib.sha256).hexdigest()

    def _referable(self, principal: Principal, repo: Repo):
        """A test of whether a commit by ``principal`` to ``repo`` may name a stored LFS object without uploading it:
        it is in the repo already, or this user uploaded it to this server. Otherwise whether a hash exists on the
        server (from someone else's private repo) would leak, and knowing a hash would be enough to read the data.
        The repo's files are read once per request, when first needed."""
        in_repo: set[str] | None = None

        def may_reference(oid: str) -> bool:
            nonlocal in_repo
            if not self.storage.has_blob(oid):
                return False
            if principal.everywhere or (principal.user, oid) in self._uploaded:
                return True
            if in_repo is None:
                in_repo = self.storage.head_blobs(repo)
            return oid in in_repo

        return may_reference

    @staticmethod
    def _require_owner(principal: Principal, namespace: str, action: str) -> None:
        if not principal.owns(namespace):
            raise HubError(
                403,
                f"You don't have the rights to {action} in the namespace {namespace!r}: the token of "
                f"{principal.user!r} writes only in its user's and organizations' namespaces",
            )

    def _repo(self, request: Request, repo_type: str | None = None, *, write: bool = False) -> Repo:
        """The request's repo, if the caller may read it (a private repo of someone else is not found, as on the
        Hub); ``write``: and may write it (its namespace is the caller's)."""
        params = request.path_params
        if repo_type is None:
            repo_type = _KINDS.get(params.get("kind", ""))
            if repo_type is None:
                raise HubError(404, f"no such endpoint: {request.method} {request.url.path}")
        name = params["name"]
        if request.url.path.endswith("/info/lfs/objects/batch"):
            if not name.endswith(".git"):
                raise HubError(404, f"no such endpoint: {request.method} {request.url.path}")
            name = name[:-4]
        repo = self.storage.get_repo(repo_type, f"{params['namespace']}/{name}")
        principal = self._principal(request)
        if repo.settings.get("private") and (principal is None or not principal.owns(params["namespace"])):
            raise repo_not_found(repo_type, repo.repo_id)  # as the Hub answers: the name does not leak
        if write:
            self._require_owner(principal, params["namespace"], f"write to {repo.repo_id}")
        return repo

    @staticmethod
    def _prefixed_type(request: Request) -> str:
        first = raw_parts(request)[0]
        return _TYPE_PREFIXES.get(first, "model")

    @staticmethod
    def _args(request: Request, after: int) -> list[str]:
        """Raw path segments after the first ``after`` (the revision and file path, encoded slashes kept)."""
        return raw_parts(request)[after:]

    def _api_rest(self, request: Request) -> str:
        """What follows ``/api/<kind>/<namespace>/<name>/<action>/``: a revision or a branch, encoded slashes kept."""
        return "/".join(self._args(request, 5))

    @staticmethod
    def _json(data: bytes, content_type: str = "") -> dict:
        if not data:
            return {}
        # paths-info is sent form-encoded by huggingface_hub; everything else is JSON.
        if "application/x-www-form-urlencoded" in content_type and not data.lstrip().startswith(b"{"):
            try:
                form = parse_qs(data.decode("utf-8"), strict_parsing=False, errors="strict")
            except UnicodeDecodeError:
                raise HubError(400, "form body is not UTF-8") from None
            return {k: (v if len(v) > 1 or k == "paths" else v[0]) for k, v in form.items()}
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as err:  # ValueError: bad JSON, bad UTF-8, an int over 4,300 digits
            raise HubError(400, f"request body is not valid JSON: {type(err).__name__}") from None
        if not isinstance(parsed, dict):
            raise HubError(400, "request body must be a JSON object")
        return parsed

    def _body(self, request: Request, data: bytes) -> dict:
        return self._json(data, request.headers.get("content-type", ""))

    @staticmethod
    def _base_url(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    # ================================================================= account and repos
    def _whoami(self, request: Request, _):
        principal = self._principal(request)
        if principal is None:
            raise HubError(401, "whoami needs a token (Authorization: Bearer <token>)")
        return JSONResponse(
            {
                "type": "user",
                "name": principal.user,
                "fullname": principal.user,
                "orgs": [{"name": org, "fullname": org, "type": "org"} for org in principal.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": principal.role}},
            }
        )

    def _validate_yaml(self, request: Request, _):
        return JSONResponse({})

    def _create_repo(self, request: Request, data: bytes):
        body = self._body(request, data)
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        principal = self._principal(request)
        name, organization = body.get("name"), body.get("organization") or principal.user
        if not name or not isinstance(name, str) or not isinstance(organization, str):
            raise HubError(400, "repo creation needs a string 'name' (and 'organization', if given)")
        self._require_owner(principal, organization, "create repos")
        repo_id = f"{organization}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        private = body.get("private")
        if private is None:
            private = body.get("visibility") == "private"
        try:
            repo = self.storage.create_repo(repo_type, repo_id, private=bool(private), sdk=body.get("sdk"))
        except HubError as err:
            if err.status != 409:
                raise
            # like the Hub, a 409 names the existing repo: create_repo(exist_ok=True) reads its url from the body
            return error_response(err, {"url": f"{self._base_url(request)}/{prefix}{repo_id}"})
        return JSONResponse({"url": f"{self._base_url(request)}/{repo.url_prefix}{repo.repo_id}", "name": repo.repo_id})

    def _delete_repo(self, request: Request, data: bytes):
        body, principal = self._body(request, data), self._principal(request)
        repo_type, organization, name = (
            body.get("type") or "model",
            body.get("organization") or principal.user,
            body.get("name"),
        )
        if not all(isinstance(v, str) for v in (repo_type, organization, name)):
            raise HubError(400, "repo deletion needs a string 'name' (and 'organization', 'type', if given)")
        self._require_owner(principal, organization, "delete repos")  # the same answer whether the repo exists or not
        self.storage.delete_repo(repo_type, f"{organization}/{name}")
        return JSONResponse({})

    def _repo_info(self, request: Request, _):
        repo = self._repo(request)
        revision = self._api_rest(request) if "rest" in request.path_params else "main"
        commit = self.storage.resolve(repo, revision)
        with_blobs = _flag(request.query_params, "blobs")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update({"size": entry.size, "blobId": entry.git_oid})
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.settings["created_at"],
            "private": repo.settings["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        card = card_data(self.storage, commit)
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
            info.update(
                {
                    "sdk": repo.settings.get("sdk"),
                    "runtime": {"stage": "NO_APP_FILE", "hardware": {"current": None, "requested": None}},
                }
            )
        return JSONResponse(info)

    def _entry_json(self, path: str, entry: FileEntry | None, commit: Commit, expand: bool) -> dict:
        if entry is None:
            data = {
                "type": "directory",
                "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        else:
            data = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                data["lfs"] = {
                    "oid": entry.sha256,
                    "size": entry.size,
                    "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                }
        if expand:
            data["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return data

    def _tree(self, request: Request, _):
        repo = self._repo(request)
        args = self._args(request, 5)
        revision, folder = args[0], "/".join(args[1:])
        commit = self.storage.resolve(repo, revision)
        if folder:
            validate_repo_path(folder)
        query = request.query_params
        expand = _flag(query, "expand")
        files, dirs = folder_entries(commit.files, folder, _flag(query, "recursive"))
        if folder and not files and not dirs:
            raise HubError(404, f"Entry not found: {folder!r} in {repo.repo_id}@{revision}", "EntryNotFound")
        entries = [self._entry_json(d, None, commit, expand) for d in dirs]
        entries += [self._entry_json(f, commit.files[f], commit, expand) for f in files]
        entries.sort(key=lambda e: e["path"])
        return JSONResponse(entries)

    def _paths_info(self, request: Request, data: bytes):
        repo = self._repo(request)
        body = self._body(request, data)
        commit = self.storage.resolve(repo, self._api_rest(request))
        paths = body.get("paths") or []
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "'paths' must be a list of strings")
        if len(paths) > MAX_PATHS_INFO:
            raise HubError(400, f"paths-info takes at most {MAX_PATHS_INFO} paths per request, got {len(paths)}")
        expand = str(body.get("expand", "false")).lower() in ("true", "1")
        folders = {f.rsplit("/", 1)[0] for f in commit.files if "/" in f}
        folders |= {f.rsplit("/", i)[0] for f in folders for i in range(1, f.count("/") + 1)}  # and their parents
        entries = []
        for path in paths:  # cost: files + paths, not files x paths
            path = validate_repo_path(path.strip("/")) if path.strip("/") else ""
            if path in commit.files:
                entries.append(self._entry_json(path, commit.files[path], commit, expand))
            elif path in folders:
                entries.append(self._entry_json(path, None, commit, expand))
        return JSONResponse(entries)

    def _commits(self, request: Request, _):
        history = self.storage.history(self._repo(request), self._api_rest(request))
        return JSONResponse(
            [
                {"id": c.sha, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
                for c in history
            ]
        )

    def _refs(self, request: Request, _):
        branches = self.storage.branches(self._repo(request))
        return JSONResponse(
            {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in sorted(branches.items())
                ],
                "converts": [],
                "tags": [],
                "pullRequests": [],
            }
        )

    def _branch(self, request: Request, data: bytes):
        repo, branch = self._repo(request, write=True), self._api_rest(request)
        if request.method == "DELETE":
            self.storage.delete_branch(repo, branch)
        else:
            body = self._body(request, data)
            starting_point = body.get("startingPoint")
            if starting_point is not None and not isinstance(starting_point, str):
                raise HubError(400, "'startingPoint' must be a string")
            self.storage.create_branch(repo, branch, starting_point, exist_ok=bool(body.get("exist_ok")))
        return JSONResponse({})

    def _settings(self, request: Request, data: bytes):
        body = self._body(request, data)
        private = body.get("private")
        if private is None and "visibility" in body:
            private = body["visibility"] == "private"
        if private is not None and not isinstance(private, bool):
            raise HubError(400, "'private' must be true or false")
        self.storage.update_settings(self._repo(request, write=True), private=private)
        return JSONResponse({})

    # ================================================================= uploads
    def _preupload(self, request: Request, data: bytes):
        repo = self._repo(request, write=True)
        body = self._body(request, data)
        head = self.storage.resolve(repo, self._api_rest(request))
        files = body.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise HubError(400, "'files' must be a list of objects")
        answers = []
        for item in files:
            path, size, sample = item.get("path", ""), item.get("size") or 0, item.get("sample") or ""
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(sample, str):
                raise HubError(
                    400, f"preupload entry for {path!r}: 'size' must be a non-negative integer, 'sample' a string"
                )
            path = validate_repo_path(path)
            try:
                sample_bytes = base64.b64decode(sample)
            except ValueError:
                raise HubError(400, f"preupload entry for {path!r}: 'sample' is not base64") from None
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if wants_lfs(path, size, sample_bytes) else "regular",
                    "shouldIgnore": False,
                }
            )
        return JSONResponse({"files": answers, "commitOid": head.sha})

    def _lfs_batch(self, request: Request, data: bytes):
        repo = self._repo(request, self._prefixed_type(request), write=True)
        body = self._body(request, data)
        if body.get("operation", "upload") != "upload":
            raise HubError(
                400, "the local Hub serves LFS downloads through /resolve; only 'upload' batches are supported"
            )
        objects_in, principal = body.get("objects") or [], self._principal(request)
        may_reference = self._referable(principal, repo)
        if not isinstance(objects_in, list) or not all(isinstance(o, dict) for o in objects_in):
            raise HubError(400, "'objects' must be a list of objects")
        objects = []
        for obj in objects_in:
            oid, size = obj.get("oid", ""), obj.get("size")
            if (
                not isinstance(oid, str)
                or not re.match(r"^[0-9a-f]{64}$", oid)
                or not isinstance(size, int)
                or isinstance(size, bool)
                or size < 0
            ):
                objects.append(
                    {
                        "oid": str(oid)[:100],
                        "size": size if isinstance(size, int) else None,
                        "error": {"code": 422, "message": "invalid oid or size"},
                    }
                )
                continue
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not may_reference(oid):
                expires = int(time.time()) + 3600
                signature = self._upload_signature(oid, size, expires, principal.user)
                answer["actions"] = {
                    "upload": {
                        "href": f"{self._base_url(request)}/lfs-upload/{oid}/{size}"
                        f"?expires={expires}&user={quote(principal.user)}&signature={signature}"
                    }
                }
            objects.append(answer)
        return JSONResponse(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, media_type="application/vnd.git-lfs+json"
        )

    async def _lfs_upload(self, request: Request) -> Response:
        """Streamed to disk as it arrives (never held in memory); each chunk must come within the body timeout."""
        oid, size = request.path_params["oid"], request.path_params["size"]
        if not is_number(size):
            return error_response(HubError(400, f"invalid size {size!r}"))
        query = request.query_params
        expires, signature, user = query.get("expires", ""), query.get("signature", ""), query.get("user", LOCAL_USER)
        if self.tokens is not None:  # the URL from an LFS batch answer, signed (for its user) and not expired
            if (
                not is_number(expires)
                or int(expires) < time.time()
                or not hmac.compare_digest(
                    signature.encode(), self._upload_signature(oid, int(size), int(expires), user).encode()
                )
            ):
                return error_response(
                    HubError(
                        403,
                        "LFS upload URL is not signed by this Hub or has expired: "
                        "ask the LFS batch endpoint for a new one",
                    )
                )
        per_user = self._uploading[user] >= self.max_uploads_per_user
        if per_user or sum(self._uploading.values()) >= self.max_uploads:
            return error_response(  # huggingface_hub retries a 503 with backoff
                HubError(
                    503,
                    f"too many LFS uploads in progress ({'of ' + user if per_user else 'in all'}): retry later",
                )
            )
        self._uploading[user] += 1
        try:
            return await self._receive_upload(request, oid, int(size), user)
        finally:
            self._uploading[user] -= 1

    async def _receive_upload(self, request: Request, oid: str, size: int, user: str) -> Response:
        # the whole transfer has a deadline too (a trickle of one byte per body timeout would otherwise hold it)
        deadline = time.monotonic() + self.body_timeout + size / UPLOAD_MIN_RATE
        stream = request.stream()
        # The body is received here (in ~1 MiB chunks, up to UPLOAD_READ_AHEAD ahead) while the worker thread
        # hashes and writes earlier chunks: receiving and writing overlap, as they did with a blocking server.
        send, receive = anyio.create_memory_object_stream(UPLOAD_READ_AHEAD)

        async def next_chunk() -> bytes | None:
            parts, got = [], 0
            while got < UPLOAD_CHUNK:
                try:
                    with anyio.fail_after(max(0.0, min(self.body_timeout, deadline - time.monotonic()))):
                        part = await stream.__anext__()
                except StopAsyncIteration:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts) if parts else None

        async def receive_body() -> None:
            async with send:
                try:
                    while (chunk := await next_chunk()) is not None:
                        await send.send(chunk)
                except (ClientDisconnect, TimeoutError) as err:  # handed to the writer, which then stores nothing
                    await send.send(err)

        def chunks():
            while True:
                try:
                    item = anyio.from_thread.run(receive.receive)
                except anyio.EndOfStream:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        failure = None
        async with anyio.create_task_group() as group, receive:
            group.start_soon(receive_body)
            try:
                await anyio.to_thread.run_sync(self.storage.put_blob_stream, chunks(), oid, size)
            except (HubError, ClientDisconnect, TimeoutError) as err:
                failure = err
            group.cancel_scope.cancel()  # a refused upload stops receiving
        if isinstance(failure, HubError):
            return error_response(failure)
        if isinstance(failure, ClientDisconnect):
            return error_response(HubError(400, "upload ended before its declared end: nothing was stored"))
        if isinstance(failure, TimeoutError):
            return error_response(
                HubError(
                    408, "the upload stalled or was too slow (the body timeout or its deadline): nothing was stored"
                )
            )
        self._uploaded.add((user, oid))
        return Response(status_code=200)

    def _commit(self, request: Request, data: bytes):
        repo, revision = self._repo(request, write=True), self._api_rest(request)
        if _flag(request.query_params, "create_pr"):
            raise HubError(400, "pull requests are not supported by the local Hub: commit to a branch instead")
        header, operations = None, []
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, RecursionError, KeyError, TypeError):  # ValueError: also an int over 4,300 digits
                raise HubError(400, f"commit payload line {lineno} is not a {{'key', 'value'}} JSON object") from None
            if not isinstance(value, dict):
                raise HubError(400, f"commit payload line {lineno}: 'value' must be an object")
            path = value.get("path", "")
            if key != "header" and not isinstance(path, str):
                raise HubError(400, f"commit payload line {lineno}: 'path' must be a string")
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(
                        400, f"commit payload line {lineno}: unsupported encoding {str(value.get('encoding'))[:50]!r}"
                    )
                content = value.get("content")
                if not isinstance(content, str):
                    raise HubError(400, f"commit payload line {lineno}: 'content' must be a base64 string")
                try:
                    file_data = base64.b64decode(content, validate=True)
                except ValueError:
                    raise HubError(400, f"commit payload line {lineno}: content is not valid base64") from None
                operations.append({"kind": "add_bytes", "path": path, "data": file_data})
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise HubError(
                        400, f"commit payload line {lineno}: unsupported LFS hash {str(value.get('algo'))[:50]!r}"
                    )
                oid = value.get("oid", "")
                if not isinstance(oid, str):
                    raise HubError(400, f"commit payload line {lineno}: 'oid' must be a string")
                operations.append({"kind": "add_lfs", "path": path, "oid": oid})
            elif key in ("deletedFile", "deletedFolder"):
                kind = "delete_file" if key == "deletedFile" else "delete_folder"
                operations.append({"kind": kind, "path": path.rstrip("/")})
            else:
                raise HubError(400, f"commit payload line {lineno}: unknown key {str(key)[:50]!r}")
        if header is None:
            raise HubError(400, "commit payload has no header line")
        title, message, parent = (
            header.get("summary") or "update",
            header.get("description") or "",
            header.get("parentCommit"),
        )
        if (
            not isinstance(title, str)
            or not isinstance(message, str)
            or not (parent is None or isinstance(parent, str))
        ):
            raise HubError(400, "commit header: 'summary', 'description' and 'parentCommit' must be strings")
        for name, text in (("summary", title), ("description", message)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: stored, it would break every later history listing
                raise HubError(400, f"commit header: {name!r} is not valid UTF-8 (a lone surrogate)") from None
        principal = self._principal(request)
        may_reference = self._referable(principal, repo)
        for op in operations:
            if op["kind"] == "add_lfs" and not may_reference(op["oid"]):
                raise HubError(
                    422,
                    f"LFS object {str(op['oid'])[:64]} was never uploaded to {repo.repo_id} (upload it through "
                    "the LFS batch API first)",
                )
        commit = self.storage.commit(
            repo, revision, operations, title=title, message=message, parent_commit=parent, author=principal.user
        )
        url = f"{self._base_url(request)}/{repo.url_prefix}{repo.repo_id}/commit/{commit.sha}"
        return JSONResponse({"success": True, "commitOid": commit.sha, "commitUrl": url})

    # ================================================================= downloads
    def _resolve(self, request: Request, _):
        repo_type = self._prefixed_type(request)
        repo = self._repo(request, repo_type)
        args = self._args(request, 3 if repo_type == "model" else 4)
        revision, path = args[0], "/".join(args[1:])
        commit = self.storage.resolve(repo, revision)
        validate_repo_path(path)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(
                404, f"Entry not found: {path!r} in {repo.repo_type} repo {repo.repo_id}@{revision}", "EntryNotFound"
            )
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(path).name)}",
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        blob = self.storage.blob_path(entry.sha256)
        return BlobResponse(blob, headers=headers, media_type="application/octet-stream", stat_result=os.stat(blob))
