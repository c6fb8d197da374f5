"""The fault proxy's rules and counts, apart from its I/O.

Tests make the API fail on purpose (503, 429 with Retry-After, 500, ...) for a number of requests or
for some seconds, optionally only for some methods or paths, and read back how many requests of each
kind the client sent (to check that the daemon watches instead of polling, backs off, and so on).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultRule", "Faults", "Refusal", "RequestCounter"]

_VERBS = ("GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


@dataclass(frozen=True)
class Refusal:
    """The answer an injected fault gives instead of the server's: a Kubernetes ``Status`` failure."""

    status: int
    message: str
    reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """The ``Status`` object, as the API server words a failure."""
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason or _REASONS.get(self.status, "Unknown"),
                                "code": self.status}
        if self.details:
            body["details"] = dict(self.details)
        return body


@dataclass
class FaultRule:
    """Make matching requests fail with ``status`` for ``remaining`` requests or until ``until``."""

    id: int
    status: int
    remaining: int | None
    until: float | None
    methods: frozenset[str] | None
    path_contains: str | None

    def describe(self) -> dict[str, Any]:
        """The rule as the admin API shows it."""
        return {
            "id": self.id, "status": self.status, "remaining": self.remaining,
            "seconds_left": None if self.until is None else max(self.until - time.monotonic(), 0.0),
            "methods": sorted(self.methods) if self.methods else None, "path_contains": self.path_contains,
        }

    def refusal(self) -> Refusal:
        """The answer a matching request gets."""
        if self.status == 429:
            return Refusal(429, "Too many requests, please try again later.", "TooManyRequests",
                           headers={"Retry-After": "1"}, details={"retryAfterSeconds": 1})
        if self.status == 503:
            # no Retry-After, like most real 503s (urllib3 under the official client would silently
            # retry GETs that carry one)
            return Refusal(503, "The server is currently unable to handle the request (injected fault)",
                           "ServiceUnavailable")
        if self.status == 504:
            return Refusal(504, "The server was unable to return a response in the time allotted, but may still "
                                "be processing the request (injected fault)", "Timeout")
        if self.status == 500:
            return Refusal(500, "Internal error occurred: injected fault", "InternalError")
        return Refusal(self.status, f"injected fault with status {self.status}")


class Faults:
    """The active fault rules; the first matching rule fails a request."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(self, spec: Mapping[str, Any]) -> FaultRule:
        """Add a rule from ``{"status", "count" | "seconds", "methods"?, "path_contains"?}``."""
        status = spec.get("status")
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        count = spec.get("count")
        seconds = spec.get("seconds")
        if count is None and seconds is None:
            raise ValueError("give count or seconds")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise ValueError("seconds must be a positive number")
        methods = spec.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise ValueError("methods must be a list of strings")
            methods = frozenset(m.upper() for m in methods)
        path_contains = spec.get("path_contains")
        if path_contains is not None and not isinstance(path_contains, str):
            raise ValueError("path_contains must be a string")
        rule = FaultRule(next(self._ids), status, count, None if seconds is None else time.monotonic() + seconds,
                         methods, path_contains)
        self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule."""
        self._rules.clear()

    def rules(self) -> list[FaultRule]:
        """The rules still active."""
        now = time.monotonic()
        self._rules = [r for r in self._rules if (r.remaining is None or r.remaining > 0)
                       and (r.until is None or r.until > now)]
        return list(self._rules)

    def check(self, method: str, verb: str, path: str) -> Refusal | None:
        """The injected answer if a rule matches this request (consuming one of its count)."""
        if not self._rules:
            return None
        for rule in self.rules():
            if rule.methods is not None and method not in rule.methods and verb not in rule.methods:
                continue
            if rule.path_contains is not None and rule.path_contains not in path:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.refusal()
        return None


class RequestCounter:
    """How many API requests of each ``VERB resource`` arrived (and how each was answered)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.total = 0

    def count(self, key: str) -> None:
        """Count one request, e.g. ``"LIST pods"``."""
        self.by_kind[key] += 1
        self.total += 1

    def answered(self, status: int) -> None:
        """Count one response status."""
        self.by_status[str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        """Flat counts by ``VERB resource`` plus ``total`` and ``by_status``."""
        return {**dict(sorted(self.by_kind.items())), "total": self.total,
                "by_status": dict(sorted(self.by_status.items()))}

    def reset(self) -> None:
        """Start counting from zero."""
        self.by_kind.clear()
        self.by_status.clear()
        self.total = 0
