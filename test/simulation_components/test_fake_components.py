"""Tests of the fakes the other tests and the demo rely on: LocalMosquitto and the fake model.

Why this exists: an end-to-end test that fails because its fake model or its
broker misbehaves would point at the orchestrator. These tests pin down what
the stand-ins do against a real Mosquitto (auth, persistent sessions that
keep QoS 0 messages across a broker restart), each with unique ids and topics
and every wait bounded by a deadline.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.messages import (
    PingHealthMSOToModel,
    PongHealthModelToMSO,
)
from simulation_components import fake_model
from simulation_components.local_mosquitto import DEPLOYMENT_CONFIG, LocalMosquitto, shared_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 20.0


# --- helpers ------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Client:
    """A small synchronous paho client for tests: connect, subscribe, wait for messages."""

    def __init__(
        self,
        broker: LocalMosquitto,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        password: str | None = None,
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("test"),
            clean_session=clean_session,
        )
        self._client.username_pw_set(broker.username, broker.password if password is None else password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self.connack = self._connack.get(timeout=DEADLINE_SECONDS)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack.put(reason_code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subacks.put(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _, mid = self._client.subscribe(topic, qos=qos)
        assert self._subacks.get(timeout=DEADLINE_SECONDS) == mid

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos).wait_for_publish(DEADLINE_SECONDS)

    def next_message(self, timeout: float = DEADLINE_SECONDS) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalMosquitto]:
    with LocalMosquitto() as local:
        yield local


@pytest.fixture
def client(broker: LocalMosquitto) -> Iterator[Client]:
    test_client = Client(broker)
    yield test_client
    test_client.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def run_fake_model(broker: LocalMosquitto, **extra: str) -> subprocess.Popen[str]:
    env = subprocess_env(
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_USERNAME=broker.username,
        MQTT_PASSWORD=broker.password,
        SIMULATOR_ID="204-asd",
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "simulation_components.fake_model"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def assert_nothing_more(client: Client, topic_filter_prefix: str, marker_topic: str) -> None:
    """Publish a marker and check that nothing under the prefix arrives before it."""
    client.subscribe(marker_topic)
    client.publish(marker_topic, b"marker")
    while True:
        topic, _ = client.next_message()
        if topic == marker_topic:
            return
        assert not topic.startswith(topic_filter_prefix), f"unexpected message on {topic}"


# --- LocalMosquitto -----------------------------------------------------------------------------


def test_local_mosquitto_uses_the_deployment_settings(broker: LocalMosquitto) -> None:
    config = broker.config_path.read_text()
    assert "queue_qos0_messages true" in shared_settings(DEPLOYMENT_CONFIG)
    for line in shared_settings(DEPLOYMENT_CONFIG):
        assert line in config.splitlines()
    assert "allow_anonymous false" in config
    assert f"listener {broker.port} 127.0.0.1" in config


def test_local_mosquitto_rejects_a_wrong_password(broker: LocalMosquitto) -> None:
    wrong = Client(broker, password="not-the-password")
    try:
        assert wrong.connack.is_failure
    finally:
        wrong.close()
    right = Client(broker)
    try:
        assert not right.connack.is_failure
    finally:
        right.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_persistent_session_keeps_a_qos0_message_across_a_broker_restart(how: str) -> None:
    with LocalMosquitto() as broker:
        session_id = unique("persistent")
        topic = f"/test/{unique('qos0')}"
        subscriber = Client(broker, client_id=session_id, clean_session=False)
        subscriber.subscribe(topic, qos=1)
        subscriber.close()

        publisher = Client(broker)
        publisher.publish(topic, b"queued while offline", qos=0)
        publisher.close()

        database = broker.directory / "persistence" / "mosquitto.db"
        if how == "stop":
            broker.stop()
        else:
            # A crash keeps only what autosave (every second) wrote: wait for a save after the publish.
            published_at = time.time()
            deadline = time.monotonic() + DEADLINE_SECONDS
            while not (database.exists() and database.stat().st_mtime > published_at + 0.01):
                assert time.monotonic() < deadline, "mosquitto never autosaved"
                time.sleep(0.05)
            broker.kill()
        assert database.exists()
        port = broker.port
        broker.start()
        assert broker.port == port

        resumed = Client(broker, client_id=session_id, clean_session=False)
        try:
            assert resumed.next_message() == (topic, b"queued while offline")
        finally:
            resumed.close()
        assert "mosquitto version" in broker.log_text()


# --- fake model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("exit_code", "sends_ready"), [(0, True), (1, False), (2, True), (7, True)])
def test_fake_model_exit_codes(
    broker: LocalMosquitto, client: Client, exit_code: int, sends_ready: bool
) -> None:
    simulation_id = unique("sim")
    model_id = unique("model")
    ready_topic = f"/lifecycle/model/mso/{simulation_id}/{model_id}/ReadyForProcessing"
    client.subscribe(f"/lifecycle/model/mso/{simulation_id}/#")

    process = run_fake_model(
        broker,
        SIMULATION_ID=simulation_id,
        MODEL_ID=model_id,
        EXIT_CODE=str(exit_code),
        FAKE_MODEL_RUN_SECONDS="0.2",
    )
    output, _ = process.communicate(timeout=DEADLINE_SECONDS)
    assert process.returncode == exit_code, output
    assert "MQTT_PASSWORD=<hidden>" in output
    assert broker.password not in output

    if sends_ready:
        assert client.next_message() == (ready_topic, b"")
    assert_nothing_more(client, f"/lifecycle/model/mso/{simulation_id}/", f"/test/{unique('marker')}")


@pytest.mark.parametrize("hang", [False, True])
def test_fake_model_hears_simulation_done_only_from_its_announcement(
    broker: LocalMosquitto, client: Client, hang: bool
) -> None:
    """As a DOTS model: a SimulationDone sent before it subscribed passes it by; one after ends it (unless hung)."""
    simulation_id, model_id = unique("sim"), unique("model")
    done = f"/lifecycle/dots-so/model/{simulation_id}/{model_id}/SimulationDone"
    client.subscribe(f"/lifecycle/model/mso/{simulation_id}/#")
    process = run_fake_model(broker, SIMULATION_ID=simulation_id, MODEL_ID=model_id, FAKE_MODEL_RUN_SECONDS="600",
                             FAKE_MODEL_START_SECONDS="1", FAKE_MODEL_HANG="1" if hang else "0")
    try:
        client.publish(done, b"")  # while it starts: never heard
        assert client.next_message()[0].endswith("/ReadyForProcessing")
        client.publish(done, b"")
        if hang:
            with pytest.raises(subprocess.TimeoutExpired):
                process.communicate(timeout=2)
        else:
            output, _ = process.communicate(timeout=DEADLINE_SECONDS)
            assert process.returncode == 0 and output.count("SimulationDone heard") == 1, output
    finally:
        process.kill()
        process.communicate()


def test_fake_model_exits_143_on_sigterm(broker: LocalMosquitto, client: Client) -> None:
    simulation_id, model_id = unique("sim"), unique("model")
    client.subscribe(f"/lifecycle/model/mso/{simulation_id}/#")
    process = run_fake_model(
        broker, SIMULATION_ID=simulation_id, MODEL_ID=model_id, FAKE_MODEL_RUN_SECONDS="60"
    )
    try:
        client.next_message()  # ReadyForProcessing: it is running now
        process.terminate()
        output, _ = process.communicate(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 143, output


def _ping_until_pong(client: Client, simulation_id: str, model_id: str) -> PongHealthModelToMSO:
    ping = f"/healthcheck/mso/model/{simulation_id}/{model_id}/PingHealthMSOToModel"
    pong = f"/healthcheck/model/mso/{simulation_id}/{model_id}/PongHealthModelToMSO"
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        client.publish(ping, PingHealthMSOToModel().SerializeToString(), qos=0)
        try:
            topic, payload = client.next_message(timeout=0.5)
        except queue.Empty:
            continue  # the model may not have subscribed yet
        assert topic == pong
        return PongHealthModelToMSO.FromString(payload)
    raise AssertionError("no pong")


@pytest.mark.parametrize("stall", [False, True])
def test_fake_model_answers_pings(broker: LocalMosquitto, client: Client, stall: bool) -> None:
    simulation_id, model_id = unique("sim"), unique("model")
    client.subscribe(f"/healthcheck/model/mso/{simulation_id}/#")
    process = run_fake_model(
        broker,
        SIMULATION_ID=simulation_id,
        MODEL_ID=model_id,
        FAKE_MODEL_RUN_SECONDS="60",
        FAKE_MODEL_ANSWER_PINGS="1",
        FAKE_MODEL_STALL="1" if stall else "0",
    )
    try:
        first = _ping_until_pong(client, simulation_id, model_id)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            later = _ping_until_pong(client, simulation_id, model_id)
            if stall or later.numberOfBids > first.numberOfBids or time.monotonic() > deadline:
                break
    finally:
        process.terminate()
        process.communicate(timeout=DEADLINE_SECONDS)
    if stall:
        assert (later.numberOfBids, later.numberOfAllocations) == (
            first.numberOfBids,
            first.numberOfAllocations,
        )
    else:
        assert later.numberOfBids > first.numberOfBids
        assert later.numberOfAllocations > first.numberOfAllocations


def test_fake_model_pong_counters() -> None:
    grown = PongHealthModelToMSO.FromString(fake_model.pong_payload(seconds_running=3.7, stall=False))
    assert (grown.numberOfBids, grown.numberOfAllocations) == (3, 3)
    stalled = PongHealthModelToMSO.FromString(fake_model.pong_payload(seconds_running=30.0, stall=True))
    assert (
        stalled.numberOfBids
        == PongHealthModelToMSO.FromString(
            fake_model.pong_payload(seconds_running=1.0, stall=True)
        ).numberOfBids
    )


def test_fake_model_settings_from_env() -> None:
    settings = fake_model.FakeModelSettings.from_env(
        {"MQTT_HOST": "broker", "MODEL_ID": "m", "EXIT_CODE": "2", "MQTT_PASSWORD": "secret"}
    )
    assert (settings.mqtt_host, settings.mqtt_port, settings.exit_code, settings.run_seconds) == (
        "broker",
        1883,
        2,
        10.0,
    )
    assert "MQTT_PASSWORD=<hidden>" in fake_model.describe_settings(settings)
    assert not any("secret" in line for line in fake_model.describe_settings(settings))
