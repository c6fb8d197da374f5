"""Label and field selectors: parsed once per request, matched against every candidate object.

The grammar and the error messages follow ``k8s.io/apimachinery/pkg/labels`` and ``fields``:
``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``, ``a>1``, ``a<1``,
comma meaning AND. A malformed selector is a 400 BadRequest, as on a real server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request
from .validation import label_key_errors, label_value_errors

__all__ = ["FieldSelector", "LabelSelector", "Requirement"]

_TOKEN = re.compile(r"\s*(==|!=|=|!|,|\(|\)|<|>|[^\s=!,()<>]+)")
_WORDS = {"in", "notin"}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of a label selector: ``key <operator> values``."""

    key: str
    operator: str  # one of: =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels satisfies this requirement."""
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("=", "in"):
            return labels.get(self.key) in self.values
        if op in ("!=", "notin"):
            return labels.get(self.key) not in self.values
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if op == "gt" else number < bound


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the lexeme pattern accepts every non-space character
            raise bad_request(f"unable to parse requirement: invalid selector {text!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def error(self, why: str) -> ApiError:
        return bad_request(f"unable to parse requirement: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        lexeme = self.peek()
        if lexeme is None:
            raise self.error(f"found '', expected: identifier in selector {self.text!r}")
        self.position += 1
        return lexeme

    def identifier(self, what: str) -> str:
        lexeme = self.take()
        if lexeme in ("==", "!=", "=", "!", ",", "(", ")", "<", ">"):
            raise self.error(f"found '{lexeme}', expected: {what}")
        return lexeme

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        if not self.tokens:
            return requirements
        while True:
            requirements.append(self.requirement())
            lexeme = self.peek()
            if lexeme is None:
                return requirements
            if lexeme != ",":
                raise self.error(f"found '{lexeme}', expected: ',' or 'end of string'")
            self.take()

    def requirement(self) -> Requirement:  # noqa: PLR0912 - one branch per operator of the grammar
        if self.peek() == "!":
            self.take()
            key = self.identifier("identifier after '!'")
            self.check_key(key)
            return Requirement(key, "!")
        key = self.identifier("identifier")
        self.check_key(key)
        lexeme = self.peek()
        if lexeme is None or lexeme == ",":
            return Requirement(key, "exists")
        self.take()
        if lexeme in ("=", "=="):
            return Requirement(key, "=", (self.value(),))
        if lexeme == "!=":
            return Requirement(key, "!=", (self.value(),))
        if lexeme in ("<", ">"):
            bound = self.take()
            if not re.fullmatch(r"-?\d+", bound):
                raise self.error(f"for 'Gt', 'Lt' operators, the value must be an integer, got {bound!r}")
            return Requirement(key, "gt" if lexeme == ">" else "lt", (bound,))
        if lexeme in _WORDS:
            if self.take() != "(":
                raise self.error("found '', expected: '('")
            values: list[str] = []
            while True:
                item = self.take()
                if item == ")":
                    break
                if item == ",":
                    values.append("")
                    continue
                self.check_value(item)
                values.append(item)
                following = self.take()
                if following == ")":
                    break
                if following != ",":
                    raise self.error(f"found '{following}', expected: ',' or ')'")
            if not values:
                raise self.error("for 'in', 'notin' operators, values set can't be empty")
            return Requirement(key, lexeme, tuple(values))
        raise self.error(f"found '{lexeme}', expected: in, notin, =, ==, !=, gt, lt")

    def value(self) -> str:
        lexeme = self.peek()
        if lexeme is None or lexeme in (",", ")"):
            return ""
        value = self.take()
        self.check_value(value)
        return value

    def check_key(self, key: str) -> None:
        errors = label_key_errors(key)
        if errors:
            raise self.error(f"invalid label key {key!r}: {'; '.join(errors)}")

    def check_value(self, value: str) -> None:
        errors = label_value_errors(value)
        if errors:
            raise self.error(f"invalid label value: {value!r}: at key: {'; '.join(errors)}")


class LabelSelector:
    """A parsed ``labelSelector``; the empty selector matches everything."""

    def __init__(self, text: str | None) -> None:
        self.text = text or ""
        self.requirements = tuple(_Parser(self.text).parse())

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object carrying ``labels`` is selected."""
        if not self.requirements:
            return True
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _get_path(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    return "" if current is None else str(current)


_FIELDS_BY_KIND: dict[str, frozenset[str]] = {
    "pods": frozenset({
        "metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName",
    }),
    "configmaps": frozenset({"metadata.name", "metadata.namespace"}),
    "secrets": frozenset({"metadata.name", "metadata.namespace", "type"}),
}


class FieldSelector:
    """A parsed ``fieldSelector`` limited to the fields a real server supports for the resource."""

    def __init__(self, text: str | None, kind: str) -> None:
        self.text = text or ""
        self.terms: list[tuple[str, bool, str]] = []  # (field, wants_equal, value)
        supported = _FIELDS_BY_KIND.get(kind, frozenset({"metadata.name", "metadata.namespace"}))
        for raw in filter(None, (part.strip() for part in self.text.split(","))):
            match = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", raw)
            if match is None:
                raise bad_request(f"invalid selector: '{self.text}'; can't understand '{raw}'")
            field, operator, value = match.groups()
            if field not in supported:
                raise bad_request(f'field label not supported: {field}')
            self.terms.append((field, operator != "!=", value))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object is selected."""
        return all((_get_path(obj, field) == value) == wants_equal for field, wants_equal, value in self.terms)

    def __bool__(self) -> bool:
        return bool(self.terms)
