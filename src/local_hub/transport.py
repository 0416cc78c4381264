"""The HTTP transport under the Hub's routes: bodies read whole within limits, files streamed from a reader
thread, the loopback and request-framing guards, and uvicorn's protocols with a deadline for the request head."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from contextlib import asynccontextmanager

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse

from .storage import (
    HubError,
)

logger = logging.getLogger(__name__)


BODY_TIMEOUT_S = 120.0  # a body that has not arrived whole by then is refused (a stalled or cut-off upload)
DOWNLOAD_CHUNK = 1 << 20  # bytes read ahead at a time when streaming a file to a client
HEADER_TIMEOUT_S = 10.0  # a connection whose request line and headers have not arrived by then is closed
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header_safe(text: str, limit: int = 500) -> str:
    """``text`` as a header value: printable ASCII only (no CR/LF or other control characters), at most ``limit``."""
    return _CONTROL.sub(" ", text.encode("ascii", "replace").decode())[:limit]


def is_number(text: str) -> bool:
    """ASCII digits only, and few enough to convert (``"²".isdigit()`` is true and ``int("²")`` raises)."""
    return bool(re.fullmatch(r"[0-9]{1,30}", text))


def error_response(err: HubError, extra: dict | None = None) -> JSONResponse:
    headers = {"X-Error-Message": header_safe(err.message)}
    if err.code:
        headers["X-Error-Code"] = header_safe(err.code)
    return JSONResponse({"error": err.message, **(extra or {})}, err.status, headers)


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The whole request body, or a HubError: larger than ``limit``, cut off before its end (the client went away,
    or a chunked body without its last chunk), or not complete within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and is_number(declared) and int(declared) > limit:
        raise HubError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HubError(413, f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        raise HubError(
            400, f"request body ended after {size} bytes, before its declared end: nothing was stored"
        ) from None
    except TimeoutError:
        raise HubError(408, f"request body not complete after {timeout:.0f} s: nothing was stored") from None
    return b"".join(chunks)


class _ReadAheadFile:
    """A blob read one chunk ahead in a worker thread: the next chunk comes off the disk while the current one is
    being sent, so the socket does not sit idle during each read (http.server's blocking writes overlapped the two
    for free; reading on demand halved the download rate). Reads return at most ``size`` bytes, as a file's do."""

    def __init__(self, path, chunk_size: int):
        self._file = open(path, "rb")  # noqa: SIM115 (closed by aclose)
        self._chunk = chunk_size
        self._loop = asyncio.get_running_loop()
        self._ahead: asyncio.Future | None = None
        self._left = b""

    def _read_ahead(self) -> None:
        self._ahead = self._loop.run_in_executor(None, self._file.read, self._chunk)

    async def _settle(self) -> None:
        if self._ahead is not None:
            await self._ahead
            self._ahead = None

    async def seek(self, offset: int) -> None:
        await self._settle()
        self._left = b""
        self._file.seek(offset)

    async def read(self, size: int) -> bytes:
        if not self._left:
            if self._ahead is None:
                self._read_ahead()
            self._left, self._ahead = await self._ahead, None
            if len(self._left) == self._chunk:  # a full chunk: more may follow
                self._read_ahead()
        chunk, self._left = self._left[:size], self._left[size:]
        return chunk

    async def aclose(self) -> None:
        try:
            await self._settle()
        finally:
            self._file.close()


class BlobResponse(FileResponse):
    """Starlette's FileResponse (ranges, HEAD), reading 1 MiB at a time (not 64 KiB) and one chunk ahead.

    Overrides FileResponse's file opener, a private hook of the pinned Starlette (pyproject pins it exactly)."""

    chunk_size = DOWNLOAD_CHUNK

    @asynccontextmanager
    async def _open_file(self):
        file = _ReadAheadFile(self.path, self.chunk_size)
        try:
            yield file
        finally:
            with anyio.CancelScope(shield=True):  # closing must finish even when the transfer is cancelled
                await file.aclose()


def _host_name(host: str) -> str:
    """The name in a Host header or an origin's netloc, without the port ("[::1]:80" -> "::1")."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class LoopbackGuard:
    """ASGI middleware for a loopback server: a request must name a loopback Host (so a DNS-rebinding page cannot
    reach it by another name), and a browser's Origin, when sent, must be a loopback one (so a page of another site
    cannot post to it: a cross-origin 'simple' POST is not stopped by CORS)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            from starlette.datastructures import Headers

            headers = Headers(scope=scope)
            host, origin = headers.get("host", ""), headers.get("origin")
            problem = None
            if not is_loopback(_host_name(host)):
                problem = (
                    f"Host {host[:100]!r} is not a loopback address: this local Hub only answers requests to itself"
                )
            elif origin is not None and not is_loopback(_host_name(origin.split("://", 1)[-1].split("/", 1)[0])):
                problem = f"requests from the web origin {origin[:100]!r} are refused (not a loopback origin)"
            if problem:
                return await error_response(HubError(403, problem))(scope, receive, send)
        return await self.app(scope, receive, send)


class FramingGuard:
    """ASGI middleware: a request with both Content-Length and Transfer-Encoding is refused with 400 and the
    connection closed (RFC 9112 6.1: the two disagree on where the body ends, the classic request-smuggling shape;
    h11 reads it by Transfer-Encoding and would run the bytes after it as a second request)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope.get("headers", [])}
            if b"content-length" in names and b"transfer-encoding" in names:
                response = error_response(
                    HubError(400, "a request may not carry both Content-Length and Transfer-Encoding")
                )
                response.headers["Connection"] = "close"
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


HTTP_PROTOCOLS = ("h11", "httptools")  # uvicorn's two HTTP/1.1 parsers; h11 is the default


class _HeadTimer:
    """A header timeout for uvicorn's HTTP protocols: a connection whose request head is not complete within
    ``header_timeout`` seconds (a silent or trickling client) is closed. uvicorn's own keep-alive timeout closes
    idle connections between requests; the body timeout is the app's."""

    header_timeout: float
    _head_timer = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def _waiting_for_head(self) -> bool:
        raise NotImplementedError

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


def timed_protocol(http: str, header_timeout: float):
    """uvicorn's ``http`` protocol class (``h11``, the pure-Python parser, or ``httptools``, the C one) with the
    header timeout of :class:`_HeadTimer`.

    The only subclass of uvicorn's (private) protocol classes, kept because the need is measured: uvicorn has no
    timeout for the request head, and a client that sends one header byte at a time held a connection open for as
    long as it liked (tests/test_hub_security.py::test_a_silent_or_trickling_connection_is_closed_after_the_header_
    timeout fails without it). The classes are pinned by constraints.txt; the test catches a uvicorn change."""
    if http == "h11":
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class TimedH11Protocol(_HeadTimer, H11Protocol):
            def _waiting_for_head(self) -> bool:
                return self.conn.their_state is h11.IDLE

            def _watch_head(self) -> None:
                (self._arm_head_timer if self._waiting_for_head() else self._disarm_head_timer)()

            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                self._watch_head()

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if not self._waiting_for_head() or self._head_timer is None:
                    self._watch_head()

        protocol = TimedH11Protocol
    elif http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class TimedHttpToolsProtocol(_HeadTimer, HttpToolsProtocol):
            # the head is awaited from the connection's start and again after each response, until its headers end
            _in_request = False

            def _waiting_for_head(self) -> bool:
                return not self._in_request

            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                self._arm_head_timer()

            def on_headers_complete(self) -> None:
                self._in_request = True
                self._disarm_head_timer()
                super().on_headers_complete()

            def on_response_complete(self) -> None:
                super().on_response_complete()
                self._in_request = False
                if not self.pipeline:
                    self._arm_head_timer()

        protocol = TimedHttpToolsProtocol
    else:
        raise ValueError(f"unknown HTTP protocol {http!r}: use one of {', '.join(HTTP_PROTOCOLS)}")
    protocol.header_timeout = header_timeout
    return protocol
