"""The local Hub under hostile HTTP: each attack gets a 4xx (never a 5xx) and leaves storage as it was.

All traffic is on 127.0.0.1, bounded in count and time. Raw sockets send what a well-behaved client never would."""

from __future__ import annotations

import base64
import hashlib
import json
import socket

import pytest
from testing_utils import TEST_ORGS

from local_hub import LocalHub, make_server


def raw_request(hub, data: bytes, *, half_close: bool = False, timeout: float = 10, authorized: bool = False) -> bytes:
    """Send ``data`` as is on a new connection and return every byte answered until the server closes it (requests
    carry ``Connection: close``); ``half_close`` closes the sending side after ``data``, as a client cut off would.
    The hub's write token is added unless ``authorized`` (the request carries its own, or none on purpose)."""
    token = getattr(hub, "token", None)
    if token and not authorized:  # the writer's token, after the request line
        line, _, rest = data.partition(b"\r\n")
        data = line + b"\r\nAuthorization: Bearer " + token.encode() + b"\r\n" + rest
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def snapshot(hub) -> dict:
    """Every file under the storage root except temporary ones, with its bytes."""
    root = hub.storage.root
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "tmp" not in p.parts
    }


def commit_body(*files: tuple[str, bytes]) -> bytes:
    lines = [{"key": "header", "value": {"summary": "attack", "description": ""}}]
    lines += [
        {"key": "file", "value": {"path": p, "encoding": "base64", "content": base64.b64encode(c).decode()}}
        for p, c in files
    ]
    return b"\n".join(json.dumps(line).encode() for line in lines)


@pytest.fixture
def repo(local_hub):
    local_hub.storage.create_repo("model", "org/target")
    return "org/target"


def test_a_commit_body_shorter_than_its_content_length_commits_nothing(local_hub, repo):
    before = snapshot(local_hub)
    body = commit_body(("a.txt", b"first"), ("b.txt", b"second"))
    cut = body[: len(body) // 2 + 40]  # the header and the first file arrive whole
    request = (
        f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + cut
    answer = raw_request(local_hub, request, half_close=True)
    assert status_of(answer) in (None, 400)  # the client is gone: an answer, if it is sent at all, is a 400
    assert snapshot(local_hub) == before


def test_a_chunked_commit_without_its_last_chunk_commits_nothing(local_hub, repo):
    before = snapshot(local_hub)
    body = commit_body(("a.txt", b"first"))
    request = (
        (
            f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n"
    )  # no 0-chunk
    answer = raw_request(local_hub, request, half_close=True)
    assert status_of(answer) in (None, 400)
    assert snapshot(local_hub) == before


def test_the_whole_body_commits(local_hub, repo):
    """The control for the two tests above: the same request sent whole lands."""
    body = commit_body(("a.txt", b"first"))
    request = (
        f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    assert status_of(raw_request(local_hub, request)) == 200
    repo_obj = local_hub.storage.get_repo("model", repo)
    assert "a.txt" in local_hub.storage.resolve(repo_obj, "main").files


def test_an_unparseable_content_length_cannot_smuggle_a_second_request(local_hub, repo):
    before = snapshot(local_hub)
    smuggled = (
        b"DELETE /api/repos/delete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n"
        b'{"name": "target", "organization": "org"}'
    )
    for length in (b"abc", b"12, 13", b"-5", b"0x10"):
        request = (
            b"POST /api/validate-yaml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n" + smuggled
        )
        assert status_of(raw_request(local_hub, request)) == 400, length
    assert snapshot(local_hub) == before and local_hub.storage.get_repo("model", repo)


def test_content_length_with_transfer_encoding_is_a_400_and_runs_no_hidden_request(local_hub, repo):
    """RFC 9112 6.1: a request framed both ways is refused and its connection closed, so the bytes after the chunked
    body (a second, hidden request) never run."""
    before = snapshot(local_hub)
    hidden = (
        b"DELETE /api/repos/delete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n"
        b'{"name": "target", "organization": "org"}'
    )
    request = (
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + hidden
    )
    answer = raw_request(local_hub, request)
    assert status_of(answer) == 400 and answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer.lower()
    assert snapshot(local_hub) == before and local_hub.storage.get_repo("model", repo)


def test_bad_chunk_sizes_are_a_400(local_hub, repo):
    before = snapshot(local_hub)
    request = (
        f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "zz\r\nabc\r\n0\r\n\r\n"
    ).encode()
    assert status_of(raw_request(local_hub, request)) == 400
    assert snapshot(local_hub) == before


@pytest.mark.parametrize(
    "attack",
    [
        test_a_commit_body_shorter_than_its_content_length_commits_nothing,
        test_a_chunked_commit_without_its_last_chunk_commits_nothing,
        test_the_whole_body_commits,
        test_an_unparseable_content_length_cannot_smuggle_a_second_request,
        test_content_length_with_transfer_encoding_is_a_400_and_runs_no_hidden_request,
        test_bad_chunk_sizes_are_a_400,
    ],
)
def test_the_httptools_parser_holds_against_the_framing_attacks(tmp_path, attack):
    """``hub serve --http httptools`` (the C parser, a named option) frames bodies as h11 does: the same tests pass."""
    with LocalHub(tmp_path / "hub", authenticated=True, orgs=TEST_ORGS, http="httptools") as hub:
        hub.storage.create_repo("model", "org/target")
        attack(hub, "org/target")


def test_an_unknown_http_parser_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown HTTP protocol 'h2'"):
        make_server(tmp_path, http="h2")


@pytest.mark.parametrize("revision", ["a%0d%0aSet-Cookie:%20pwned=1", "a%0aX-Injected:%201", "%00%07%1b[31m"])
def test_control_characters_in_a_url_never_reach_a_response_header(local_hub, repo, revision):
    answer = raw_request(
        local_hub,
        f"GET /api/models/{repo}/revision/{revision} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    head, _, _ = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 404
    lines = head.split(b"\r\n")
    assert not any(line.lower().startswith((b"set-cookie", b"x-injected")) for line in lines)
    assert all(0x20 <= byte < 0x7F or byte == 0x09 for line in lines for byte in line)
    message = next(line for line in lines if line.lower().startswith(b"x-error-message:"))
    assert b"Set-Cookie" in message or b"X-Injected" in message or revision.startswith("%00")  # kept, made harmless


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5},
        {"name": ["x"]},
        {"name": "x", "organization": 3},
        {"name": "x", "type": ["model"]},
    ],
)
def test_type_errors_in_repo_creation_are_a_400(local_hub, body):
    before = snapshot(local_hub)
    data = json.dumps(body).encode()
    answer = raw_request(
        local_hub,
        b"POST /api/repos/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data) + data,
    )
    assert status_of(answer) == 400 and snapshot(local_hub) == before


@pytest.mark.parametrize(
    "path, body",
    [
        ("preupload/main", {"files": "abc"}),
        ("preupload/main", {"files": [1]}),
        ("preupload/main", {"files": [{"path": 3}]}),
        ("preupload/main", {"files": [{"path": "a", "size": "big"}]}),
        ("preupload/main", {"files": [{"path": "a", "sample": 5}]}),
        ("paths-info/main", {"paths": [1, 2]}),
        ("paths-info/main", {"paths": {"a": 1}}),
        ("settings", {"private": "yes"}),
        ("branch/b", {"startingPoint": 5}),
        ("preupload/main", ["not", "an", "object"]),
    ],
)
def test_type_errors_in_json_bodies_are_a_400(local_hub, repo, path, body):
    before = snapshot(local_hub)
    data = json.dumps(body).encode()
    method = "PUT" if path == "settings" else "POST"
    answer = raw_request(
        local_hub,
        (
            f"{method} /api/models/{repo}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == 400 and snapshot(local_hub) == before
    data = json.dumps({"operation": "upload", "objects": "x"}).encode()
    answer = raw_request(
        local_hub,
        (
            f"POST /{repo}.git/info/lfs/objects/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == 400


@pytest.mark.parametrize(
    "lines",
    [
        [{"key": "header", "value": "not an object"}],
        [{"key": "header", "value": {"summary": 5}}],
        [{"key": "header", "value": {"summary": "x"}}, {"key": "file", "value": {"path": 7, "content": ""}}],
        [{"key": "header", "value": {"summary": "x"}}, {"key": "file", "value": {"path": "a", "content": 12}}],
        [{"key": "header", "value": {"summary": "x"}}, {"key": "lfsFile", "value": {"path": "a", "oid": ["x"]}}],
        [{"key": "header", "value": {"summary": "x"}}, {"key": "deletedFile", "value": {"path": None}}],
        [{"key": "header", "value": {"summary": "x"}}, [1]],
        [{"key": "header", "value": {"summary": "x", "parentCommit": 1}}],
    ],
)
def test_type_errors_in_commit_lines_are_a_400(local_hub, repo, lines):
    before = snapshot(local_hub)
    data = b"\n".join(json.dumps(line).encode() for line in lines)
    answer = raw_request(
        local_hub,
        (
            f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == 400 and snapshot(local_hub) == before


def test_deeply_nested_and_non_utf8_bodies_are_a_400(local_hub, repo):
    before = snapshot(local_hub)
    for data, kind in (
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"paths=%ff%fe", "application/x-www-form-urlencoded"),
    ):
        answer = raw_request(
            local_hub,
            (
                f"POST /api/models/{repo}/paths-info/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {kind}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + data,
        )
        assert status_of(answer) == 400, data[:20]
    assert snapshot(local_hub) == before


def test_bodies_over_the_limit_are_a_413_and_a_stalled_body_a_408(tmp_path):
    from local_hub.app import LocalHubServer
    from local_hub.routes import HubApp
    from local_hub.storage import HubStorage

    server = LocalHubServer(
        HubApp(HubStorage(tmp_path), max_json_bytes=1000, max_commit_bytes=2000, body_timeout=1), "127.0.0.1", 0
    )
    import threading
    import time

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    while not server.server.started:
        time.sleep(0.01)
    try:
        hub = type("H", (), {"url": server.url})
        big = json.dumps({"name": "x" * 5000}).encode()
        answer = raw_request(
            hub,
            b"POST /api/repos/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(big) + big,
        )
        assert status_of(answer) == 413
        server.storage.create_repo("model", "org/t")
        body = commit_body(("a.txt", b"x" * 3000))
        answer = raw_request(
            hub,
            b"POST /api/models/org/t/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        )
        assert status_of(answer) == 413  # no Content-Length: counted as it arrives
        assert "a.txt" not in server.storage.resolve(server.storage.get_repo("model", "org/t"), "main").files
        assert not list(tmp_path.glob("repos/x*"))
        # A body that stalls before its end (the connection left open) is refused once the body timeout has passed.
        body = commit_body(("stalled.txt", b"x"))
        answer = raw_request(
            hub,
            b"POST /api/models/org/t/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (len(body) + 10) + body,
        )
        assert status_of(answer) == 408
        assert "stalled.txt" not in server.storage.resolve(server.storage.get_repo("model", "org/t"), "main").files
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_anonymous_bodies_are_small_and_paths_info_is_bounded(local_hub, repo):
    """Without a token a JSON body may be 256 KiB (20 connections cannot hold 16 MiB each); paths-info answers for
    many paths in one pass over the files, and refuses more than 10,000."""
    big = json.dumps({"paths": ["a" * 100] * 3000}).encode()  # ~310 KiB
    request = (
        f"POST /api/models/{repo}/paths-info/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(big)}\r\nConnection: close\r\n\r\n"
    ).encode() + big
    assert status_of(raw_request(local_hub, request, authorized=True)) == 413  # no token
    answer = raw_request(local_hub, request)  # the same body with a token
    assert status_of(answer) == 200 and json.loads(answer.partition(b"\r\n\r\n")[2]) == []
    storage = local_hub.storage
    operations = [{"kind": "add_bytes", "path": f"d{i % 7}/e/f{i}.txt", "data": b"x"} for i in range(2000)]
    storage.commit(storage.get_repo("model", repo), "main", operations, title="many files")
    asked = json.dumps({"paths": ["d3", "d3/e", "d3/e/f3.txt", "d3/e/f4.txt", "d", "d3/"] * 1600}).encode()
    request = request.split(b"Content-Length")[0] + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(asked)
    answer = raw_request(local_hub, request + asked)
    found = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert status_of(answer) == 200 and {(e["path"], e["type"]) for e in found} == {
        ("d3", "directory"),
        ("d3/e", "directory"),
        ("d3/e/f3.txt", "file"),
    }
    too_many = json.dumps({"paths": ["x"] * 10_001}).encode()
    request = request.split(b"Content-Length")[0] + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(too_many)
    answer = raw_request(local_hub, request + too_many)
    assert status_of(answer) == 400 and b"at most 10000 paths" in answer


def test_ipv6_loopback_is_bound_or_refused_cleanly(tmp_path):
    try:
        server = make_server(tmp_path, host="::1")
    except ValueError as err:  # a machine without IPv6: a clear error, no traceback
        assert "cannot bind the local Hub to '::1'" in str(err)
        return
    try:
        assert server.url.startswith("http://[::1]:")
    finally:
        server.server_close()


# ------------------------------------------------------------------------------------------------ tokens and private repos
def _get(hub, path: str, token: str | None) -> bytes:
    header = f"Authorization: Bearer {token}\r\n" if token else ""
    return raw_request(
        hub, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}Connection: close\r\n\r\n".encode(), authorized=True
    )


def test_writes_need_a_write_token(local_hub, repo):
    before = snapshot(local_hub)
    body = commit_body(("a.txt", b"x"))
    request = (
        f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n{auth}\r\n"
    ).encode() + body
    for auth, expected in (
        ("", 401),
        ("Authorization: Bearer not-a-token-at-all\r\n", 401),
        ("Authorization: Basic dXNlcjpwYXNz\r\n", 401),
        (f"Authorization: Bearer {local_hub.read_token}\r\n", 403),
    ):
        answer = raw_request(local_hub, request.replace(b"{auth}", auth.encode()), authorized=True)
        assert status_of(answer) == expected, auth
    assert snapshot(local_hub) == before
    write = f"Authorization: Bearer {local_hub.token}\r\n".encode()
    assert status_of(raw_request(local_hub, request.replace(b"{auth}", write), authorized=True)) == 200


def test_whoami_reports_the_tokens_user_and_role(local_hub):
    assert status_of(_get(local_hub, "/api/whoami-v2", None)) == 401
    for token, role in ((local_hub.token, "write"), (local_hub.read_token, "read")):
        answer = _get(local_hub, "/api/whoami-v2", token)
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert status_of(answer) == 200 and body["name"] == "local-user" and body["auth"]["accessToken"]["role"] == role


def test_private_repos_are_invisible_without_a_token(client, local_hub):
    """create_repo(private=True) through the real client makes a private repo; without a token every read of it is
    the client's RepositoryNotFoundError, as on the Hub; with a read token it is there."""
    out = client.json("""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
        api = HfApi()
        api.create_repo("org/secret", private=True)
        api.upload_file(path_or_fileobj=b"hidden", path_in_repo="s.txt", repo_id="org/secret")
        anonymous = HfApi(token=False)
        seen = {}
        for name, call in (("info", lambda: anonymous.model_info("org/secret")),
                           ("files", lambda: anonymous.list_repo_files("org/secret")),
                           ("download", lambda: anonymous.hf_hub_download("org/secret", "s.txt"))):
            try:
                call()
                seen[name] = "visible"
            except RepositoryNotFoundError:
                seen[name] = "RepositoryNotFoundError"
        seen["private"] = api.model_info("org/secret").private
        print(json.dumps(seen))
    """)
    assert out == {
        "info": "RepositoryNotFoundError",
        "files": "RepositoryNotFoundError",
        "download": "RepositoryNotFoundError",
        "private": True,
    }
    answer = _get(local_hub, "/api/models/org/secret", local_hub.read_token)
    assert status_of(answer) == 200 and json.loads(answer.partition(b"\r\n\r\n")[2])["private"] is True
    anonymous = _get(local_hub, "/api/models/org/secret", None)
    assert status_of(anonymous) == 404 and b"RepoNotFound" in anonymous


def test_visibility_changes_through_settings(local_hub, repo):
    data = json.dumps({"visibility": "private"}).encode()
    answer = raw_request(
        local_hub,
        (
            f"PUT /api/models/{repo}/settings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == 200
    assert status_of(_get(local_hub, f"/api/models/{repo}", None)) == 404
    assert status_of(_get(local_hub, f"/api/models/{repo}", local_hub.read_token)) == 200


def test_lfs_upload_urls_must_be_signed_by_the_hub(local_hub, repo):

    data = b"lfs content" * 10
    oid = hashlib.sha256(data).hexdigest()
    for query in ("", "?expires=99999999999&signature=" + "0" * 64, "?expires=1&signature=abc"):
        answer = raw_request(
            local_hub,
            (
                f"PUT /lfs-upload/{oid}/{len(data)}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + data,
        )
        assert status_of(answer) == 403, query
    assert not local_hub.storage.has_blob(oid)


def test_hub_token_add_and_serve_never_print_the_token(tmp_path):
    import os
    import subprocess
    import sys
    import urllib.request

    tokens = tmp_path / "tokens"
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval_policies.cli",
            "hub",
            "token",
            "add",
            "--token-file",
            str(tokens),
            "--user",
            "alice",
            "--role",
            "write",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    token = added.stdout.strip()
    assert added.returncode == 0 and token.startswith("hf_local_") and oct(os.stat(tokens).st_mode & 0o777) == "0o600"
    assert tokens.read_text().split() == [token, "alice", "write"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval_policies.cli",
            "hub",
            "serve",
            "--root",
            str(tmp_path / "root"),
            "--token-file",
            str(tokens),
            "--verbose",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        request = urllib.request.Request(f"{url}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["name"] == "alice"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert token not in out + err and "tokens from" in err and "UNAUTHENTICATED" not in err
    unauthenticated = subprocess.Popen(
        [sys.executable, "-m", "retrieval_policies.cli", "hub", "serve", "--root", str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        unauthenticated.stdout.readline()
    finally:
        unauthenticated.terminate()
        _, err = unauthenticated.communicate(timeout=20)
    assert "WARNING: this local Hub is UNAUTHENTICATED" in err


def test_a_broken_token_file_is_refused_naming_the_line(tmp_path):
    from local_hub.auth import TokenFileError, parse_token_file

    path = tmp_path / "tokens"
    path.write_text("# comment\nhf_local_abcdefghijklmnop alice write\nhf_local_qrstuvwxyzabcdef bob admin\n")
    with pytest.raises(TokenFileError, match=r"line 3: role must be 'read' or 'write'"):
        parse_token_file(path)
    with pytest.raises(ValueError, match="line 3"):
        make_server(tmp_path / "root", token_file=path)


def test_a_token_file_that_breaks_or_goes_refuses_every_token(tmp_path, caplog):
    """Fail closed: after a bad edit or a deleted file no old token stays valid (the server said nothing before)."""
    import os

    from local_hub.auth import Tokens, add_token

    path = tmp_path / "tokens"
    alice = add_token(path, "alice", "write")
    tokens = Tokens(path)
    assert tokens.lookup(alice).user == "alice"
    with open(path, "a") as f:
        f.write("a broken line\n")
    assert tokens.lookup(alice) is None and "refusing every token" in caplog.text
    path.write_text(f"{alice} alice write\n")  # fixed: accepted again
    assert tokens.lookup(alice).user == "alice"
    os.remove(path)
    assert tokens.lookup(alice) is None


def test_hub_token_revoke_removes_a_token_or_a_user(tmp_path, capsys):
    from local_hub.auth import Tokens, add_token, parse_token_file
    from retrieval_policies import cli

    path = tmp_path / "tokens"
    alice, bob, bob2 = add_token(path, "alice"), add_token(path, "bob"), add_token(path, "bob", "read")
    tokens = Tokens(path)
    assert cli.main(["hub", "token", "revoke", "--token-file", str(path), "--user", "bob"]) == 0
    assert "revoked 2 token(s)" in capsys.readouterr().err
    assert tokens.lookup(bob) is None and tokens.lookup(bob2) is None and tokens.lookup(alice).user == "alice"
    assert cli.main(["hub", "token", "revoke", "--token-file", str(path), "--token", alice]) == 0
    assert parse_token_file(path) == {} and oct(path.stat().st_mode & 0o777) == "0o600"
    assert cli.main(["hub", "token", "revoke", "--token-file", str(path), "--user", "nobody"]) == 1


def test_hub_token_add_with_organizations(tmp_path, capsys):
    from local_hub.auth import Tokens
    from retrieval_policies import cli

    path = tmp_path / "tokens"
    assert (
        cli.main(["hub", "token", "add", "--token-file", str(path), "--user", "alice", "--org", "lab", "--org", "x"])
        == 0
    )
    token = capsys.readouterr().out.strip()
    principal = Tokens(path).lookup(token)
    assert principal.orgs == ("lab", "x") and principal.owns("lab") and not principal.owns("bob")
    assert cli.main(["hub", "token", "add", "--token-file", str(path), "--user", "bob", "--org", "bad/org"]) == 2
    assert "invalid user or organization name 'bad/org'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ paths, cards, hosts
@pytest.mark.parametrize(
    "path",
    [
        "a/.git/config",
        ".GIT/hooks/x",
        "deep/er/.Git",
        "x" * 256,
        "d/" + "é" * 128,
        "new\nline.txt",
        "tab\there",
        "bell\x07",
        "del\x7f",
        "esc\x1b[31m",
    ],
)
def test_harmful_file_names_are_refused(local_hub, repo, path):
    before = snapshot(local_hub)
    data = commit_body(("fine.txt", b"ok"), (path, b"bad"))
    answer = raw_request(
        local_hub,
        (
            f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == 400 and snapshot(local_hub) == before


@pytest.mark.parametrize("first, second", [("a", "a/b.txt"), ("a/b.txt", "a"), ("x/y", "x/y/z/w.txt")])
def test_a_file_and_a_folder_of_the_same_name_are_refused_in_both_orders(local_hub, repo, first, second):
    def send(path):
        data = commit_body((path, b"content"))
        return raw_request(
            local_hub,
            (
                f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + data,
        )

    assert status_of(send(first)) == 200
    before = snapshot(local_hub)
    answer = send(second)
    assert status_of(answer) == 409 and b"both a file and a folder" in answer and snapshot(local_hub) == before
    both = commit_body(("p", b"1"), ("p/q", b"2"))  # within one commit too
    answer = raw_request(
        local_hub,
        (
            f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(both)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + both,
    )
    assert status_of(answer) == 409 and snapshot(local_hub) == before


def _info_with_card(hub, repo: str, yaml_text: str) -> bytes:
    """model_info's raw answer after a commit of a README whose front matter is ``yaml_text``."""
    storage = hub.storage
    storage.commit(
        storage.get_repo("model", repo),
        "main",
        [{"kind": "add_bytes", "path": "README.md", "data": f"---\n{yaml_text}\n---\n# card\n".encode()}],
        title="card",
    )
    return _get(hub, f"/api/models/{repo}", hub.token)


@pytest.mark.parametrize(
    "yaml_text",
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]",
        "a: &a [*a]",
        "x: " + "[" * 5000 + "]" * 5000,
    ],
)
def test_hostile_card_yaml_gives_a_small_answer_without_card_data(local_hub, repo, yaml_text):
    answer = _info_with_card(local_hub, repo, yaml_text)
    assert status_of(answer) == 200 and len(answer) < 10_000
    assert "cardData" not in json.loads(answer.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("date: 2024-01-01", {"date": "2024-01-01"}),
        ("at: 2024-01-01 10:30:00", {"at": "2024-01-01T10:30:00"}),
        ("score: .nan\nbest: .inf\nok: 1.5", {"ok": 1.5}),
        ("blob: !!binary aGVsbG8=\nlicense: mit", {"license": "mit"}),
        ("tags: !!set {a: null}", {"tags": ["a"]}),
        ("2024-01-01: new year", {"2024-01-01": "new year"}),
        ("big: " + "9" * 5000 + "\nlicense: mit", None),  # PyYAML refuses to build it: a card without metadata
        ("big: " + "9" * 4200 + "\nlicense: mit", {"license": "mit"}),
    ],
)
def test_card_yaml_the_hub_accepts_is_card_data_as_json(local_hub, repo, yaml_text, expected):
    """Card YAML the real Hub accepts never makes a 500: dates become ISO strings, sets lists, and values JSON cannot
    hold (non-finite numbers, binary, integers too long to print) are left out."""
    answer = _info_with_card(local_hub, repo, yaml_text)
    assert status_of(answer) == 200, answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2]).get("cardData") == expected


@pytest.mark.parametrize(
    "headers, expected",
    [
        ("Host: 127.0.0.1\r\n", 200),
        ("Host: localhost:1234\r\n", 200),
        ("Host: [::1]:80\r\n", 200),
        ("Host: evil.example\r\n", 403),
        ("Host: 127.0.0.1.evil.example\r\n", 403),
        ("Host: 127.0.0.1\r\nOrigin: http://127.0.0.1:5000\r\n", 200),
        ("Host: 127.0.0.1\r\nOrigin: https://evil.example\r\n", 403),
        ("Host: 127.0.0.1\r\nOrigin: null\r\n", 403),
    ],
)
def test_host_and_origin_must_be_loopback(local_hub, headers, expected):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name; a cross-origin page sends its Origin."""
    data = json.dumps({"name": "rebound", "organization": "org", "type": "model"}).encode()
    answer = raw_request(
        local_hub,
        (
            f"POST /api/repos/create HTTP/1.1\r\n{headers}Content-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data,
    )
    assert status_of(answer) == expected
    created = (local_hub.storage.root / "repos" / "models" / "org" / "rebound").exists()
    assert created == (expected == 200)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_silent_or_trickling_connection_is_closed_after_the_header_timeout(tmp_path, http):
    import threading
    import time

    from local_hub.app import LocalHubServer
    from local_hub.routes import HubApp
    from local_hub.storage import HubStorage

    server = LocalHubServer(HubApp(HubStorage(tmp_path)), "127.0.0.1", 0, header_timeout=0.5, http=http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    while not server.server.started:
        time.sleep(0.01)
    try:
        host, port = server.server_address
        for trickle in (b"", b"GET /api/whoami-v2 HTTP/1.1\r\nHost: 127"):
            with socket.create_connection((host, port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(trickle)
                assert sock.recv(100) == b""  # closed by the server, not by our 5 s timeout
                assert time.monotonic() - started < 3
        with socket.create_connection((host, port), timeout=5) as sock:  # a complete head is answered, not cut
            sock.sendall(b"GET /api/whoami-v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 ")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_temporary_files_left_by_a_kill_are_removed_at_start(tmp_path):
    from local_hub.storage import HubStorage

    storage = HubStorage(tmp_path)
    (storage.tmp / "tmpabc123").write_bytes(b"half an upload")
    (storage.tmp / "tmpdef456.json").write_text("{")
    restarted = HubStorage(tmp_path)
    assert restarted.removed_at_start == 2 and list(restarted.tmp.iterdir()) == []


def test_a_full_disk_leaves_no_temporary_files_and_the_next_commit_lands(tmp_path, monkeypatch):
    """Every failed write removes its temp file, so once space is free again the server works without a restart."""
    import errno
    import os

    from local_hub.storage import HubStorage

    storage = HubStorage(tmp_path)
    repo = storage.create_repo("model", "org/full")
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    operations = [{"kind": "add_bytes", "path": "big.txt", "data": b"x" * 1000}]
    with pytest.raises(OSError, match="No space"):
        storage.commit(repo, "main", operations, title="full")
    with pytest.raises(OSError, match="No space"):
        storage.put_blob_stream([b"abc"], hashlib.sha256(b"abc").hexdigest(), 3)
    assert list(storage.tmp.iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed
    assert "big.txt" in storage.commit(repo, "main", operations, title="room again").files


# ------------------------------------------------------------------------------------------------ property-based fuzz
def _light_snapshot(hub) -> dict:
    """Refs, repo settings and the list of blobs and commits: what any accepted write changes."""
    root = hub.storage.root
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.suffix == ".json" and p.parent.name != "commits" else b"")
        for p in root.rglob("*")
        if p.is_file() and "tmp" not in p.parts
    }


class _Connection:
    """One keep-alive HTTP connection to the hub (reopened when the server closes it)."""

    def __init__(self, hub):
        import http.client

        self.hub, self.http = hub, http.client
        self.conn = None

    def request(self, method: str, path: str, body: bytes, content_type: str) -> int:
        host, port = self.hub.url.removeprefix("http://").rsplit(":", 1)
        for attempt in range(2):
            if self.conn is None:
                self.conn = self.http.HTTPConnection(host, int(port), timeout=30)
            try:
                self.conn.request(
                    method,
                    path,
                    body=body,
                    headers={"Content-Type": content_type, "Authorization": f"Bearer {self.hub.token}"},
                )
                response = self.conn.getresponse()
                response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status
            except (self.http.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


HUGE_INT = "__a JSON integer of 5,000 digits__"  # json.dumps cannot write one: put in after encoding


def _hostile_scalars(text_size: int):
    """What a client never sends but an attacker does: lone surrogates (escaped as JSON allows), Unicode digits,
    integers beyond what Python converts, besides the ordinary scalars."""
    from hypothesis import strategies as st

    return (
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.text(max_size=text_size)
        | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
        | st.sampled_from(["²", "٣", "１２", "1\u0660", HUGE_INT, "\x00", "a/../b"])
    )


def _encode(value) -> bytes:
    return json.dumps(value).encode().replace(json.dumps(HUGE_INT).encode(), b"9" * 5000)


def test_fuzzed_commit_payloads_never_give_a_5xx_or_change_a_refused_repo(local_hub, repo):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = _hostile_scalars(30) | st.floats(allow_nan=False)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    paths = st.sampled_from(
        ["a.txt", "d/b.txt", "../x", ".git/x", "", "a.txt/c", 5, None, "x" * 300, "ok\n.txt"]
    ) | _hostile_scalars(20)
    operation = (
        st.fixed_dictionaries(
            {
                "key": st.sampled_from(["file", "lfsFile", "deletedFile", "deletedFolder", "header", "other", 3]),
                "value": st.fixed_dictionaries(
                    {},
                    optional={
                        "path": paths,
                        "content": st.sampled_from(["aGk=", "!!", "", 7, None]),
                        "encoding": st.sampled_from(["base64", "utf-8", 1]),
                        "oid": st.text(max_size=64) | values,
                        "algo": st.sampled_from(["sha256", "md5"]),
                        "summary": st.text(max_size=10) | values,
                        "parentCommit": st.none() | st.text(max_size=40) | values,
                    },
                )
                | values,
            }
        )
        | values
    )
    connection = _Connection(local_hub)
    counts = {"requests": 0, "accepted": 0}

    @settings(
        max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
    )
    @given(st.lists(operation, min_size=0, max_size=5), st.booleans())
    def fuzz(lines, raw_bytes):
        body = b"\n".join(_encode(line) if not raw_bytes or i else b"\xff{not json" for i, line in enumerate(lines))
        before = _light_snapshot(local_hub)
        status = connection.request("POST", f"/api/models/{repo}/commit/main", body, "application/x-ndjson")
        counts["requests"] += 1
        assert status < 500, (status, body[:300])
        if status >= 400:
            assert _light_snapshot(local_hub) == before, (status, body[:300])
        else:
            counts["accepted"] += 1

    fuzz()
    assert counts["requests"] == 1000 and counts["accepted"] > 0  # some fuzzed commits were valid and landed


def test_fuzzed_json_bodies_never_give_a_5xx(local_hub, repo):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = _hostile_scalars(20)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )
    keys = st.sampled_from(
        [
            "name",
            "organization",
            "type",
            "private",
            "visibility",
            "sdk",
            "files",
            "paths",
            "expand",
            "operation",
            "objects",
            "startingPoint",
            "exist_ok",
            "path",
            "size",
            "sample",
            "oid",
        ]
    )
    bodies = (
        st.dictionaries(keys, values | st.lists(st.dictionaries(keys, values, max_size=4), max_size=3), max_size=5)
        | values
    )
    endpoints = st.sampled_from(
        [
            ("POST", "/api/repos/create"),
            ("POST", f"/api/models/{repo}/preupload/main"),
            ("POST", f"/api/models/{repo}/paths-info/main"),
            ("POST", f"/{repo}.git/info/lfs/objects/batch"),
            ("PUT", f"/api/models/{repo}/settings"),
            ("POST", f"/api/models/{repo}/branch/fuzz"),
            ("POST", "/api/validate-yaml"),
            ("DELETE", f"/api/models/{repo}/branch/fuzz"),
        ]
    )
    connection = _Connection(local_hub)
    counts = {"requests": 0}

    @settings(
        max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
    )
    @given(endpoints, bodies, st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]))
    def fuzz(endpoint, body, content_type):
        method, path = endpoint
        status = connection.request(method, path, _encode(body), content_type)
        counts["requests"] += 1
        assert status < 500, (status, method, path, body)

    fuzz()
    assert counts["requests"] == 1000


def test_fuzzed_card_yaml_never_gives_a_5xx(local_hub, repo):
    """Cards built from YAML the Hub accepts and YAML it does not (tags, dates, non-finite and huge numbers, anchors,
    surrogates): committing them and reading the repo's info never answers a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.sampled_from(
        [
            "2024-01-01",
            "2024-01-01T10:00:00Z",
            ".nan",
            "-.inf",
            "!!binary aGVsbG8=",
            "!!set {a, b}",
            "!!timestamp 2001-12-14",
            "!!python/object:os.system x",
            "!!float x",
            "9" * 5000,
            "&a [*a]",
            "*undefined",
            "'\udc80'",
            '"\ud800"',
            "[1, {2: 3}]",
            "{2024-01-01: x}",
            "null",
            "~",
            "text",
        ]
    )
    keys = st.sampled_from(["tags", "pipeline_tag", "library_name", "model-index", "2024-01-02", "? complex", "x"])
    card = st.lists(st.tuples(keys, values), max_size=5).map(
        lambda items: "---\n" + "".join(f"{k}: {v}\n" for k, v in items) + "---\n# card\n"
    )
    connection = _Connection(local_hub)
    counts = {"requests": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    @given(card)
    def fuzz(text):
        content = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()
        body = (
            _encode({"key": "header", "value": {"summary": "card"}})
            + b"\n"
            + _encode({"key": "file", "value": {"path": "README.md", "encoding": "base64", "content": content}})
        )
        status = connection.request("POST", f"/api/models/{repo}/commit/main", body, "application/x-ndjson")
        assert status < 500, (status, text)
        status = connection.request("GET", f"/api/models/{repo}", b"", "application/json")
        counts["requests"] += 2
        assert status < 500, (status, text)

    fuzz()
    assert counts["requests"] == 300


@pytest.mark.parametrize(
    "what, request_line, body",
    [
        (
            "an integer over 4,300 digits in JSON",
            "POST /api/repos/create",
            b'{"name": "big", "n": 1' + b"0" * 5000 + b"}",
        ),
        (
            "an integer over 4,300 digits in a commit",
            "POST /api/models/org/target/commit/main",
            b'{"key": "header", "value": {"summary": "s", "n": 1' + b"0" * 5000 + b"}}\n",
        ),
        (
            "a lone surrogate in a path",
            "POST /api/models/org/target/commit/main",
            b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": "a\\ud800", "content": "eA==", "encoding": "base64"}}\n',
        ),
        (
            "a lone surrogate in a commit message",
            "POST /api/models/org/target/commit/main",
            b'{"key": "header", "value": {"summary": "bad \\ud800"}}\n{"key": "file", "value": {"path": "a.txt", "content": "eA==", "encoding": "base64"}}\n',
        ),
        ("a Unicode digit as an LFS size", "PUT /lfs-upload/" + "a" * 64 + "/%C2%B2", b"x"),
    ],
)
def test_hostile_values_are_a_400_not_a_500(local_hub, repo, what, request_line, body):
    before = snapshot(local_hub)
    answer = raw_request(
        local_hub,
        f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert 400 <= status_of(answer) < 500, (what, answer[:300])
    assert snapshot(local_hub) == before
    # the history still lists after the refused commit
    assert status_of(_get(local_hub, f"/api/models/{repo}/commits/main", local_hub.token)) == 200


def test_a_second_server_on_the_same_root_is_refused(tmp_path):
    first = make_server(tmp_path / "root")
    try:
        with pytest.raises(ValueError, match="already serving .*one server per root"):
            make_server(tmp_path / "root")
    finally:
        first.server_close()
    make_server(tmp_path / "root").server_close()  # released with the first
