"""Structured logging, with secrets kept out of every line.

JSON lines by default (what log collectors want), a readable console format
with ``LOG_FORMAT=console``. Log lines of libraries (the Kubernetes client,
paho) go through the same pipeline. The last processor before rendering
replaces every known secret value (the MQTT password, the API token, env var
values of models whose names say password, secret, token or key) wherever
it occurs, so no code path can leak one by accident.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import ahocorasick  # type: ignore[import-not-found]  # a C extension without stubs or py.typed
import structlog

__all__ = ["REDACTED", "SecretRedactor", "configure_logging", "get_logger", "secret_forms"]

REDACTED = "***"
# Shorter values would blank ordinary words and digits everywhere; they are blanked only where an env
# var of theirs is written out with its name (``NAME=value``, ``"NAME": "value"``, ``'NAME': 'value'``).
_MIN_SECRET_LENGTH = 3
# The encodings of a shorter value (its base64 above all: a few letters and digits) turn up in ordinary text
# by chance, so only secrets this long get them, and no piece of base64 shorter than this is looked for.
_MIN_ENCODED_LENGTH = 8
# Secrets come in layers (one per registration); past this many, the layers are merged into one, so
# a redaction runs at most this many matchers whatever the number of secrets.
_MAX_LAYERS = 8

_Owner = str | None

# Go's encoding/json escapes these on top of what JSON needs, so that its output is safe inside HTML and JS.
_GO_JSON_ESCAPES = str.maketrans({char: f"\\u{ord(char):04x}" for char in "<>&\u2028\u2029"})
# Go's html.EscapeString and markupsafe (Jinja2) write quotes as numeric references.
_NUMERIC_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"})
# Some encoders write %2f where urllib writes %2F.
_PERCENT_HEX = re.compile("%[0-9A-F]{2}")
_URL_SAFE_BASE64 = str.maketrans("+/", "-_")


def secret_forms(value: str) -> set[str]:
    """``value`` as it may stand in text: itself, JSON-escaped, as a Python repr, URL-encoded; and, when it is
    long enough, base64-encoded, as a bytes repr, as Go writes it in JSON, with lowercase %-hex, HTML-escaped."""
    as_json = json.dumps(value, ensure_ascii=False)[1:-1]
    url_encoded = {urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value)}
    forms = {
        value,
        as_json,
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
        *url_encoded,
    }
    if len(value) >= _MIN_ENCODED_LENGTH:
        forms |= {
            repr(value.encode())[2:-1],
            as_json.translate(_GO_JSON_ESCAPES),
            *(_PERCENT_HEX.sub(lambda escape: escape.group().lower(), form) for form in url_encoded),
            html.escape(value),
            html.escape(value, quote=False),
            value.translate(_NUMERIC_HTML_ESCAPES),
            *_base64_forms(value.encode()),
        }
    return {form for form in forms if form}


def _base64_forms(secret: bytes) -> set[str]:
    """The base64 of ``secret`` alone, and the part of it that stays the same inside any longer blob.

    Inside a blob (``user:password`` for HTTP Basic auth) the secret starts at one of three offsets within a
    3-byte group, and its first and last characters there also hold bits of its neighbours. For each offset,
    the characters made of the secret's bits only are looked for: what is left around the blank holds a few
    bits of it at either end, never a whole byte.
    """
    alone = base64.b64encode(secret).decode()
    found = {alone, alone.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        first = (offset * 8 + 5) // 6  # the first character with no bit of what comes before
        end = (offset + len(secret)) * 8 // 6  # past the last character with no bit of what comes after
        if end - first >= _MIN_ENCODED_LENGTH:
            found.add(encoded[first:end])
    return found | {form.translate(_URL_SAFE_BASE64) for form in found}


def _replacements(name: str, value: str) -> dict[str, str]:
    """What to look for and what to put instead, for one secret (``name`` may be empty)."""
    if not value:
        return {}
    if len(value) >= _MIN_SECRET_LENGTH:
        return dict.fromkeys(secret_forms(value), REDACTED)
    if not name:
        return {}
    found: dict[str, str] = {}
    for form in secret_forms(value):
        found[f"{name}={form}"] = f"{name}={REDACTED}"
        for quote in ('"', "'"):
            found[f"{quote}{name}{quote}: {quote}{form}{quote}"] = f"{quote}{name}{quote}: {quote}{REDACTED}{quote}"
    return found


def _matcher(patterns: dict[str, str]) -> Any:
    automaton = ahocorasick.Automaton()
    for pattern, replacement in patterns.items():
        automaton.add_word(pattern, (len(pattern), replacement))
    automaton.make_automaton()
    return automaton


class SecretRedactor:
    """A structlog processor that blanks out registered secret values anywhere in an event.

    Secrets are registered per owner (a simulation; ``None`` for the daemon's own, kept for good) and
    forgotten with it, so the daemon's memory does not grow with every simulation. Matching uses
    Aho-Corasick automata (``pyahocorasick``): a line costs the same with ten secrets or ten thousand.
    Registering builds a matcher of the new secrets only; forgetting rebuilds from what is left.
    """

    def __init__(self) -> None:
        self._patterns: dict[str, str] = {}
        self._holders: dict[str, set[_Owner]] = {}
        self._owned: dict[_Owner, set[str]] = {}
        self._layers: tuple[Any, ...] = ()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str], owner: _Owner = None) -> None:
        """Register secret values without a known env var name."""
        self.add_env((("", value) for value in values), owner)

    def add_env(self, entries: Iterable[tuple[str, str]], owner: _Owner = None) -> None:
        """Register secret env vars as (name, value)."""
        with self._lock:
            owned = self._owned.setdefault(owner, set())
            new: dict[str, str] = {}
            for name, value in entries:
                for pattern, replacement in _replacements(name, value).items():
                    owned.add(pattern)
                    holders = self._holders.setdefault(pattern, set())
                    holders.add(owner)
                    if pattern not in self._patterns:
                        self._patterns[pattern] = new[pattern] = replacement
            if not new:
                return
            if len(self._layers) >= _MAX_LAYERS:
                self._layers = (_matcher(self._patterns),)
            else:
                self._layers = (*self._layers, _matcher(new))

    def forget(self, owner: str) -> None:
        """Drop the secrets only ``owner`` registered (a simulation that is cleaned up)."""
        with self._lock:
            dropped = False
            for pattern in self._owned.pop(owner, set()):
                holders = self._holders[pattern]
                holders.discard(owner)
                if not holders:
                    del self._holders[pattern]
                    del self._patterns[pattern]
                    dropped = True
            if dropped:
                self._layers = (_matcher(self._patterns),) if self._patterns else ()

    def __len__(self) -> int:
        return len(self._patterns)

    def redact(self, text: str) -> str:
        for layer in self._layers:
            text = _replace(layer, text)
        return text

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
        if not self._layers:
            return event
        for key, value in event.items():
            event[key] = self._clean(value)
        return event


def _replace(automaton: Any, text: str) -> str:
    pieces: list[str] = []
    position = 0
    for end, (length, replacement) in automaton.iter_long(text):
        start = end - length + 1
        pieces.append(text[position:start])
        pieces.append(replacement)
        position = end + 1
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


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
