"""The tooling's one HTTP client for kube-apiserver and etcd's JSON gateway, on the standard library only.

Bringing the control plane up takes a handful of calls (readiness, the project's manifests, a token
request, version, compaction), the benchmark's driver sends thousands from many threads, and tests want to
send exactly the request they mean (a list at an old resourceVersion, a token of their choosing). All of
them use ``HttpClient``: one keep-alive connection per thread, the bearer token, TLS verified against the
control plane's CA, JSON both ways, ``ApiError`` for an error answer. Not the ``kubernetes`` client, whose
import alone costs a good part of a second and which builds a model object for every answer. (Our kubelet
is asyncio and has its own session: ``kubelet_api.py``; it raises the same ``ApiError``.)
"""

from __future__ import annotations

import functools
import http.client
import json
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any

__all__ = ["ApiError", "HttpClient", "call", "decode"]


class ApiError(RuntimeError):
    """An HTTP error answer: its status and the decoded body (a ``Status`` object when it is JSON)."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {url}: {status} {self.reason} {self.message}".replace("  ", " "))

    @property
    def reason(self) -> str:
        """The Kubernetes ``Status`` reason (``Expired``, ``Forbidden``, ``AlreadyExists``...) or ``""``."""
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""

    @property
    def message(self) -> str:
        """The ``Status`` message, or the body as text."""
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else str(self.body)


@functools.lru_cache(maxsize=8)
def _cached_context(ca_cert: str, modified: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_cert)


def _context(ca_cert: Path) -> ssl.SSLContext:
    # Keyed by the modification time too: a new control plane in the same directory has a new CA.
    return _cached_context(str(ca_cert), ca_cert.stat().st_mtime_ns)


def decode(raw: bytes, *, stream: bool = False) -> Any:
    """JSON; a watch stream (one JSON object a line) as a list of events; what is not JSON as text."""
    try:
        if stream:
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _is_watch(path: str) -> bool:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("watch", [""])[0] in ("1", "true")


class HttpClient:
    """Requests to one server (``http(s)://host:port``): a keep-alive connection per thread, the bearer
    ``token`` if any, HTTPS verified against ``ca_file`` (an ``https`` URL needs one)."""

    def __init__(self, url: str, token: str | None = None, *, ca_file: Path | None = None,
                 timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"expected http(s)://host:port, got {url!r}")
        if parsed.scheme == "https" and ca_file is None:
            raise ValueError("an https server needs the CA to verify it against")
        self.url = f"{parsed.scheme}://{parsed.hostname}:{parsed.port}"
        self.host = parsed.hostname
        self.port = parsed.port
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self._tls = _context(ca_file) if parsed.scheme == "https" and ca_file is not None else None
        self._local = threading.local()

    def new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A connection of its own (a watch stream holds one for as long as it runs)."""
        if self._tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request_text(self, method: str, path: str) -> str:
        """A non-JSON answer (``/metrics``), as text."""
        status, payload = self._send(method, path, None, {k: v for k, v in self.headers.items() if k != "Accept"})
        if not 200 <= status <= 299:
            raise ApiError(method, f"{self.url}{path}", status, decode(payload))
        return payload.decode("utf-8", "replace")

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Any:
        """One request; the decoded JSON answer (a list of events for a watch, read until the server ends it).

        Raises ``ApiError`` on an error status, ``OSError`` when there is no answer (refused, reset, timed out).
        """
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        status, payload = self._send(method, path, data, headers)
        if not 200 <= status <= 299:
            raise ApiError(method, f"{self.url}{path}", status, decode(payload))
        return decode(payload, stream=status == 200 and _is_watch(path))

    def _send(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        # A kept-alive connection the server has closed meanwhile fails at once: only then is the request sent
        # again, on a new connection (a request that failed on a new connection is the caller's to judge).
        while True:
            connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
            reused = connection is not None
            if connection is None:
                connection = self.new_connection(self.timeout)
                self._local.connection = connection
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if reused:
                    continue
                raise
            if response.will_close:
                self.close()
            return response.status, payload

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def call(method: str, url: str, body: Any = None, *, token: str | None = None, ca_cert: Path | None = None,
         content_type: str = "application/json", timeout: float = 10.0) -> Any:
    """One request on a connection of its own, to a full URL: ``HttpClient.request`` for a single call."""
    parsed = urllib.parse.urlsplit(url)
    client = HttpClient(f"{parsed.scheme}://{parsed.netloc}", token, ca_file=ca_cert, timeout=timeout)
    try:
        return client.request(method, urllib.parse.urlunsplit(("", "", parsed.path or "/", parsed.query, "")),
                              body, content_type=content_type)
    finally:
        client.close()
