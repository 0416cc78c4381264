"""Local Hub throughput: the Starlette/uvicorn server against the http.server one it replaced, in the same run.

Measures, over loopback HTTP with the standard library's client (so that the client's cost is small and the same
for both): upload and download MB/s of one LFS file (200 MB by default: LFS batch, streamed PUT, commit, GET), and
commits per second of small commits (one regular file each), and the same file copied on this disk (fsynced) and
read back as the physical reference. Each server runs in its own process, as `hub serve` does, so that the client's
work does not share the server's interpreter lock. The old server is read from git (`--baseline-rev`,
the last commit that had it) into a temporary module over today's storage layer, so both serve the same storage
code. The new server is measured with each of uvicorn's HTTP parsers (`hub serve --http h11`, the default, and
`--http httptools`). Target: the new stack not slower than the old one by more than 10% on any measure.

    python benchmarks/hub_throughput.py [--mb 200] [--commits 200] [--baseline-rev 8b6517f] [--http h11 httptools]
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

from report import write_report  # benchmarks/report.py (this folder is sys.path[0])

ROOT = Path(__file__).resolve().parents[1]


def write_baseline(rev: str, folder: Path) -> Path:
    """The http.server implementation at ``rev``, written to a file in ``folder``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/retrieval_policies/hub/server.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "_baseline_server.py"
    path.write_text(source)
    return path


def load_baseline_file(path: Path):
    """That file as ``local_hub._baseline_server`` (its relative imports are today's storage layer)."""
    spec = importlib.util.spec_from_file_location("local_hub._baseline_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def serve(kind: str, root: Path, baseline_file: Path | None) -> None:
    """Child process: serve ``root`` with one server kind, print its URL and token, stop when stdin closes."""
    if kind != "old":  # the new server, with uvicorn's ``kind`` parser
        from local_hub import LocalHub

        hub = LocalHub(root, authenticated=True, http=kind).start()
        url, token, stop = hub.url, hub.token, hub.stop
    else:
        baseline = load_baseline_file(baseline_file)
        server = baseline.make_server(root, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.server_address[:2]
        url, token = f"http://{host}:{port}", None

        def stop():
            server.shutdown()
            server.server_close()

    print(json.dumps({"url": url, "token": token}), flush=True)
    sys.stdin.read()
    stop()


class Served:
    """A server of either kind in its own process (as `hub serve` runs: the client's work does not share its GIL),
    with its URL and a request helper."""

    def __init__(self, kind: str, root: Path, baseline_file: Path):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(root), str(baseline_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started = json.loads(self.process.stdout.readline())
        self.url, self.token = started["url"], started["token"]
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self.address, timeout=600, blocksize=1 << 20)

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
    served.call(
        conn,
        "POST",
        "/api/repos/create",
        json.dumps({"name": "bench", "organization": "org", "type": "model"}),
        {"Content-Type": "application/json"},
    )
    batch = json.loads(
        served.call(
            conn,
            "POST",
            "/org/bench.git/info/lfs/objects/batch",
            json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": size}]}),
            {"Content-Type": "application/json"},
        )
    )
    href = batch["objects"][0]["actions"]["upload"]["href"]
    started = time.perf_counter()
    with open(big, "rb") as f:
        served.call(conn, "PUT", href, f, {"Content-Length": str(size)})
    upload = size / (time.perf_counter() - started) / 1e6
    header = {"key": "header", "value": {"summary": "big", "description": ""}}
    lfs = {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": oid}}
    served.call(
        conn,
        "POST",
        "/api/models/org/bench/commit/main",
        "\n".join(map(json.dumps, (header, lfs))),
        {"Content-Type": "application/x-ndjson"},
    )
    started = time.perf_counter()
    conn.request("GET", "/org/bench/resolve/main/big.bin", headers=served.headers())
    response, received = conn.getresponse(), 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    assert received == size, (received, size)
    download = size / (time.perf_counter() - started) / 1e6
    started = time.perf_counter()
    for i in range(commits):
        line = {
            "key": "file",
            "value": {
                "path": f"small/{i}.txt",
                "encoding": "base64",
                "content": base64.b64encode(f"commit {i}".encode()).decode(),
            },
        }
        served.call(
            conn,
            "POST",
            "/api/models/org/bench/commit/main",
            "\n".join(map(json.dumps, ({"key": "header", "value": {"summary": f"c{i}"}}, line))),
            {"Content-Type": "application/x-ndjson"},
        )
    per_second = commits / (time.perf_counter() - started)
    conn.close()
    return {"upload_MBps": upload, "download_MBps": download, "commits_per_s": per_second}


def measure_disk(big: Path, folder: Path) -> dict:
    """The physical reference: the same file copied on this disk (fsynced, as a stored blob is) and read back."""
    started = time.perf_counter()
    with open(big, "rb") as src, open(folder / "copy.bin", "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    size = big.stat().st_size
    copy = size / (time.perf_counter() - started) / 1e6
    started = time.perf_counter()
    with open(folder / "copy.bin", "rb") as f:
        while f.read(1 << 20):
            pass
    read = size / (time.perf_counter() - started) / 1e6
    (folder / "copy.bin").unlink()
    return {"upload_MBps": copy, "download_MBps": read}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="size of the LFS file in MB (default 200)")
    parser.add_argument("--commits", type=int, default=200, help="small commits timed (default 200)")
    parser.add_argument("--baseline-rev", default="8b6517f", help="a commit with the http.server implementation")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each server, alternating; the best is kept")
    parser.add_argument(
        "--http",
        nargs="+",
        default=["h11", "httptools"],
        choices=["h11", "httptools"],
        help="the new server's HTTP parsers to measure (default both)",
    )
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "ROOT", "BASELINE_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve[0], Path(args.serve[1]), Path(args.serve[2])) or 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = write_baseline(args.baseline_rev, tmp)
        big, digest = tmp / "big.bin", hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(args.mb):
                block = os.urandom(1 << 20)
                digest.update(block)
                f.write(block)
        size, oid = big.stat().st_size, digest.hexdigest()
        kinds = ["old", *args.http]
        results: dict[str, list[dict]] = {kind: [] for kind in [*kinds, "disk"]}
        for repeat in range(args.repeats):
            results["disk"].append(measure_disk(big, tmp))
            for kind in kinds:
                served = Served(kind, tmp / f"{kind}-{repeat}", baseline)
                try:
                    results[kind].append(measure(served, big, oid, size, args.commits))
                finally:
                    served.stop()
    best = {kind: {k: max(r[k] for r in runs) for k in runs[0]} for kind, runs in results.items()}
    print(
        f"{'measure':<16} {'http.server':>12} "
        + " ".join(f"{kind:>10} {'/old':>6} {'/disk':>6}" for kind in args.http)
        + f" {'disk copy':>10}"
    )
    worst = {kind: 1.0 for kind in args.http}
    for key in best["old"]:
        disk = best["disk"].get(key)
        cells = []
        for kind in args.http:
            ratio = best[kind][key] / best["old"][key]
            worst[kind] = min(worst[kind], ratio)
            cells.append(
                f"{best[kind][key]:>10.1f} {ratio:>6.2f} " + (f"{best[kind][key] / disk:>6.2f}" if disk else f"{'':>6}")
            )
        print(f"{key:<16} {best['old'][key]:>12.1f} " + " ".join(cells) + (f" {disk:>10.1f}" if disk else ""))
    print(
        f"{args.mb} MB LFS file, {args.commits} small commits, best of {args.repeats}; target new/old >= 0.90: "
        + "; ".join(
            f"{kind} {'met' if worst[kind] >= 0.9 else 'NOT met'} (worst {worst[kind]:.2f})" for kind in args.http
        )
    )
    write_report(
        "hub_throughput",
        {
            "lfs_file_mb": args.mb,
            "small_commits": args.commits,
            "repeats": args.repeats,
            "best": best,
            "worst_ratio_to_http_server": worst,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
