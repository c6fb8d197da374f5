"""A fault-injecting HTTPS reverse proxy in front of the real kube-apiserver: ``FaultProxy``.

Why it exists: the daemon must survive what a real API server does only now and then (a 503 or a 429
with ``Retry-After``, a watch stream that ends, the server gone), and a test needs those on demand. A
real kube-apiserver cannot be told to, so this proxy sits between the daemon and it (the rules and the
counts are ``faults.py``'s ``Faults`` and ``RequestCounter``):

* ``inject_fault(status, count=None, seconds=None, methods=None, path_contains=None)``: matching requests
  get a Kubernetes ``Status`` error (429 with ``Retry-After: 1``) instead of reaching the server;
  ``methods`` holds HTTP methods or verbs (``GET``, ``LIST``, ``WATCH``, ``POST``, ...); ``clear_faults()``;
* ``close_watches()``: every open watch stream ends now, cleanly (after its last complete event), as
  when the server's watch timeout ends it;
* ``refuse()`` / ``accept()``: the API is down (the listening socket is closed, open connections are
  reset) and back, on the same port;
* ``request_counts()`` / ``reset_request_counts()``: requests by ``"VERB resource"``, ``total`` and
  ``by_status``.

Everything else is passed through untouched: the caller's own ``Authorization`` header (so the server
authorises the caller, e.g. the daemon's RBAC-limited token), bodies streamed both ways without
buffering (a watch is forwarded event by event), compressed answers as they are. When the server does
not answer (it is restarting, say) the proxy resets the client's connection, as a client talking to the
server directly would see. The proxy serves TLS with a certificate for 127.0.0.1 signed by the control
plane's CA, so clients verify it exactly as they would verify the API server.

It runs its own event loop in a background thread of the process that starts it; the admin methods are
plain (thread-safe) Python calls. Upgrade requests (exec, attach, port-forward) are not supported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .faults import Faults, Refusal, RequestCounter

__all__ = ["FaultProxy", "request_kind"]

_T = TypeVar("_T")

# RFC 9110 section 7.6.1, plus what the proxy sets itself.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                         "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_RESOURCE_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)/(?P<watch>watch/)?(?:namespaces/(?P<namespace>[^/]+)/?)?"
    r"(?:(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?)?/?$")
_CHUNK = 64 * 1024


def request_kind(method: str, path: str, watch_query: bool) -> tuple[str, bool]:
    """``("VERB resource", is_watch)`` as the tests count requests: ``LIST pods``, ``WATCH pods``, ``GET pods/log``,
    ``DELETECOLLECTION pods``, ``PATCH pods``, ``GET namespaces``; ``other`` for what is no resource path."""
    match = _RESOURCE_PATH.match(path)
    if match is None or match.group("resource") is None:
        if match is not None and match.group("namespace"):  # /api/v1/namespaces/<name>
            resource, name, subresource = "namespaces", match.group("namespace"), None
        else:
            return f"{method} other", False
    else:
        resource, name, subresource = match.group("resource"), match.group("name"), match.group("subresource")
    watch = bool(match.group("watch")) or watch_query
    if subresource:
        resource = f"{resource}/{subresource}"
    if method == "GET" and watch:
        verb = "WATCH"
    elif method == "GET" and not name:
        verb = "LIST"
    elif method == "DELETE" and not name:
        verb = "DELETECOLLECTION"
    else:
        verb = method
    return f"{verb} {resource}", watch and method == "GET"


def _status_response(refusal: Refusal) -> web.Response:
    return web.json_response(refusal.body(), status=refusal.status, headers=dict(refusal.headers) or None)


@dataclass(eq=False)
class _OpenWatch:
    """One watch stream being forwarded; ``cut()`` ends it cleanly."""

    upstream: aiohttp.ClientResponse
    was_cut: bool = field(default=False)

    def cut(self) -> None:
        self.was_cut = True
        self.upstream.close()


class FaultProxy:
    """The proxy (see the module's docstring): ``start()``, the admin methods, ``close()``; a context manager.

    ``upstream``: the API server's URL; ``upstream_ca``: the CA to verify it with; ``cert``/``key``: what the
    proxy serves (for 127.0.0.1). ``port`` 0 picks a free port, kept across ``refuse()``/``accept()``.
    """

    def __init__(self, upstream: str, *, upstream_ca: Path, cert: Path, key: Path, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self._upstream_ca = upstream_ca
        self._cert = cert
        self._key = key
        self._faults = Faults()
        self._counts = RequestCounter()
        self._watches: set[_OpenWatch] = set()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.SockSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """``https://host:port``."""
        return f"https://{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> FaultProxy:
        """Start the loop thread and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the fault proxy is already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        try:
            self._run(self._start())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop listening, end every connection and the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            try:
                self._run(self._close(), timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
        loop.close()
        self._loop = self._thread = None

    async def _start(self) -> None:
        upstream_context = ssl.create_default_context(cafile=str(self._upstream_ca))
        # No pool limit: every watch holds a connection for as long as it lasts.
        connector = aiohttp.TCPConnector(ssl=upstream_context, limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=None))
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(str(self._cert), str(self._key))
        # handler_cancellation: a client that goes away takes its upstream request (a watch) with it.
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None,
                                  max_line_size=65536, max_field_size=65536)
        self._runner = web.ServerRunner(self._server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = socket.create_server((self.host, self.port), backlog=1024)  # SO_REUSEADDR: the same port again
        self.port = int(sock.getsockname()[1])
        self._site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
        await self._site.start()

    async def _close(self) -> None:
        for watch in list(self._watches):
            watch.cut()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _run(self, coroutine: Awaitable[_T], timeout: float = 30.0) -> _T:
        """Run ``coroutine`` on the proxy's loop and wait for its result (from any other thread)."""
        if self._loop is None:
            raise RuntimeError("the fault proxy is not started")

        async def wrapped() -> _T:
            return await coroutine

        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        return future.result(timeout)

    def _call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the proxy's loop (where the state lives) and return its result."""
        async def call() -> _T:
            return function()
        return self._run(call())

    # ------------------------------------------------------------------ admin

    def inject_fault(self, status: int, count: int | None = None, seconds: float | None = None,
                     methods: Iterable[str] | None = None, path_contains: str | None = None) -> dict[str, Any]:
        """Make matching requests fail with ``status`` for ``count`` requests or ``seconds`` (the first matching
        rule answers); returns the rule as ``FaultRule.describe`` shows it."""
        spec: dict[str, Any] = {"status": status, "count": count, "seconds": seconds,
                                "methods": None if methods is None else list(methods), "path_contains": path_contains}
        return self._call(lambda: self._faults.add({k: v for k, v in spec.items() if v is not None}).describe())

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._call(self._faults.clear)

    def faults(self) -> list[dict[str, Any]]:
        """The rules still active."""
        return self._call(lambda: [rule.describe() for rule in self._faults.rules()])

    def close_watches(self) -> int:
        """End every open watch stream now, cleanly; returns how many there were."""
        def cut_all() -> int:
            watches = list(self._watches)
            for watch in watches:
                watch.cut()
            return len(watches)
        return self._call(cut_all)

    def open_watches(self) -> int:
        """How many watch streams are being forwarded."""
        return self._call(lambda: len(self._watches))

    def in_flight(self) -> int:
        """How many requests (watches included) are being forwarded."""
        return self._call(lambda: self._in_flight)

    def refuse(self) -> None:
        """The API is down: stop listening (connections are refused) and reset every open connection."""
        async def refuse() -> None:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            self._drop_connections()
        self._run(refuse())

    def accept(self) -> None:
        """The API is back, on the same port (a no-op when it is not refused)."""
        async def accept() -> None:
            if self._site is None:
                await self._listen()
        self._run(accept())

    def drop_connections(self) -> None:
        """Reset every open client connection (clients reconnect at once)."""
        self._call(self._drop_connections)

    @property
    def refusing(self) -> bool:
        """Whether connections are refused."""
        return self._site is None

    def request_counts(self) -> dict[str, Any]:
        """Requests by ``"VERB resource"``, plus ``total`` and ``by_status`` (statuses answered)."""
        return self._call(self._counts.snapshot)

    def reset_request_counts(self) -> None:
        """Count from zero."""
        self._call(self._counts.reset)

    def _drop_connections(self) -> None:
        if self._server is None:
            return
        for connection in self._server.connections:
            transport = connection.transport
            if transport is not None:
                transport.abort()

    # ------------------------------------------------------------------ forwarding

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        kind, watch = request_kind(request.method, request.path,
                                   request.query.get("watch", "") in ("true", "1"))
        self._counts.count(kind)
        refusal = self._faults.check(request.method, kind.split(" ", 1)[0], request.path)
        if refusal is None and request.headers.get("Upgrade"):
            refusal = Refusal(501, "the fault proxy does not forward upgrade requests", "NotImplemented")
        if refusal is not None:
            self._counts.answered(refusal.status)
            return _status_response(refusal)
        self._in_flight += 1
        try:
            return await self._forward(request, watch)
        finally:
            self._in_flight -= 1

    async def _forward(self, request: web.BaseRequest, watch: bool) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict((name, value) for name, value in request.headers.items()
                              if name.lower() not in _HOP_BY_HOP)
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        body = request.content.iter_chunked(_CHUNK) if request.body_exists else None
        try:
            upstream = await self._session.request(
                request.method, f"{self.upstream}{request.raw_path}", headers=headers, data=body,
                allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"))
        except (aiohttp.ClientError, OSError, TimeoutError):
            return self._reset(request)  # no answer from the server: the client sees none either
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            chunked = upstream.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if upstream.content_length is not None and not chunked:
                response.content_length = upstream.content_length
            elif request.method != "HEAD" and upstream.status not in (204, 304):
                response.enable_chunked_encoding()
            self._counts.answered(upstream.status)
            await response.prepare(request)
            if watch and upstream.status == 200:
                return await self._pump_watch(request, upstream, response)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, OSError, TimeoutError):
                return self._reset(request, response)
            await response.write_eof()
            return response

    async def _pump_watch(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
                          response: web.StreamResponse) -> web.StreamResponse:
        """Forward a watch event by event (whole lines), until it ends or ``close_watches()`` ends it."""
        open_watch = _OpenWatch(upstream)
        self._watches.add(open_watch)
        pending = b""
        try:
            while True:
                try:
                    chunk = await upstream.content.readany()
                except (aiohttp.ClientError, OSError, TimeoutError):
                    if open_watch.was_cut:
                        break
                    return self._reset(request, response)  # the server went away mid-stream
                if not chunk:
                    if open_watch.was_cut:
                        break
                    if pending:
                        await response.write(pending)
                    break
                data = pending + chunk
                end = data.rfind(b"\n") + 1
                pending = data[end:]
                if end:
                    await response.write(data[:end])
        finally:
            self._watches.discard(open_watch)
        await response.write_eof()
        return response

    @staticmethod
    def _reset(request: web.BaseRequest, response: web.StreamResponse | None = None) -> web.StreamResponse:
        """Reset the client's connection (what it would see of a server that died); the response to return."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response if response is not None else web.StreamResponse(status=502)  # never sent
