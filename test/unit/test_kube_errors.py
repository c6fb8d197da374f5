"""``kube_errors.translate``: each client failure becomes the one class the daemon catches for it."""

from __future__ import annotations

import json
import pickle
import socket
import ssl
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException, NotFoundException, ServiceException
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from model_services_orchestrator.kube_errors import (
    TRANSIENT,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    from_status,
    translate,
)


def status_body(code: int, reason: str, message: str, **details: Any) -> str:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return json.dumps(body)


def api_exception(status: int, http_reason: str, body: str | None = None,
                  headers: dict[str, str] | None = None) -> ApiException:
    """What the client raises for an HTTP answer: its status and phrase, the body as text, the headers."""
    exc = ApiException(status=status, reason=http_reason)
    exc.body = body
    exc.headers = urllib3.HTTPHeaderDict(headers) if headers is not None else None
    return exc


def translated(exc: BaseException, what: str = "") -> KubeError:
    error = translate(exc, what)
    assert error is not None, f"{exc!r} was not translated"
    assert error.__cause__ is exc
    return error


INVALID_POD = status_body(
    422, "Invalid", 'Pod "m1" is invalid: spec.containers[0].image: Required value',
    name="m1", kind="Pod", causes=[{"reason": "FieldValueRequired", "message": "Required value",
                                    "field": "spec.containers[0].image"}])

HTTP_CASES: list[tuple[ApiException, type[KubeError], int, str]] = [
    (api_exception(400, "Bad Request", status_body(400, "BadRequest", "json: cannot unmarshal string")),
     Invalid, 400, "BadRequest"),
    (api_exception(401, "Unauthorized", status_body(401, "Unauthorized", "Unauthorized")),
     Unauthorized, 401, "Unauthorized"),
    (api_exception(403, "Forbidden", status_body(
        403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:dots:mso" cannot create resource')),
     Forbidden, 403, "Forbidden"),
    (api_exception(404, "Not Found", status_body(404, "NotFound", 'pods "m1" not found', name="m1", kind="pods")),
     NotFound, 404, "NotFound"),
    (api_exception(409, "Conflict", status_body(409, "AlreadyExists", 'pods "m1" already exists')),
     Conflict, 409, "AlreadyExists"),
    (api_exception(409, "Conflict", status_body(
        409, "Conflict", 'Operation cannot be fulfilled on pods "m1": Precondition failed: UID in precondition')),
     Conflict, 409, "Conflict"),
    (api_exception(410, "Gone", status_body(410, "Expired", "too old resource version: 5 (80)")),
     Gone, 410, "Expired"),
    (api_exception(422, "Unprocessable Entity", INVALID_POD), Invalid, 422, "Invalid"),
    (api_exception(429, "Too Many Requests", status_body(429, "TooManyRequests", "Too many requests"),
                   {"Retry-After": "3"}), TooManyRequests, 429, "TooManyRequests"),
    (api_exception(500, "Internal Server Error", status_body(500, "InternalError", "etcd leader changed")),
     ServerError, 500, "InternalError"),
    (api_exception(502, "Bad Gateway", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
     ServerError, 502, "Bad Gateway"),
    (api_exception(503, "Service Unavailable", None), ServerError, 503, "Service Unavailable"),
    (api_exception(504, "Gateway Timeout", status_body(504, "Timeout", "the request timed out")),
     ServerError, 504, "Timeout"),
    (api_exception(405, "Method Not Allowed", status_body(405, "MethodNotAllowed", "not allowed")),
     KubeError, 405, "MethodNotAllowed"),
]


@pytest.mark.parametrize(("exc", "cls", "status", "reason"), HTTP_CASES,
                         ids=[f"{case[2]}-{case[3]}" for case in HTTP_CASES])
def test_an_http_answer_becomes_the_class_of_its_status(
        exc: ApiException, cls: type[KubeError], status: int, reason: str) -> None:
    error = translated(exc, "create pod")
    assert type(error) is cls
    assert (error.status, error.reason) == (status, reason)
    assert str(error).startswith(f"create pod: {status} {reason}")
    assert isinstance(error, TRANSIENT) == (status == 429 or status >= 500)


def test_the_subclasses_the_client_raises_are_translated_too() -> None:
    for exc_class, cls in ((NotFoundException, NotFound), (ServiceException, ServerError)):
        exc = exc_class(status=404 if cls is NotFound else 503, reason="x")
        assert type(translated(exc)) is cls


def test_an_answer_read_from_a_response_is_translated() -> None:
    # As _raw raises it: ApiException(http_resp=...), the body decoded from bytes, urllib3's headers.
    response = urllib3.HTTPResponse(body=INVALID_POD.encode(), status=422, reason="Unprocessable Entity",
                                    headers={"Content-Type": "application/json"}, preload_content=True)
    error = translated(ApiException(http_resp=response), "create pod")
    assert isinstance(error, Invalid)
    assert error.causes == ("spec.containers[0].image: Required value",)
    # The message names the cause already: it is not repeated.
    assert str(error) == 'create pod: 422 Invalid: Pod "m1" is invalid: spec.containers[0].image: Required value'


def test_causes_the_message_leaves_out_are_summarised() -> None:
    body = status_body(422, "Invalid", 'Pod "m1" is invalid', causes=[
        {"reason": "FieldValueRequired", "message": "Required value", "field": f"spec.containers[{i}].image"}
        for i in range(12)])
    error = translated(api_exception(422, "Unprocessable Entity", body))
    assert len(error.causes) == 12
    assert str(error).startswith('422 Invalid: Pod "m1" is invalid [spec.containers[0].image: Required value; ')
    assert str(error).endswith("; and 2 more]")


def test_already_exists_is_told_from_a_failed_precondition() -> None:
    taken = translated(api_exception(409, "Conflict", status_body(409, "AlreadyExists", "exists")))
    precondition = translated(api_exception(409, "Conflict", status_body(409, "Conflict", "uid mismatch")))
    no_body = translated(api_exception(409, "Conflict"))
    assert isinstance(taken, Conflict) and taken.already_exists
    assert isinstance(precondition, Conflict) and not precondition.already_exists
    assert isinstance(no_body, Conflict) and not no_body.already_exists


@pytest.mark.parametrize(("headers", "details", "expected"), [
    ({"Retry-After": "3"}, {}, 3.0),
    ({"retry-after": "0.5"}, {}, 0.5),  # headers are case-insensitive
    ({}, {"retryAfterSeconds": 2}, 2.0),  # the Status body's suggestion, when there is no header
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}, None),  # an HTTP-date is not used
    ({"Retry-After": "-1"}, {}, None),
    ({"Retry-After": "nan"}, {}, None),
    ({}, {}, None),
])
def test_retry_after(headers: dict[str, str], details: dict[str, Any], expected: float | None) -> None:
    error = translated(api_exception(429, "Too Many Requests",
                                     status_body(429, "TooManyRequests", "slow down", **details), headers))
    assert isinstance(error, TooManyRequests)
    assert error.retry_after == expected


def test_retry_after_from_a_plain_dict_of_headers() -> None:
    exc = ApiException(status=503, reason="Service Unavailable")
    exc.headers = {"retry-after": "4"}
    assert translated(exc).retry_after == 4.0


POOL = urllib3.HTTPConnectionPool("127.0.0.1", 1)


def _refused() -> NewConnectionError:
    """What urllib3 raises for a refused connection: its error, raised from the socket's."""
    error = NewConnectionError(HTTPConnection("127.0.0.1", 1),
                               "Failed to establish a new connection: [Errno 111] Connection refused")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


NO_ANSWER_CASES: list[tuple[BaseException, str, str]] = [
    (MaxRetryError(POOL, "/api/v1/namespaces/dots/pods", _refused()), "ConnectionRefusedError",
     "Connection refused"),
    (ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
     "ConnectionResetError", "Connection reset by peer"),
    (ProtocolError("Connection broken: IncompleteRead(0 bytes read)"), "ProtocolError", "Connection broken"),
    (ReadTimeoutError(POOL, "/api/v1/namespaces/dots/pods", "Read timed out. (read timeout=10)"),
     "ReadTimeoutError", "Read timed out"),
    (MaxRetryError(POOL, "/api", SSLError(ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))), "SSLError",
     "CERTIFICATE_VERIFY_FAILED"),
    (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError", "Connection refused"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "SSLError", "WRONG_VERSION_NUMBER"),
    (TimeoutError("timed out"), "TimeoutError", "timed out"),
    (socket.gaierror(-2, "Name or service not known"), "gaierror", "Name or service not known"),
    # The client's own report of a TLS failure: an ApiException with status 0.
    (ApiException(status=0, reason="SSLError\n[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
     "SSLError", "CERTIFICATE_VERIFY_FAILED"),
]


@pytest.mark.parametrize(("exc", "reason", "text"), NO_ANSWER_CASES,
                         ids=[f"{type(case[0]).__name__}-{case[1]}" for case in NO_ANSWER_CASES])
def test_no_answer_is_unreachable(exc: BaseException, reason: str, text: str) -> None:
    error = translated(exc, "list configmaps")
    assert type(error) is Unreachable
    assert (error.status, error.reason) == (0, reason)
    assert isinstance(error, TRANSIENT)
    assert str(error).startswith(f"list configmaps: API server unreachable ({reason})")
    assert text in str(error)


@pytest.mark.parametrize("exc", [KeyError("metadata"), ValueError("bad JSON"), RuntimeError("bug"),
                                 TypeError("not a number")])
def test_anything_else_is_not_translated(exc: BaseException) -> None:
    assert translate(exc) is None


def test_a_kube_error_is_translated_to_itself() -> None:
    error = NotFound("pods \"m1\" not found", reason="NotFound")
    assert translate(error) is error


def test_from_status_of_a_watch_error_event() -> None:
    # A watch ERROR event's object is a Status dict.
    event_object = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version: 5 (80)"}
    error = from_status(410, body=event_object, what="watch pods")
    assert isinstance(error, Gone)
    assert str(error) == "watch pods: 410 Expired: too old resource version: 5 (80)"
    assert isinstance(from_status(500, body={"message": "internal"}), ServerError)


def test_a_huge_body_is_clipped() -> None:
    error = translated(api_exception(422, "Unprocessable Entity", status_body(422, "Invalid", "x" * 100_000)))
    assert len(error.message) < 2100


def test_classes_default_their_status_and_can_be_raised_directly() -> None:
    assert NotFound("gone").status == 404
    assert Conflict("taken", reason="AlreadyExists").already_exists
    assert Unreachable("down").status == 0
    assert str(Forbidden("no", reason="Forbidden", what="delete pod")) == "delete pod: 403 Forbidden: no"
    assert all(issubclass(cls, KubeError) for cls in TRANSIENT)
    assert not issubclass(Invalid, TRANSIENT) and not issubclass(Gone, TRANSIENT)


def test_errors_survive_pickling() -> None:
    # Exceptions cross process boundaries in some test runners; keyword-only fields must not break that.
    original = Conflict("taken", reason="AlreadyExists", what="create pod", retry_after=1.0)
    error = pickle.loads(pickle.dumps(original))  # noqa: S301 (our own bytes)
    assert isinstance(error, Conflict) and error.already_exists
    assert str(error) == str(original) == "create pod: 409 AlreadyExists: taken"
