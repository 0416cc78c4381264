"""Who may do what on a local Hub with tokens, as on the Hub: a token acts for its user (and the user's
organizations); it reads public repos and its own private ones, and a write token writes only in its own namespaces.

Two users: alice (member of the organization ``lab``) and bob, each with a read and a write token, and anonymous
requests. The matrix runs over raw HTTP (every route); the client test runs the unmodified ``huggingface_hub``."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json

import pytest
from testing_utils import ClientRunner

from local_hub import LocalHub
from local_hub.auth import add_token


class Users:
    def __init__(self, hub: LocalHub, tokens: dict[str, str]):
        self.hub, self.tokens = hub, tokens

    def call(self, who: str | None, method: str, path: str, body: dict | bytes | None = None) -> tuple[int, object]:
        """(status, parsed JSON or raw bytes) of one request as ``who`` (a key of ``tokens``, or None: anonymous)."""
        host, port = self.hub.url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-ndjson" if isinstance(body, bytes) else "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw


def commit(*lines: dict, summary: str = "c") -> bytes:
    header = {"key": "header", "value": {"summary": summary, "description": ""}}
    return b"\n".join(json.dumps(line).encode() for line in (header, *lines))


def inline(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()}}


@pytest.fixture
def users(tmp_path):
    token_file = tmp_path / "hub.tokens"
    tokens = {
        "alice": add_token(token_file, "alice", "write", ["lab"]),
        "alice-read": add_token(token_file, "alice", "read", ["lab"]),
        "bob": add_token(token_file, "bob", "write"),
        "bob-read": add_token(token_file, "bob", "read"),
    }
    with LocalHub(tmp_path / "hub", token_file=token_file) as hub:
        u = Users(hub, tokens)
        for namespace, name, private in (("alice", "secret", True), ("alice", "open", False), ("lab", "team", True)):
            status, _ = u.call(
                "alice", "POST", "/api/repos/create", {"name": name, "organization": namespace, "private": private}
            )
            assert status == 200, (namespace, name)
            assert (
                u.call("alice", "POST", f"/api/models/{namespace}/{name}/commit/main", commit(inline("f", b"x")))[0]
                == 200
            )
        yield u


READS = [
    ("GET", "/api/models/{repo}"),
    ("GET", "/api/models/{repo}/revision/main"),
    ("GET", "/api/models/{repo}/tree/main"),
    ("GET", "/api/models/{repo}/commits/main"),
    ("GET", "/api/models/{repo}/refs"),
    ("GET", "/{repo}/resolve/main/f"),
    ("POST", "/api/models/{repo}/paths-info/main"),
]


@pytest.mark.parametrize("method, route", READS)
def test_a_private_repo_is_read_only_by_its_owners(users, method, route):
    body = {"paths": ["f"]} if method == "POST" else None
    for repo in ("alice/secret", "lab/team"):
        path = route.format(repo=repo)
        for who in ("alice", "alice-read"):
            assert users.call(who, method, path, body)[0] == 200, (who, path)
        for who in (None, "bob", "bob-read"):  # not found, as on the Hub: the name does not leak
            assert users.call(who, method, path, body)[0] == 404, (who, path)
    for who in (None, "bob", "bob-read", "alice-read"):  # a public repo is everyone's to read
        assert users.call(who, method, route.format(repo="alice/open"), body)[0] == 200, who


def _writes(repo: str) -> list[tuple[str, str, object]]:
    return [
        ("POST", f"/api/models/{repo}/commit/main", commit(inline("g", b"y"))),
        ("POST", f"/api/models/{repo}/preupload/main", {"files": [{"path": "g", "size": 1, "sample": ""}]}),
        ("POST", f"/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "objects": []}),
        ("POST", f"/api/models/{repo}/branch/dev", {}),
        ("PUT", f"/api/models/{repo}/settings", {"private": False}),
    ]


@pytest.mark.parametrize("index", range(5), ids=["commit", "preupload", "lfs-batch", "branch", "settings"])
def test_only_the_owners_write_token_writes(users, index):
    for repo, hidden in (("alice/secret", True), ("lab/team", True), ("alice/open", False)):
        method, path, body = _writes(repo)[index]
        assert users.call(None, method, path, body)[0] == 401, (repo, "anonymous")
        assert users.call("alice-read", method, path, body)[0] == 403, (repo, "alice's read token")
        assert users.call("bob-read", method, path, body)[0] == 403, (repo, "bob's read token")
        # bob's write token: a private repo of alice's is not found; her public one is forbidden
        assert users.call("bob", method, path, body)[0] == (404 if hidden else 403), (repo, "bob")
    repo = users.hub.storage.get_repo("model", "alice/secret")
    assert users.hub.storage.resolve(repo, "main").files.keys() == {".gitattributes", "f"}
    assert repo.settings["private"] and set(users.hub.storage.branches(repo)) == {"main"}
    for repo in ("alice/secret", "lab/team"):  # and the owner (a member, for the organization) does
        method, path, body = _writes(repo)[index]
        assert users.call("alice", method, path, body)[0] == 200, repo


def test_creating_and_deleting_repos_needs_the_namespace(users):
    for organization in ("alice", "lab"):
        body = {"name": "new", "organization": organization}
        assert users.call("bob", "POST", "/api/repos/create", body)[0] == 403
        assert users.call("bob-read", "POST", "/api/repos/create", body)[0] == 403
        for name in ("secret", "open", "team", "never-existed"):  # the same answer whether the repo exists or not
            status, _ = users.call("bob", "DELETE", "/api/repos/delete", {"name": name, "organization": organization})
            assert status == 403, (organization, name)
    assert {r.parent.name + "/" + r.name for r in (users.hub.storage.root / "repos" / "models").glob("*/*")} == {
        "alice/secret",
        "alice/open",
        "lab/team",
    }
    status, created = users.call("bob", "POST", "/api/repos/create", {"name": "bare"})  # no namespace: the user's
    assert status == 200 and created["name"] == "bob/bare"
    assert users.call("bob", "DELETE", "/api/repos/delete", {"name": "bare"})[0] == 200
    assert users.call("alice", "DELETE", "/api/repos/delete", {"name": "team", "organization": "lab"})[0] == 200


def test_whoami_names_the_user_and_its_organizations(users):
    status, me = users.call("alice-read", "GET", "/api/whoami-v2")
    assert status == 200 and me["name"] == "alice" and [o["name"] for o in me["orgs"]] == ["lab"]
    assert me["auth"]["accessToken"]["role"] == "read"
    assert users.call("bob", "GET", "/api/whoami-v2")[1]["orgs"] == []


def test_commits_are_authored_by_the_tokens_user(users):
    assert users.call("alice", "POST", "/api/models/lab/team/commit/main", commit(inline("g", b"y")))[0] == 200
    status, history = users.call("alice-read", "GET", "/api/models/lab/team/commits/main")
    assert status == 200 and [c["authors"] for c in history] == [[{"user": "alice"}]] * 2 + [[{"user": "local-user"}]]


def _lfs(users, who: str, repo: str, data: bytes) -> tuple[int, object]:
    """Commit ``data`` as an LFS file of ``repo`` as ``who``: batch, upload where asked, commit."""
    oid = hashlib.sha256(data).hexdigest()
    body = {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}
    status, batch = users.call(who, "POST", f"/{repo}.git/info/lfs/objects/batch", body)
    assert status == 200
    href = batch["objects"][0].get("actions", {}).get("upload", {}).get("href")
    if href:
        assert users.call(None, "PUT", href.removeprefix(users.hub.url), data)[0] == 200
    line = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}}
    return users.call(who, "POST", f"/api/models/{repo}/commit/main", commit(line)), bool(href)


def test_a_hash_alone_neither_reveals_nor_reaches_someone_elses_data(users):
    secret = b"alice's private weights" * 100
    (status, _), uploaded = _lfs(users, "alice", "alice/secret", secret)
    assert status == 200 and uploaded
    assert users.call("bob", "POST", "/api/repos/create", {"name": "mine"})[0] == 200
    oid = hashlib.sha256(secret).hexdigest()
    body = {"operation": "upload", "objects": [{"oid": oid, "size": len(secret)}]}
    _, batch = users.call("bob", "POST", "/bob/mine.git/info/lfs/objects/batch", body)
    assert "actions" in batch["objects"][0]  # the server does not tell bob that it holds this content
    line = {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid}}
    assert users.call("bob", "POST", "/api/models/bob/mine/commit/main", commit(line))[0] == 422
    (status, _), uploaded = _lfs(users, "bob", "bob/mine", secret)  # uploading the content itself is fine
    assert status == 200 and uploaded
    (status, _), uploaded = _lfs(users, "alice", "alice/secret", secret)  # in her repo already: no upload again
    assert status == 200 and not uploaded


def test_deleting_a_repo_deletes_the_data_only_it_held(users):
    storage = users.hub.storage
    shared, own = b"shared between repos" * 50, b"only in the doomed repo" * 50
    for data in (shared, own):
        assert _lfs(users, "alice", "alice/secret", data)[0][0] == 200
    assert _lfs(users, "alice", "alice/open", shared)[0][0] == 200
    assert users.call("alice", "DELETE", "/api/repos/delete", {"name": "secret"})[0] == 200
    assert not storage.has_blob(hashlib.sha256(own).hexdigest())
    assert storage.has_blob(hashlib.sha256(shared).hexdigest())  # still alice/open's
    assert storage.has_blob(hashlib.sha256(b"x").hexdigest())  # the inline file "f" of the other repos


def test_two_users_through_the_huggingface_hub_client(users, tmp_path):
    """The unmodified client with bob's token against alice's private repo: every call fails as on the Hub; bob's
    own create_repo without a namespace lands in his namespace."""
    out = ClientRunner(users.hub, tmp_path, token=users.tokens["bob"]).json("""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api, seen = HfApi(), {}
        calls = {
            "read": lambda: api.model_info("alice/secret"),
            "download": lambda: api.hf_hub_download("alice/secret", "f"),
            "upload": lambda: api.upload_file(path_or_fileobj=b"z", path_in_repo="z", repo_id="alice/secret"),
            "upload_public": lambda: api.upload_file(path_or_fileobj=b"z", path_in_repo="z", repo_id="alice/open"),
            "create_in_her_namespace": lambda: api.create_repo("alice/mine"),
            "branch": lambda: api.create_branch("alice/open", branch="b"),
            "flip": lambda: api.update_repo_settings("alice/secret", private=False),
            "delete": lambda: api.delete_repo("alice/open"),
        }
        for name, call in calls.items():
            try:
                call()
                seen[name] = "succeeded"
            except HfHubHTTPError as err:
                seen[name] = err.response.status_code
        seen["created"] = api.create_repo("bare").repo_id
        api.upload_file(path_or_fileobj=b"mine", path_in_repo="m.txt", repo_id=seen["created"])
        seen["author"] = api.list_repo_commits(seen["created"])[0].authors
        print(json.dumps(seen))
    """)
    assert out == {
        "read": 404,
        "download": 404,
        "upload": 404,
        "upload_public": 403,
        "create_in_her_namespace": 403,
        "branch": 403,
        "flip": 404,
        "delete": 403,
        "created": "bob/bare",
        "author": ["bob"],
    }


def test_stalled_uploads_hold_only_their_users_slots(users):
    """Uploads in progress are capped per user and in all, below the worker threads: a user's stalled uploads get
    the next one of that user a 503 (which the clients retry), and every other request is still served."""
    import socket
    import time

    app = users.hub._server.hub_app
    app.max_uploads, app.max_uploads_per_user = 2, 1
    assert users.call("bob", "POST", "/api/repos/create", {"name": "mine"})[0] == 200

    def upload_url(who: str, repo: str, data: bytes) -> str:
        body = {"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]}
        batch = users.call(who, "POST", f"/{repo}.git/info/lfs/objects/batch", body)[1]
        return batch["objects"][0]["actions"]["upload"]["href"].removeprefix(users.hub.url)

    def stall(path: str, size: int) -> socket.socket:
        host, port = users.hub.url.removeprefix("http://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode() + b"a")
        return sock

    stalled = []
    try:
        for who, repo in (("alice", "alice/open"), ("bob", "bob/mine")):
            data = f"{who}'s big file".encode() * 1000
            stalled.append(stall(upload_url(who, repo, data), len(data)))
            deadline = time.monotonic() + 10
            while app._uploading[who] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app._uploading[who] == 1, who
        data = b"alice's second file"
        status, answer = users.call(None, "PUT", upload_url("alice", "alice/open", data), data)
        assert status == 503 and "too many LFS uploads" in answer["error"]
        assert users.call("bob-read", "GET", "/api/models/alice/open")[0] == 200  # everything else is served
        assert users.call("bob", "POST", "/api/models/bob/mine/commit/main", commit(inline("g", b"y")))[0] == 200
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 10
    while sum(app._uploading.values()) and time.monotonic() < deadline:  # a cut-off upload frees its slot
        time.sleep(0.01)
    data = b"alice's second file"
    assert users.call(None, "PUT", upload_url("alice", "alice/open", data), data)[0] == 200


def test_two_users_pushing_at_once_each_land_in_their_own_repo_only(users):
    """Concurrent commits by alice and bob (each to their own repo, and each trying the other's): every own commit
    lands, in order, authored by its user; no attempt on the other's repo lands."""
    import threading

    assert users.call("bob", "POST", "/api/repos/create", {"name": "mine", "private": True})[0] == 200
    outcomes: dict[str, list[int]] = {"alice": [], "bob": []}

    def push(who: str, own: str, other: str) -> None:
        for i in range(8):
            outcomes[who].append(
                users.call(
                    who,
                    "POST",
                    f"/api/models/{own}/commit/main",
                    commit(inline(f"{who}-{i}", b"x"), summary=f"{who} {i}"),
                )[0]
            )
            outcomes[who].append(
                users.call(who, "POST", f"/api/models/{other}/commit/main", commit(inline("intruder", b"x")))[0]
            )

    threads = [
        threading.Thread(target=push, args=("alice", "alice/secret", "bob/mine")),
        threading.Thread(target=push, args=("bob", "bob/mine", "alice/secret")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["alice"] == [200, 404] * 8 and outcomes["bob"] == [200, 404] * 8  # the other's repo is private
    for who, repo in (("alice", "alice/secret"), ("bob", "bob/mine")):
        status, history = users.call(who, "GET", f"/api/models/{repo}/commits/main")
        pushed = [c for c in history if c["title"].startswith(f"{who} ")]
        assert status == 200 and [c["title"] for c in pushed] == [f"{who} {i}" for i in reversed(range(8))]
        assert all(c["authors"] == [{"user": who}] for c in pushed)
        files = users.hub.storage.resolve(users.hub.storage.get_repo("model", repo), "main").files
        assert "intruder" not in files and {f"{who}-{i}" for i in range(8)} <= set(files)
