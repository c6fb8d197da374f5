"""Plain HTTPS calls to kube-apiserver and etcd's JSON gateway, with the standard library only.

Bringing the control plane up takes a handful of calls (readiness, the project's manifests, a token
request, version, compaction); making them with ``urllib`` keeps the launcher free of the ``kubernetes``
client, whose import alone costs a good part of a second, and gives the tests a way to send exactly the
request they mean (a list at an old resourceVersion, a token of their choosing).
"""

from __future__ import annotations

import functools
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["ApiError", "call"]


class ApiError(RuntimeError):
    """An HTTP error answer: its status and the decoded body (a ``Status`` object when it is JSON)."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        reason = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {url}: {status} {reason}")
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        """The Kubernetes ``Status`` reason (``Expired``, ``Forbidden``, ``AlreadyExists``...) or ``""``."""
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


@functools.lru_cache(maxsize=8)
def _cached_context(ca_cert: str, modified: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_cert)


def _context(ca_cert: Path) -> ssl.SSLContext:
    # Keyed by the modification time too: a new control plane in the same directory has a new CA.
    return _cached_context(str(ca_cert), ca_cert.stat().st_mtime_ns)


def _decode(raw: bytes, *, stream: bool = False) -> Any:
    """JSON; a watch stream (one JSON object a line) as a list of events; what is not JSON as text."""
    try:
        if stream:
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _is_watch(url: str) -> bool:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("watch", [""])[0] in ("1", "true")


def call(method: str, url: str, body: Any = None, *, token: str | None = None, ca_cert: Path | None = None,
         content_type: str = "application/json", timeout: float = 10.0) -> Any:
    """One request; the decoded JSON answer (a list of events for a watch).

    Raises ``ApiError`` on an HTTP error status, ``OSError`` when there is no answer (refused, reset, timed out).
    """
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - our URLs
    context = _context(ca_cert) if ca_cert is not None else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return _decode(response.read(), stream=response.status == 200 and _is_watch(url))
    except urllib.error.HTTPError as error:
        with error:
            raise ApiError(method, url, error.code, _decode(error.read())) from None
