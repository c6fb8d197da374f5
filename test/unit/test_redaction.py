"""The redactor: secrets are blanked in every form a model or a library may write them, and forgotten
with their simulation, so the daemon neither leaks them nor grows with every simulation."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from model_services_orchestrator.logs import REDACTED, SecretRedactor

PASSWORD = 'pa"ss\\wo\'rd/+ é'


@pytest.mark.parametrize("written", [
    PASSWORD,
    json.dumps({"MQTT_PASSWORD": PASSWORD}),
    json.dumps({"MQTT_PASSWORD": PASSWORD}, ensure_ascii=False),
    repr({"MQTT_PASSWORD": PASSWORD}),
    str({"MQTT_PASSWORD": PASSWORD}),
    f"mqtt://user:{urllib.parse.quote(PASSWORD, safe='')}@broker:1883",
    f"password={urllib.parse.quote_plus(PASSWORD)}&x=1",
    f"path/{urllib.parse.quote(PASSWORD)}",
])
def test_a_secret_is_blanked_in_its_escaped_forms(written: str) -> None:
    redactor = SecretRedactor()
    redactor.add_env([("MQTT_PASSWORD", PASSWORD)], owner="sim")
    redacted = redactor.redact(f"model said: {written} (end)")
    assert REDACTED in redacted
    for fragment in ('pa"ss', 'pa\\"ss', "ss\\\\wo", "wo'rd", "pa%22ss", "pa\\x22ss"):
        assert fragment not in redacted, (fragment, redacted)
    assert redacted.startswith("model said: ") and redacted.endswith(" (end)")


def test_a_short_secret_is_blanked_where_its_name_stands_and_nowhere_else() -> None:
    redactor = SecretRedactor()
    redactor.add_env([("DB_PASSWORD", "ab")], owner="sim")
    text = "DB_PASSWORD=ab; {'DB_PASSWORD': 'ab'}; {\"DB_PASSWORD\": \"ab\"}; about abc"
    assert redactor.redact(text) == (
        "DB_PASSWORD=***; {'DB_PASSWORD': '***'}; {\"DB_PASSWORD\": \"***\"}; about abc")


def test_a_simulations_secrets_are_forgotten_with_it_unless_another_holds_them_too() -> None:
    redactor = SecretRedactor()
    redactor.add(["daemon-token"])
    redactor.add_env([("TOKEN", "only-in-a"), ("MQTT_PASSWORD", "shared-pw")], owner="a")
    redactor.add_env([("MQTT_PASSWORD", "shared-pw")], owner="b")
    redactor.forget("a")
    assert redactor.redact("only-in-a shared-pw daemon-token") == f"only-in-a {REDACTED} {REDACTED}"
    redactor.forget("b")
    assert redactor.redact("shared-pw daemon-token") == f"shared-pw {REDACTED}"


def test_memory_stays_flat_over_many_simulations() -> None:
    redactor = SecretRedactor()
    redactor.add(["daemon-token"])
    baseline = len(redactor)
    for index in range(1000):
        simulation = f"sim-{index}"
        redactor.add_env([("MQTT_PASSWORD", f"password-{index}"), ("TOKEN", f"token-{index}")], owner=simulation)
        assert redactor.redact(f"password-{index}") == REDACTED
        redactor.forget(simulation)
    assert len(redactor) == baseline


def test_many_layers_are_merged_and_every_secret_still_matches() -> None:
    redactor = SecretRedactor()
    for index in range(50):
        redactor.add_env([("TOKEN", f"token-{index:03d}-x")], owner=f"sim-{index}")
    text = " ".join(f"token-{index:03d}-x" for index in range(50))
    assert redactor.redact(text) == " ".join([REDACTED] * 50)


def test_the_longest_secret_wins_where_two_overlap() -> None:
    redactor = SecretRedactor()
    redactor.add(["secret", "secret-and-more"])
    assert redactor.redact("a secret-and-more b") == f"a {REDACTED} b"
