"""The daemon's own Kubernetes errors, and the one place a client failure becomes one.

Why this exists: the official client reports every failure as an
``ApiException`` with a bare HTTP status (or, when there was no answer at
all, as one of a dozen urllib3, socket and TLS exceptions). Deciding what
such a failure *means* (gone, taken, never acceptable, refused, worth a
retry) used to be done again by every caller, by testing ``exc.status``
against numbers. Here it is decided once, by :func:`translate`, into a small
hierarchy the rest of the daemon catches by name::

    KubeError                       status, reason, message, causes, retry_after, what
     +- NotFound          404
     +- Conflict          409       already_exists: AlreadyExists, else a resourceVersion/uid precondition
     +- Gone              410       resourceVersion too old (a watcher lists again)
     +- Invalid           400, 422  a request the API will never accept
     +- Unauthorized      401       the token is refused
     +- Forbidden         403       RBAC: never allowed, as the Role stands
     +- TooManyRequests   429       transient; retry_after from Retry-After
     +- ServerError       5xx       transient
     +- Unreachable       (0)       no HTTP answer: refused, reset, timed out, TLS, DNS; transient

Any other HTTP status (405, 413, 415, ...) becomes a plain ``KubeError``:
permanent, like every class outside :data:`TRANSIENT`.

Pure: no I/O, no clock. It does not import the ``kubernetes`` package
either (only ``k8s_api`` may, so that the RBAC test's scan of it sees every
API call the daemon makes); an ``ApiException`` is recognised by its class's
qualified name.
"""

from __future__ import annotations

import http
import http.client
import json
import math
from collections.abc import Mapping
from typing import Any

import urllib3.exceptions

__all__ = [
    "TRANSIENT",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NotFound",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
    "from_status",
    "translate",
]

# Bounds on what an error keeps of a response: a proxy's HTML page or a Status echoing a huge field value
# must not end up whole in every log line and CreateOutcome.
_MAX_MESSAGE = 2000
_MAX_CAUSES = 10


class KubeError(Exception):
    """A Kubernetes API call failed; ``str()`` says which call, with what status, and why.

    ``status`` is the HTTP status (0 when no answer came); ``reason`` the
    Status body's machine-readable reason ("AlreadyExists", "Invalid", ...),
    else the HTTP reason phrase, else (no answer) the name of the low-level
    error; ``message`` the server's explanation (the Status ``message``);
    ``causes`` its ``details.causes`` as ``"field: message"``; ``retry_after``
    the seconds the server asked to wait (Retry-After, or the Status
    ``details.retryAfterSeconds``), if any; ``what`` the call that failed.
    """

    status: int = 0

    def __init__(self, message: str = "", *, status: int | None = None, reason: str = "", what: str = "",
                 causes: tuple[str, ...] = (), retry_after: float | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.reason = reason
        self.message = message
        self.what = what
        self.causes = causes
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"{self.what}: " if self.what else ""
        if isinstance(self, Unreachable):
            head += f"API server unreachable ({self.reason})" if self.reason else "API server unreachable"
        else:
            head += f"{self.status} {self.reason}".rstrip()
        text = f"{head}: {self.message}" if self.message else head
        # The API server spells an Invalid's causes out in its message already; add only what it left out.
        missing = [cause for cause in self.causes if cause not in self.message]
        if missing:
            more = len(missing) - _MAX_CAUSES
            text += " [" + "; ".join(missing[:_MAX_CAUSES]) + (f"; and {more} more" if more > 0 else "") + "]"
        return text


class NotFound(KubeError):  # noqa: N818 (named for what the API says, like the Status reasons)
    """404: no such object (or namespace)."""

    status = 404


class Conflict(KubeError):  # noqa: N818
    """409: the name is taken (``already_exists``), or a resourceVersion or uid precondition failed."""

    status = 409

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Gone(KubeError):  # noqa: N818
    """410: the resourceVersion is older than the server's history; list again, then watch from there."""

    status = 410


class Invalid(KubeError):  # noqa: N818
    """422 Invalid or 400 BadRequest: a request the API will never accept; sending it again cannot help.

    A failed JSON Patch ``test`` operation is a 422 too.
    """

    status = 422


class Unauthorized(KubeError):  # noqa: N818
    """401: the API server refuses the token (expired, revoked, or not a token of this cluster)."""

    status = 401


class Forbidden(KubeError):  # noqa: N818
    """403: RBAC does not allow this request; permanent until the Role changes."""

    status = 403


class TooManyRequests(KubeError):  # noqa: N818
    """429: the server (API priority and fairness) sheds load; wait ``retry_after`` seconds if given."""

    status = 429


class ServerError(KubeError):
    """5xx: the server failed, timed out, or is not ready; the same request may well work later."""

    status = 500


class Unreachable(KubeError):  # noqa: N818
    """No HTTP answer at all: connection refused or reset, DNS, a timeout, TLS (status 0).

    A request that timed out may still have been carried out by the server.
    """

    status = 0


TRANSIENT: tuple[type[KubeError], ...] = (TooManyRequests, ServerError, Unreachable)
"""The errors a retry (after a pause) can fix; every other ``KubeError`` is permanent for its request."""

_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 422: Invalid,
    429: TooManyRequests,
}


def _class_for(status: int) -> type[KubeError]:
    if status <= 0:
        return Unreachable
    if 500 <= status <= 599:
        return ServerError
    return _BY_STATUS.get(status, KubeError)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _status_object(body: object) -> tuple[dict[str, Any], str]:
    """The Status body as a dict (empty if it is not one), and the raw text when it is not JSON."""
    if isinstance(body, Mapping):
        return dict(body), ""
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body.strip():
        return {}, ""
    try:
        parsed = json.loads(body)
    except ValueError:
        # Not the API server speaking (a proxy's or load balancer's page): keep a readable piece of it.
        return {}, " ".join(body.split())[:300]
    return (parsed, "") if isinstance(parsed, dict) else ({}, "")


def _causes(details: Mapping[str, Any]) -> tuple[str, ...]:
    causes = details.get("causes")
    if not isinstance(causes, list):
        return ()
    found: list[str] = []
    for cause in causes:
        if not isinstance(cause, Mapping):
            continue
        field = str(cause.get("field") or "")
        message = str(cause.get("message") or cause.get("reason") or "")
        if field or message:
            found.append(f"{field}: {message}" if field else message)
    return tuple(found)


def _header(headers: object, name: str) -> str | None:
    """A header of a urllib3 ``HTTPHeaderDict`` (case-insensitive) or of a plain mapping (tried both ways)."""
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name.lower()), None)
    return None if value is None else str(value)


def _seconds(value: object) -> float | None:
    """A non-negative finite number of seconds, or None (an HTTP-date Retry-After is not used)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def from_status(status: int, *, body: object = None, http_reason: str = "", headers: object = None,
                what: str = "") -> KubeError:
    """The error for an HTTP answer ``status`` (or a watch ERROR event's ``code``) with its Status ``body``.

    ``body`` may be the Status as a dict (a watch ERROR event's object), or
    its JSON as str or bytes, or anything else (ignored). ``headers`` gives
    Retry-After.
    """
    status_object, raw_text = _status_object(body)
    details = status_object.get("details")
    details = details if isinstance(details, Mapping) else {}
    reason = str(status_object.get("reason") or http_reason or "")
    if not reason and status > 0:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    message = _clip(str(status_object.get("message") or raw_text or ""))
    retry_after = _seconds(_header(headers, "Retry-After"))
    if retry_after is None:
        retry_after = _seconds(details.get("retryAfterSeconds"))
    return _class_for(status)(message, status=status, reason=reason, what=what, causes=_causes(details),
                              retry_after=retry_after)


def _is_api_exception(exc: BaseException) -> bool:
    return any(cls.__name__ == "ApiException" and cls.__module__ == "kubernetes.client.exceptions"
               for cls in type(exc).__mro__)


_NO_ANSWER = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException)


def _innermost(exc: BaseException) -> BaseException:
    """urllib3 wraps the real failure: MaxRetryError in ``reason``, ProtocolError in its last argument."""
    for _ in range(5):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and isinstance(exc, urllib3.exceptions.ProtocolError):
            inner = exc.args[-1] if exc.args else None
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _unreachable(exc: BaseException, what: str) -> Unreachable:
    inner = _innermost(exc)
    # NewConnectionError and friends are raised from the socket's error, which names the kind best.
    root = inner.__cause__ if isinstance(inner.__cause__, OSError) else inner
    text = str(inner)
    message = f"{type(inner).__name__}: {text}" if text else type(inner).__name__
    return Unreachable(_clip(message), status=0, reason=type(root).__name__, what=what)


def translate(exc: BaseException, what: str = "") -> KubeError | None:
    """The ``KubeError`` for a failed Kubernetes call, or ``None`` when ``exc`` is no such failure.

    Translated: the client's ``ApiException`` (by its status, JSON Status
    body and headers; status 0 or none, which the client uses for a TLS
    failure, is ``Unreachable``); urllib3's errors, ``OSError`` (which covers
    ``ConnectionError``, ``TimeoutError`` and ``ssl.SSLError``) and
    ``http.client.HTTPException``, as ``Unreachable``. A ``KubeError`` is
    returned as it is. ``what`` names the call in the message.

    ``None`` for anything else (a bug, a decoding error, a cancellation):
    the caller re-raises the original, typically::

        except Exception as exc:
            error = translate(exc, "read pod")
            if error is None:
                raise
            raise error from exc

    The result's ``__cause__`` is set to ``exc`` either way.
    """
    if isinstance(exc, KubeError):
        return exc
    if _is_api_exception(exc):
        status = getattr(exc, "status", None)
        status = int(status) if isinstance(status, int) else 0
        if status <= 0:
            # The client's own wording: "SSLError\n<what the ssl module said>".
            kind, _, detail = str(getattr(exc, "reason", None) or "").partition("\n")
            error: KubeError = Unreachable(_clip(detail or kind), status=0, reason=kind if detail else "",
                                           what=what)
        else:
            error = from_status(status, body=getattr(exc, "body", None),
                                http_reason=str(getattr(exc, "reason", None) or ""),
                                headers=getattr(exc, "headers", None), what=what)
    elif isinstance(exc, _NO_ANSWER):
        error = _unreachable(exc, what)
    else:
        return None
    error.__cause__ = exc
    return error
