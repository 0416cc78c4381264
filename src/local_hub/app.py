"""Serving the routes: the uvicorn server bound to its socket (one per storage root), ``make_server`` and the
threaded ``LocalHub`` the demo and tests use."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from .auth import Tokens
from .routes import HubApp
from .storage import (
    LOCAL_USER,
    HubStorage,
)
from .transport import HEADER_TIMEOUT_S, FramingGuard, LoopbackGuard, is_loopback, timed_protocol

logger = logging.getLogger(__name__)


def _lock_root(root: Path):
    """An exclusive lock on ``root/.server.lock`` for as long as the returned file is open; a second server on the
    same root is refused (a ValueError naming the root) instead of interleaving commits with the first."""
    import fcntl

    Path(root).mkdir(parents=True, exist_ok=True)
    handle = open(Path(root) / ".server.lock", "a+")  # noqa: SIM115 - held open for the server's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ValueError(f"another local Hub server is already serving {root}: one server per root") from None
    return handle


class LocalHubServer:
    """The app served by uvicorn (h11) on a socket bound here, so that port 0 is known before serving and a bad
    address fails with a clear error."""

    def __init__(
        self,
        app: HubApp,
        host: str,
        port: int,
        *,
        access_log: bool = False,
        loopback_only: bool = True,
        header_timeout: float = HEADER_TIMEOUT_S,
        http: str = "h11",
    ):
        """``http``: uvicorn's HTTP/1.1 parser, ``h11`` (default) or ``httptools`` (C; see docs/experiments/benchmarks.md)."""
        import uvicorn

        protocol = timed_protocol(http, header_timeout)

        self.hub_app = app
        self._root_lock = _lock_root(app.storage.root)  # one server per root: two would lose each other's commits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
        except OSError as err:
            self.socket.close()
            self._root_lock.close()
            raise ValueError(f"cannot bind the local Hub to {host!r} port {port}: {err.strerror or err}") from None
        self.socket.listen(128)
        asgi = FramingGuard(LoopbackGuard(app.app) if loopback_only else app.app)
        config = uvicorn.Config(
            asgi,
            http=protocol,
            lifespan="off",
            log_level="warning",
            access_log=access_log,
            timeout_keep_alive=5,
            server_header=False,
        )
        self.server = uvicorn.Server(config)

    @property
    def server_address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def storage(self) -> HubStorage:
        return self.hub_app.storage

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        self.socket.close()
        self._root_lock.close()  # releases the root for the next server


def make_server(
    root: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_remote: bool = False,
    verbose: bool = False,
    token_file: str | Path | None = None,
    http: str = "h11",
) -> LocalHubServer:
    """A server over ``root`` bound to ``host:port`` (port 0 picks a free port); refuses non-loopback hosts by default.
    ``token_file``: ``token user read|write`` lines (``auth.add_token``); without it nothing is authenticated."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to bind the local Hub to {host!r}: it is meant for loopback use; use a loopback "
            "address (127.0.0.1) or pass allow_remote=True / --allow-remote if you really mean it"
        )
    tokens = Tokens(token_file) if token_file is not None else None
    return LocalHubServer(
        HubApp(HubStorage(root), tokens=tokens),
        host,
        port,
        access_log=verbose,
        loopback_only=not allow_remote,
        http=http,
    )


class LocalHub:
    """The local Hub running in a background thread: ``with LocalHub(root) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(
        self,
        root: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_file: str | Path | None = None,
        authenticated: bool = False,
        user: str = LOCAL_USER,
        orgs: tuple[str, ...] = (),
        http: str = "h11",
    ):
        """``authenticated``: make a token file next to ``root`` with a write token (``.token``) and a read token
        (``.read_token``) for ``user``, a member of ``orgs`` (so it writes in those namespaces), as the demo and the
        tests run; ``token_file``: use that one."""
        from .auth import add_token

        self.root = Path(root)
        self.token = self.read_token = None
        if authenticated and token_file is None:
            token_file = self.root.parent / f"{self.root.name}.tokens"
            self.token, self.read_token = (
                add_token(token_file, user, "write", orgs),
                add_token(token_file, user, "read", orgs),
            )
        self._server = make_server(root, host, port, token_file=token_file, http=http)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def storage(self) -> HubStorage:
        return self._server.storage

    def client_env(self, hf_home: str | Path, *, token: str | None = None, base: dict | None = None) -> dict:
        """``hub_client_env`` for this Hub, with its write token (or ``token``) when it is authenticated."""
        from .client_env import hub_client_env

        return hub_client_env(self.url, hf_home, token=token or self.token or "local-hub-token", base=base)

    def start(self) -> LocalHub:
        import time

        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local Hub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        auth = "unauthenticated" if self._server.hub_app.tokens is None else "token-authenticated"
        return f"LocalHub(url={self.url!r}, root={str(self.root)!r}, {auth})"
