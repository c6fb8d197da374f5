"""The control-plane kubelet's HTTPS endpoint: the container logs kube-apiserver proxies ``pods/log`` to.

The API server checks the pod and the container name itself, then asks the node at
``https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/{namespace}/{pod}/{container}``
with ``tailLines``, ``limitBytes``, ``follow``, ``previous`` (and ``timestamps``, ``sinceSeconds``,
``sinceTime``, which are accepted and ignored here: the buffers keep no per-line times). A non-200 answer's
body becomes the message of the error the API client gets, with the same status, as with a real kubelet.
The API server shows a client certificate; it is not checked (only loopback listens).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from simulation_components.local_kubernetes.logs import LogBuffer, serve_log

__all__ = ["LogLookup", "LogServer", "LogUnavailableError"]

log = logging.getLogger(__name__)


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
