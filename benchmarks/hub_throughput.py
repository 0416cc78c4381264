"""Local Hub throughput: the Starlette/uvicorn server against the http.server one it replaced, in the same run.

Measures, over loopback HTTP with the standard library's client (so that the client's cost is small and the same
for both): upload and download MB/s of one LFS file (200 MB by default: LFS batch, streamed PUT, commit, GET), and
commits per second of small commits (one regular file each). The old server is read from git (`--baseline-rev`,
the last commit that had it) into a temporary module over today's storage layer, so both serve the same storage
code. Target: the new stack not slower than the old one by more than 10% on any measure.

    python benchmarks/hub_throughput.py [--mb 200] [--commits 200] [--baseline-rev 8b6517f]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_baseline(rev: str, folder: Path):
    """The http.server implementation at ``rev`` as ``retrieval_policies.hub._baseline_server``."""
    source = subprocess.run(["git", "show", f"{rev}:src/retrieval_policies/hub/server.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "_baseline_server.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("retrieval_policies.hub._baseline_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Served:
    """A server of either kind running in a thread, with its URL and a request helper."""

    def __init__(self, kind: str, root: Path, baseline=None):
        if kind == "new":
            from retrieval_policies.hub import LocalHub

            self.hub = LocalHub(root, authenticated=True).start()
            self.url, self.token, self.stop = self.hub.url, self.hub.token, self.hub.stop
        else:
            server = baseline.make_server(root, "127.0.0.1", 0)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            host, port = server.server_address[:2]
            self.url, self.token = f"http://{host}:{port}", None

            def stop():
                server.shutdown()
                server.server_close()
                thread.join()

            self.stop = stop
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self.address, timeout=600)

    def headers(self, extra: dict | None = None) -> dict:
        return {**({"Authorization": f"Bearer {self.token}"} if self.token else {}), **(extra or {})}

    def call(self, conn, method: str, path_or_url: str, body=None, headers: dict | None = None) -> bytes:
        path = path_or_url.removeprefix(self.url)
        conn.request(method, path, body=body, headers=self.headers(headers))
        response = conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data


def measure(served: Served, big: Path, oid: str, size: int, commits: int) -> dict:
    conn = served.connection()
    served.call(conn, "POST", "/api/repos/create", json.dumps({"name": "bench", "organization": "org", "type": "model"}),
                {"Content-Type": "application/json"})
    batch = json.loads(served.call(conn, "POST", "/org/bench.git/info/lfs/objects/batch",
                                   json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": size}]}),
                                   {"Content-Type": "application/json"}))
    href = batch["objects"][0]["actions"]["upload"]["href"]
    started = time.perf_counter()
    with open(big, "rb") as f:
        served.call(conn, "PUT", href, f, {"Content-Length": str(size)})
    upload = size / (time.perf_counter() - started) / 1e6
    header = {"key": "header", "value": {"summary": "big", "description": ""}}
    lfs = {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": oid}}
    served.call(conn, "POST", "/api/models/org/bench/commit/main", "\n".join(map(json.dumps, (header, lfs))),
                {"Content-Type": "application/x-ndjson"})
    started = time.perf_counter()
    conn.request("GET", "/org/bench/resolve/main/big.bin", headers=served.headers())
    response, received = conn.getresponse(), 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    assert received == size, (received, size)
    download = size / (time.perf_counter() - started) / 1e6
    started = time.perf_counter()
    for i in range(commits):
        line = {"key": "file", "value": {"path": f"small/{i}.txt", "encoding": "base64",
                                         "content": base64.b64encode(f"commit {i}".encode()).decode()}}
        served.call(conn, "POST", "/api/models/org/bench/commit/main",
                    "\n".join(map(json.dumps, ({"key": "header", "value": {"summary": f"c{i}"}}, line))),
                    {"Content-Type": "application/x-ndjson"})
    per_second = commits / (time.perf_counter() - started)
    conn.close()
    return {"upload_MBps": upload, "download_MBps": download, "commits_per_s": per_second}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="size of the LFS file in MB (default 200)")
    parser.add_argument("--commits", type=int, default=200, help="small commits timed (default 200)")
    parser.add_argument("--baseline-rev", default="8b6517f", help="a commit with the http.server implementation")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each server, alternating; the best is kept")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = load_baseline(args.baseline_rev, tmp)
        big, digest = tmp / "big.bin", hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(args.mb):
                block = os.urandom(1 << 20)
                digest.update(block)
                f.write(block)
        size, oid = big.stat().st_size, digest.hexdigest()
        results: dict[str, list[dict]] = {"old": [], "new": []}
        for repeat in range(args.repeats):
            for kind in ("old", "new"):
                served = Served(kind, tmp / f"{kind}-{repeat}", baseline)
                try:
                    results[kind].append(measure(served, big, oid, size, args.commits))
                finally:
                    served.stop()
    best = {kind: {k: max(r[k] for r in runs) for k in runs[0]} for kind, runs in results.items()}
    print(f"{'measure':<16} {'http.server':>12} {'starlette':>12} {'new/old':>8}")
    worst = 1.0
    for key in best["old"]:
        ratio = best["new"][key] / best["old"][key]
        worst = min(worst, ratio)
        print(f"{key:<16} {best['old'][key]:>12.1f} {best['new'][key]:>12.1f} {ratio:>8.2f}")
    print(f"{args.mb} MB LFS file, {args.commits} small commits, best of {args.repeats}; target new/old >= 0.90: "
          f"{'met' if worst >= 0.9 else 'NOT met'} (worst {worst:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
