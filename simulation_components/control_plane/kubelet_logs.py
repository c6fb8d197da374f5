"""The control-plane kubelet's HTTPS endpoint: the container logs kube-apiserver proxies ``pods/log`` to.

The API server checks the pod and the container name itself, then asks the node at
``https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/{namespace}/{pod}/{container}``
with ``tailLines``, ``limitBytes``, ``follow``, ``previous`` (and ``timestamps``, ``sinceSeconds``,
``sinceTime``, which are accepted and ignored here: the buffers keep no per-line times). A non-200 answer's
body becomes the message of the error the API client gets, with the same status, as with a real kubelet.
The API server shows a client certificate; it is not checked (only loopback listens).

Each run of a container writes into a ``LogBuffer``: bounded bytes readable with tailLines, limitBytes and
follow, like ``kubectl logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

__all__ = ["LogBuffer", "LogLookup", "LogServer", "LogUnavailableError"]

log = logging.getLogger(__name__)

_DEFAULT_CAPACITY = 4 * 1024 * 1024


class LogBuffer:
    """The output of one run of a container; the oldest bytes are dropped past ``capacity``."""

    def __init__(self, capacity: int = _DEFAULT_CAPACITY) -> None:
        self._data = bytearray()
        self._capacity = capacity
        self._dropped = 0
        self.finished = False
        self._changed = asyncio.Event()

    def append(self, chunk: bytes) -> None:
        """Add output of the container."""
        if not chunk:
            return
        self._data.extend(chunk)
        excess = len(self._data) - self._capacity
        if excess > 0:
            cut = self._data.find(b"\n", excess)
            cut = excess if cut < 0 else cut + 1
            del self._data[:cut]
            self._dropped += cut
        self._wake()

    def finish(self) -> None:
        """The container exited: followers stop after the last byte."""
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def end(self) -> int:
        """The absolute offset after the last byte written so far."""
        return self._dropped + len(self._data)

    def read(self, *, tail_lines: int | None = None, limit_bytes: int | None = None) -> bytes:
        """The retained output, optionally only its last ``tail_lines`` lines and at most ``limit_bytes``."""
        data = bytes(self._data)
        if tail_lines is not None:
            data = _tail(data, tail_lines)
        if limit_bytes is not None:
            data = data[:limit_bytes]
        return data

    def offset_of_tail(self, tail_lines: int | None) -> int:
        """The absolute offset where the output of ``read(tail_lines=...)`` starts."""
        if tail_lines is None:
            return self._dropped
        return self.end - len(_tail(bytes(self._data), tail_lines))

    def read_from(self, offset: int) -> tuple[bytes, int]:
        """Bytes from an absolute offset on, and the new offset (for follow)."""
        start = max(offset - self._dropped, 0)
        chunk = bytes(self._data[start:])
        return chunk, self._dropped + start + len(chunk)

    async def wait_for_more(self, offset: int, timeout: float) -> None:
        """Wait until there are bytes past ``offset``, the container exited, or ``timeout``."""
        if self.end > offset or self.finished:
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    end = len(data)
    position = end - 1 if data.endswith(b"\n") else end
    for _ in range(lines):
        position = data.rfind(b"\n", 0, position)
        if position < 0:
            return data
    return data[position + 1:]


async def serve_log(request: web.Request, buffer: LogBuffer, *, tail_lines: int | None, limit_bytes: int | None,
                    still_there: Callable[[], bool]) -> web.StreamResponse:
    """A container's log as the kubelet answers ``pods/log``: at once, or followed (``follow=true``)
    until the container ends, the pod goes (``still_there``), the byte limit or the client leaves."""
    if request.query.get("follow") != "true":
        return web.Response(body=buffer.read(tail_lines=tail_lines, limit_bytes=limit_bytes),
                            content_type="text/plain", charset="utf-8")
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    offset = buffer.offset_of_tail(tail_lines)
    sent = 0
    with contextlib.suppress(ConnectionResetError):
        while True:
            chunk, offset = buffer.read_from(offset)
            if limit_bytes is not None:
                chunk = chunk[:max(limit_bytes - sent, 0)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            if (buffer.finished and buffer.end <= offset) or (limit_bytes is not None and sent >= limit_bytes):
                break
            transport = request.transport
            if not still_there() or transport is None or transport.is_closing():
                break
            await buffer.wait_for_more(offset, 1.0)
        await response.write_eof()
    return response


class LogUnavailableError(Exception):
    """No log to serve: the HTTP status and the message the kubelet answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# (namespace, pod, container, previous) -> the buffer, plus a check that the pod is still the same one.
LogLookup = Callable[[str, str, str, bool], tuple[LogBuffer, Callable[[], bool]]]


def _int_query(request: web.Request, name: str, minimum: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise LogUnavailableError(400, f"invalid {name}: {raw!r}") from None
    if value < minimum:
        raise LogUnavailableError(400, f"invalid {name}: must be at least {minimum}")
    return value


class LogServer:
    """``GET /containerLogs/...`` over HTTPS on 127.0.0.1."""

    def __init__(self, lookup: LogLookup) -> None:
        self._lookup = lookup
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._app = app

    async def start(self, port: int, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        """Listen with the kubelet's serving certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        context.verify_mode = ssl.CERT_NONE  # the API server's client certificate is not checked
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=context, shutdown_timeout=1.0, backlog=1024)
        await site.start()

    async def stop(self) -> None:
        """Stop listening and end open streams."""
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            tail_lines = _int_query(request, "tailLines")
            limit_bytes = _int_query(request, "limitBytes", minimum=1)
            buffer, still_there = self._lookup(info["namespace"], info["pod"], info["container"],
                                               request.query.get("previous") == "true")
        except LogUnavailableError as error:
            return web.Response(status=error.status, text=error.message)
        return await serve_log(request, buffer, tail_lines=tail_lines, limit_bytes=limit_bytes,
                               still_there=still_there)
