"""The MQTT session's pure parts: which CONNACK codes are a refused login, and the outbox before any connection."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.mqtt_session import LoginRefusedError, MqttSession, MqttSettings, is_login_refused


def _settings(**overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1", "port": 1, "username": "dots", "password": "secret", "client_id": "mso-unit",
        "keepalive": 30, "subscriptions": ("dots/#",), **overrides}
    return MqttSettings(**values)  # type: ignore[arg-type]


def _session(**overrides: object) -> MqttSession:
    return MqttSession(settings=_settings(**overrides), on_message=lambda _topic, _payload, _ack: None)


@pytest.mark.parametrize("name", ["Bad user name or password", "Not authorized"])
def test_paho_reason_codes_of_a_refused_login_are_recognised(name: str) -> None:
    # How paho 2 reports MQTT 3.1.1's CONNACK 4 and 5 in on_connect.
    reason = ReasonCode(PacketTypes.CONNACK, name)
    assert reason.value in (134, 135)
    assert is_login_refused(reason)


@pytest.mark.parametrize("code", [4, 5, 134, 135])
def test_bare_codes_of_a_refused_login_are_recognised(code: int) -> None:
    assert is_login_refused(code)


@pytest.mark.parametrize("name", ["Success", "Server unavailable", "Unspecified error",
                                  "Client identifier not valid", "Unsupported protocol version"])
def test_other_reason_codes_are_not_a_refused_login(name: str) -> None:
    assert not is_login_refused(ReasonCode(PacketTypes.CONNACK, name))


@pytest.mark.parametrize("code", [0, 1, 2, 3, 136])
def test_other_bare_codes_are_not_a_refused_login(code: int) -> None:
    # 3 is MQTT 3.1.1's "server unavailable": worth retrying.
    assert not is_login_refused(code)


def test_login_refused_is_a_runtime_error() -> None:
    assert issubclass(LoginRefusedError, RuntimeError)


def test_settings_default_to_qos_2_and_mosquittos_window() -> None:
    settings = _settings()
    assert (settings.publish_qos, settings.max_inflight) == (2, 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 2  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value"), [("publish_qos", 3), ("publish_qos", -1), ("max_inflight", 0)])
def test_impossible_settings_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        _session(**{field: value})


@pytest.mark.parametrize(("topic", "why"), [
    ("", "empty"), ("dots/+/x", "wildcard"), ("dots/#", "wildcard"), ("/a/b\x00/c", "U\\+0000"),
    ("/a/\x1b[0m", "U\\+001B"), ("/a/\x85", "U\\+0085"), ("/a/\ufdd0", "U\\+FDD0"), ("/" + "a" * 65535, "longer"),
])
def test_a_topic_the_broker_would_refuse_cannot_be_published(topic: str, why: str) -> None:
    session = _session()
    with pytest.raises(ValueError, match=why):
        session.publish(topic, b"x")
    with pytest.raises(ValueError, match=why):
        session.publish_volatile(topic, b"x")
    assert session.pending() == 0


def test_before_connecting_messages_wait_and_volatile_ones_are_dropped() -> None:
    session = _session()
    session.publish("dots/a/ModelsReady", b"1")
    session.publish("dots/a/ModelsReady", b"2", on_delivered=lambda: None)
    session.publish_volatile("dots/a/Pong", b"stale soon")
    assert session.pending() == 2
    assert not session.connected
    assert session.sent_by_type == {}
    assert session.reconnects == 0


def test_flush_says_at_once_when_nothing_is_pending() -> None:
    assert asyncio.run(_session().flush(5)) is True


def test_flush_gives_up_honestly_at_its_timeout() -> None:
    session = _session()
    session.publish("dots/a/ModelsReady", b"1")
    started = time.monotonic()
    assert asyncio.run(session.flush(0.1)) is False
    assert 0.09 <= time.monotonic() - started < 1.0
    assert session.pending() == 1
