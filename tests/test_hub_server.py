"""The local Hub's HTTP layer and storage: security checks, atomicity, persistence and the `hub serve` command."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from local_hub import HubError, HubStorage, LocalHub, make_server
from local_hub.storage import validate_repo_path


def http(
    method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None, token: str | None = None
):
    """(status, headers, body bytes) of one request (with ``token`` as a Bearer token); never raises on HTTP errors."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {
        **({"Content-Type": "application/json"} if isinstance(body, dict) else {}),
        **({"Authorization": f"Bearer {token}"} if token else {}),
        **(headers or {}),
    }
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def ndjson(*items: dict) -> bytes:
    return b"\n".join(json.dumps(item).encode() for item in items)


def commit(hub: LocalHub, repo: str, *ops: dict):
    header = {"key": "header", "value": {"summary": "test commit", "description": ""}}
    return http(
        "POST",
        f"{hub.url}/api/models/{repo}/commit/main",
        ndjson(header, *ops),
        {"Content-Type": "application/x-ndjson"},
        token=getattr(hub, "token", None),
    )


def add_file(path: str, content: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "encoding": "base64", "content": base64.b64encode(content).decode()}}


@pytest.mark.parametrize(
    "path", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "a//b", "./x", "a\\b", "C:/x", ".git/config", ""]
)
def test_bad_file_paths_are_refused(path):
    with pytest.raises(HubError) as err:
        validate_repo_path(path)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "path", ["README.md", "a/b/c.safetensors", "1_Pooling/config.json", ".gitattributes", "dir.with.dots/x"]
)
def test_good_file_paths_are_accepted(path):
    assert validate_repo_path(path) == path


def test_commit_with_a_traversal_path_is_refused_and_writes_nothing(local_hub):
    local_hub.storage.create_repo("model", "org/safe")
    before = local_hub.storage.branches(local_hub.storage.get_repo("model", "org/safe"))["main"]
    status, headers, body = commit(
        local_hub, "org/safe", add_file("ok.txt", b"fine"), add_file("../escape.txt", b"bad")
    )
    assert status == 400 and "escape.txt" in json.loads(body)["error"]
    repo = local_hub.storage.get_repo("model", "org/safe")
    assert local_hub.storage.branches(repo)["main"] == before  # the good file of the same commit did not land either
    assert "ok.txt" not in local_hub.storage.resolve(repo, "main").files
    assert not any(p.name == "escape.txt" for p in local_hub.root.parent.rglob("escape.txt"))


def test_resolve_with_dotdot_is_refused(local_hub):
    local_hub.storage.create_repo("model", "org/safe")
    # urllib would normalise "..", so send the raw request line.
    import http.client

    host, port = local_hub.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/org/safe/resolve/main/../../../etc/passwd")
    response = conn.getresponse()
    assert response.status == 400 and b"passwd" not in response.read().split(b"error")[0]
    conn.close()


def test_corrupted_lfs_upload_is_refused_and_nothing_is_half_written(local_hub):
    local_hub.storage.create_repo("model", "org/lfs")
    good = os.urandom(4096)
    oid = hashlib.sha256(good).hexdigest()
    status, _, body = http(
        "POST",
        f"{local_hub.url}/org/lfs.git/info/lfs/objects/batch",
        {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(good)}]},
        token=local_hub.token,
    )
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    corrupted = bytes([good[0] ^ 0xFF]) + good[1:]
    status, _, body = http("PUT", href, corrupted)
    assert status == 400 and "not the declared oid" in json.loads(body)["error"]
    assert not local_hub.storage.has_blob(oid)
    assert list(local_hub.storage.tmp.iterdir()) == []
    # A commit that points at the never-stored object fails, and main does not move.
    head = local_hub.storage.branches(local_hub.storage.get_repo("model", "org/lfs"))["main"]
    status, _, _ = commit(
        local_hub, "org/lfs", {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}}
    )
    assert status == 422
    assert local_hub.storage.branches(local_hub.storage.get_repo("model", "org/lfs"))["main"] == head
    # The right bytes are accepted and then committable.
    assert http("PUT", href, good)[0] == 200
    assert (
        commit(local_hub, "org/lfs", {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}})[0]
        == 200
    )
    status, headers, body = http("GET", f"{local_hub.url}/org/lfs/resolve/main/w.bin")
    assert status == 200 and body == good and headers["X-Linked-Etag"] == f'"{oid}"'


def test_upload_with_wrong_size_is_refused(local_hub):
    data = b"x" * 100
    oid = hashlib.sha256(data).hexdigest()
    local_hub.storage.create_repo("model", "org/size")
    _, _, body = http(
        "POST",
        f"{local_hub.url}/org/size.git/info/lfs/objects/batch",
        {"operation": "upload", "objects": [{"oid": oid, "size": 99}]},
        token=local_hub.token,
    )
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    status, _, body = http("PUT", href, data)
    assert status == 400 and "declared size" in json.loads(body)["error"]
    assert not local_hub.storage.has_blob(oid)


def test_every_commit_keeps_its_sha_and_main_moves(tmp_path):
    storage = HubStorage(tmp_path)
    repo = storage.create_repo("dataset", "org/hist")
    first = storage.commit(repo, "main", [{"kind": "add_bytes", "path": "f.txt", "data": b"1"}], title="one")
    second = storage.commit(repo, "main", [{"kind": "add_bytes", "path": "f.txt", "data": b"2"}], title="two")
    assert storage.resolve(repo, "main").sha == second.sha != first.sha
    old = storage.resolve(repo, first.sha).files["f.txt"]
    assert storage.blob_path(old.sha256).read_bytes() == b"1"
    assert [c.title for c in storage.history(repo, "main")] == ["two", "one", "initial commit"]
    with pytest.raises(HubError) as err:
        storage.commit(
            repo, "main", [{"kind": "add_bytes", "path": "g", "data": b""}], title="x", parent_commit=first.sha
        )
    assert err.value.status == 412


def test_repos_persist_across_server_restarts(tmp_path):
    with LocalHub(tmp_path) as hub:
        hub.storage.create_repo("space", "org/persist", sdk="gradio")
        repo = hub.storage.get_repo("space", "org/persist")
        sha = hub.storage.commit(
            repo, "main", [{"kind": "add_bytes", "path": "app.py", "data": b"print('hi')"}], title="app"
        ).sha
    with LocalHub(tmp_path) as hub:  # a new server process state over the same root
        status, headers, body = http("GET", f"{hub.url}/spaces/org/persist/resolve/{sha}/app.py")
        assert status == 200 and body == b"print('hi')" and headers["X-Repo-Commit"] == sha
        status, _, body = http("GET", f"{hub.url}/api/spaces/org/persist")
        assert json.loads(body)["sdk"] == "gradio"


def test_range_requests(local_hub):
    repo = local_hub.storage.create_repo("model", "org/ranges")
    local_hub.storage.commit(repo, "main", [{"kind": "add_bytes", "path": "r.txt", "data": b"0123456789"}], title="r")
    status, headers, body = http(
        "GET", f"{local_hub.url}/org/ranges/resolve/main/r.txt", headers={"Range": "bytes=2-5"}
    )
    assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
    status, _, body = http("GET", f"{local_hub.url}/org/ranges/resolve/main/r.txt", headers={"Range": "bytes=-3"})
    assert (status, body) == (206, b"789")


def test_blobs_of_several_chunks_come_back_whole_and_in_ranges(local_hub):
    """Blobs are read one 1 MiB chunk ahead: whole files, ranges across chunk boundaries, a range that ends inside
    a chunk and several ranges in one request all come back byte for byte."""
    from local_hub.transport import DOWNLOAD_CHUNK

    data = os.urandom(2 * DOWNLOAD_CHUNK + 12345)
    repo = local_hub.storage.create_repo("model", "org/chunks")
    local_hub.storage.commit(repo, "main", [{"kind": "add_bytes", "path": "big.bin", "data": data}], title="big")
    url = f"{local_hub.url}/org/chunks/resolve/main/big.bin"
    status, _, body = http("GET", url, token=local_hub.read_token)
    assert status == 200 and body == data
    exact = os.urandom(DOWNLOAD_CHUNK)  # a file of exactly one chunk: the read after it is empty
    local_hub.storage.commit(repo, "main", [{"kind": "add_bytes", "path": "exact.bin", "data": exact}], title="exact")
    assert http("GET", f"{local_hub.url}/org/chunks/resolve/main/exact.bin", token=local_hub.read_token)[2] == exact
    start, end = DOWNLOAD_CHUNK - 100, 2 * DOWNLOAD_CHUNK + 99
    status, headers, body = http("GET", url, headers={"Range": f"bytes={start}-{end}"}, token=local_hub.read_token)
    assert status == 206 and body == data[start : end + 1]
    status, headers, body = http(
        "GET", url, headers={"Range": "bytes=10-19, 1048570-1048589"}, token=local_hub.read_token
    )
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
    assert data[10:20] in body and data[1048570:1048590] in body


def test_duplicate_repo_creation_is_a_conflict(local_hub):
    assert (
        http(
            "POST",
            f"{local_hub.url}/api/repos/create",
            {"name": "dup", "organization": "org", "type": "model"},
            token=local_hub.token,
        )[0]
        == 200
    )
    status, _, body = http(
        "POST",
        f"{local_hub.url}/api/repos/create",
        {"name": "dup", "organization": "org", "type": "model"},
        token=local_hub.token,
    )
    assert status == 409 and "already created" in json.loads(body)["error"]
    status, _, _ = http(
        "POST",
        f"{local_hub.url}/api/repos/create",
        {"name": "../../etc", "organization": "org", "type": "model"},
        token=local_hub.token,
    )
    assert status == 400


def test_refuses_non_loopback_binding(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        make_server(tmp_path, host="0.0.0.0")


def _serve(root, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "retrieval_policies.cli", "hub", "serve", "--root", str(root), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_hub_serve_command_prints_url_first_and_persists(tmp_path):
    server = _serve(tmp_path / "root")
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert (
            http("POST", f"{url}/api/repos/create", {"name": "cli", "organization": "org", "type": "model"})[0] == 200
        )
        assert commit(type("H", (), {"url": url})(), "org/cli", add_file("a.txt", b"kept"))[0] == 200
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0
    server = _serve(tmp_path / "root")
    try:
        url = server.stdout.readline().strip()
        status, _, body = http("GET", f"{url}/org/cli/resolve/main/a.txt")
        assert (status, body) == (200, b"kept")
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_hub_serve_refuses_a_public_host(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "retrieval_policies.cli", "hub", "serve", "--root", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "loopback" in result.stderr
