"""Kubernetes ``Status`` errors, so every failure leaves the server the way a real API server's would.

Handlers raise :class:`ApiError`; the server turns it into a ``kind: Status`` JSON body with the
HTTP status code, ``reason`` and ``details`` that the official client and kubectl understand.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "already_exists",
    "bad_request",
    "conflict",
    "expired",
    "forbidden",
    "invalid",
    "method_not_allowed",
    "not_found",
    "status_body",
    "unsupported_media_type",
]

_REASONS_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, reason: str | None = None,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a failure ``Status`` object as the API server sends it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else _REASONS_BY_CODE.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """A request failed with a Kubernetes ``Status``; raised by handlers and the store."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The ``Status`` JSON object for this error."""
        return status_body(self.code, self.message, self.reason, self.details)


def _group_details(kind: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name is not None:
        details["name"] = name
    return details


def not_found(kind: str, name: str) -> ApiError:
    """404 for a missing object, worded like the real server (``pods "x" not found``)."""
    return ApiError(404, f'{kind} "{name}" not found', "NotFound", _group_details(kind, name))


def already_exists(kind: str, name: str) -> ApiError:
    """409 AlreadyExists for a create whose name is taken."""
    return ApiError(409, f'{kind} "{name}" already exists', "AlreadyExists", _group_details(kind, name))


def conflict(kind: str, name: str, why: str) -> ApiError:
    """409 Conflict for a failed precondition (resourceVersion or uid)."""
    return ApiError(409, f'Operation cannot be fulfilled on {kind} "{name}": {why}', "Conflict",
                    _group_details(kind, name))


def invalid(kind_singular: str, kind: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid with ``details.causes`` (one per offending field), like field validation errors."""
    text = ", ".join(f"{cause['field']}: {cause['message']}" for cause in causes)
    return ApiError(
        422,
        f'{kind_singular} "{name}" is invalid: {text}' if len(causes) == 1
        else f'{kind_singular} "{name}" is invalid: [{text}]',
        "Invalid",
        {"name": name, "kind": kind_singular, "causes": causes},
    )


def expired(message: str) -> ApiError:
    """410 Expired (``Gone``) for a resourceVersion older than the retained history."""
    return ApiError(410, message, "Expired")


def forbidden(message: str) -> ApiError:
    """403 Forbidden, as RBAC answers for what our token may not do."""
    return ApiError(403, message, "Forbidden")


def bad_request(message: str) -> ApiError:
    """400 BadRequest for malformed requests."""
    return ApiError(400, message, "BadRequest")


def method_not_allowed(method: str) -> ApiError:
    """405 for a verb the resource does not support."""
    return ApiError(405, f"the server does not allow this method on the requested resource ({method})",
                    "MethodNotAllowed")


def unsupported_media_type(content_type: str, accepted: tuple[str, ...]) -> ApiError:
    """415 for a body format we do not speak (protobuf, YAML, server-side apply)."""
    return ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                         f"{', '.join(accepted)} (got {content_type!r})", "UnsupportedMediaType")
