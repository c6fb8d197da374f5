"""``.env.template`` is the list of every setting a deployment can make; it must not drift from ``Settings``.

Whoever adds a setting adds its line there (with its default), and a
setting removed from the code is removed from the template: this test fails
otherwise, and says which names. The values written there must also be the
defaults, so that copying the template changes nothing but the secrets.
"""

from __future__ import annotations

import re
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from model_services_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / ".env.template"

# `NAME=value`, or `#NAME=` for a setting with no default that must stay unset.
_ENTRY = re.compile(r"^(?P<commented>#?)(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def _entries() -> list[tuple[str, bool]]:
    entries = []
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if match := _ENTRY.match(line):
            entries.append((match["name"], bool(match["commented"])))
    return entries


def test_every_setting_is_listed_once() -> None:
    names = [name for name, _ in _entries()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"listed more than once in .env.template: {duplicates}"
    fields = {name.upper() for name in Settings.model_fields}
    missing = sorted(fields - set(names))
    unknown = sorted(set(names) - fields)
    assert not missing, f"settings missing from .env.template: {missing}"
    assert not unknown, f".env.template lists names that are no setting: {unknown}"


def test_only_settings_without_a_default_are_commented_out() -> None:
    for name, commented in _entries():
        if commented:
            assert Settings.model_fields[name.lower()].default is None, (
                f"{name} has a default: write it as {name}=<default>")


def test_the_values_are_the_defaults_and_secrets_are_empty() -> None:
    values = {name.lower(): value for name, value in dotenv_values(TEMPLATE).items() if value is not None}
    # Validation alone: neither the process environment nor a .env file plays a part.
    settings = Settings.model_validate(values)
    for name in values:
        field = Settings.model_fields[name]
        actual = getattr(settings, name)
        if field.annotation is SecretStr or isinstance(actual, SecretStr):
            assert isinstance(actual, SecretStr)
            assert actual.get_secret_value() == "", f"{name.upper()} is a secret: leave it empty in the template"
            continue
        assert actual == field.default, (
            f"{name.upper()}: the template says {actual!r}, the default is {field.default!r}")
