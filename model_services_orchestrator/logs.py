"""Structured logging, with secrets kept out of every line.

JSON lines by default (what log collectors want), a readable console format
with ``LOG_FORMAT=console``. Log lines of libraries (the Kubernetes client,
paho) go through the same pipeline. The last processor before rendering
replaces every known secret value (the MQTT password, the API token, env var
values of models whose names say password, secret, token or key) wherever
it occurs, so no code path can leak one by accident.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED", "SecretRedactor", "configure_logging", "get_logger"]

REDACTED = "***"
_MIN_SECRET_LENGTH = 3  # shorter values would redact ordinary words


class SecretRedactor:
    """A structlog processor that blanks out registered secret values anywhere in an event."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        new = {value for value in values if len(value) >= _MIN_SECRET_LENGTH} - self._secrets
        if not new:
            return
        with self._lock:
            self._secrets |= new
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(str(value))

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self._pattern is None:
            return event
        for key, value in event.items():
            event[key] = self._clean(value)
        return event


def configure_logging(
    *, level: str, log_format: str, redactor: SecretRedactor, stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's logging through one redacting pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared[:-2],
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[:-2],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP layer logs request bodies and headers at DEBUG: keep it quieter than ours.
    for noisy in ("urllib3", "kubernetes.client.rest"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
