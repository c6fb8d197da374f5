"""Probes and metrics for the cluster: ``/healthz``, ``/readyz`` and ``/metrics`` on ``HTTP_PORT``.

A minimal HTTP/1.1 responder on the event loop itself, so that ``/healthz``
answering proves the loop is not blocked. Metrics are read at scrape time
from the counters the daemon keeps anyway, through the registry
``prometheus_export`` builds, so counting costs the hot paths next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import generate_latest

from model_services_orchestrator.logs import get_logger
from model_services_orchestrator.prometheus_export import MetricsSnapshot, registry

__all__ = ["serve_http"]

_log = get_logger(__name__)
_MAX_REQUEST_BYTES = 8192


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


async def serve_http(
    *, host: str, port: int, ready_reasons: Callable[[], list[str]], snapshot: Callable[[], MetricsSnapshot],
) -> None:
    """Serve the probes and metrics until cancelled."""
    metrics = registry(snapshot)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5.0)
            with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                writer.write(_response("405 Method Not Allowed", b"GET only\n"))
            elif path == "/healthz":
                writer.write(_response("200 OK", b"ok\n"))
            elif path == "/readyz":
                reasons = ready_reasons()
                body = ("\n".join(reasons) or "ready").encode() + b"\n"
                writer.write(_response("503 Service Unavailable" if reasons else "200 OK", body))
            elif path == "/metrics":
                writer.write(_response("200 OK", generate_latest(metrics),
                                       "text/plain; version=0.0.4; charset=utf-8"))
            else:
                writer.write(_response("404 Not Found", b"not found\n"))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_BYTES)
    _log.info("http endpoints listening", port=port)
    async with server:
        await server.serve_forever()
