"""A stand-in for a DOTS model container, as the upstream quickstart's fake model behaves.

Why this exists: the orchestrator's job is to start models and report what
they do, so tests, the demo and benchmarks need a model whose behaviour is
chosen by its environment: connect to MQTT, send ReadyForProcessing (or fail
before it), run for a while, exit with a given code. Like a model made from the
DOTS template, it subscribes to its SimulationDone just before it announces
itself, so it never hears one sent earlier, and on hearing it finishes its
work and exits (or, hung, does not). Optionally it answers the orchestrator's
health pings with progress counters that grow (or stall).

Environment (as the orchestrator's pods receive it from DeployModels):
MQTT_HOST, MQTT_PORT (1883), MQTT_USERNAME, MQTT_PASSWORD, SIMULATOR_ID,
SIMULATION_ID, MODEL_ID, EXIT_CODE (0); ours: FAKE_MODEL_RUN_SECONDS (10),
FAKE_MODEL_ANSWER_PINGS (1 to answer PingHealthMSOToModel), FAKE_MODEL_STALL
(1 to keep the pong counters constant), FAKE_MODEL_START_SECONDS (0: how long
it takes before it connects), FAKE_MODEL_SO (dots-so: the SO whose
SimulationDone it listens to), FAKE_MODEL_FINISH_SECONDS (0: how long it
writes results after SimulationDone), FAKE_MODEL_HANG (1: SimulationDone heard
and ignored, as by a hung result writer).

Run with ``python -m simulation_components.fake_model``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from model_services_orchestrator.messages import HEALTHY, PongHealthModelToMSO, ReadyForProcessing

__all__ = [
    "FakeModelSettings",
    "describe_settings",
    "main",
    "ping_topic",
    "pong_payload",
    "pong_topic",
    "ready_topic",
    "simulation_done_topic",
]

CONNECT_TIMEOUT_SECONDS = 30.0
PUBLISH_TIMEOUT_SECONDS = 10.0
SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell or a container runtime reports


@dataclass(frozen=True, kw_only=True)
class FakeModelSettings:
    """What the fake model reads from its environment."""

    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    simulator_id: str = ""
    simulation_id: str = ""
    model_id: str = ""
    exit_code: int = 0
    run_seconds: float = 10.0
    answer_pings: bool = False
    stall: bool = False
    start_seconds: float = 0.0
    so: str = "dots-so"
    finish_seconds: float = 0.0
    hang: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FakeModelSettings:
        def flag(name: str) -> bool:
            return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}

        return cls(
            mqtt_host=environ.get("MQTT_HOST", "localhost"),
            mqtt_port=int(environ.get("MQTT_PORT") or 1883),
            mqtt_username=environ.get("MQTT_USERNAME", ""),
            mqtt_password=environ.get("MQTT_PASSWORD", ""),
            simulator_id=environ.get("SIMULATOR_ID", ""),
            simulation_id=environ.get("SIMULATION_ID", ""),
            model_id=environ.get("MODEL_ID", ""),
            exit_code=int(environ.get("EXIT_CODE") or 0),
            run_seconds=float(environ.get("FAKE_MODEL_RUN_SECONDS") or 10.0),
            answer_pings=flag("FAKE_MODEL_ANSWER_PINGS"),
            stall=flag("FAKE_MODEL_STALL"),
            start_seconds=float(environ.get("FAKE_MODEL_START_SECONDS") or 0.0),
            so=environ.get("FAKE_MODEL_SO") or "dots-so",
            finish_seconds=float(environ.get("FAKE_MODEL_FINISH_SECONDS") or 0.0),
            hang=flag("FAKE_MODEL_HANG"),
        )


def describe_settings(settings: FakeModelSettings) -> list[str]:
    """Lines describing the settings, the password hidden."""
    return [
        f"MQTT_HOST={settings.mqtt_host}",
        f"MQTT_PORT={settings.mqtt_port}",
        f"MQTT_USERNAME={settings.mqtt_username}",
        f"MQTT_PASSWORD={'<hidden>' if settings.mqtt_password else ''}",
        f"SIMULATOR_ID={settings.simulator_id}",
        f"SIMULATION_ID={settings.simulation_id}",
        f"MODEL_ID={settings.model_id}",
        f"EXIT_CODE={settings.exit_code}",
        f"FAKE_MODEL_RUN_SECONDS={settings.run_seconds}",
        f"FAKE_MODEL_ANSWER_PINGS={int(settings.answer_pings)}",
        f"FAKE_MODEL_STALL={int(settings.stall)}",
        f"FAKE_MODEL_START_SECONDS={settings.start_seconds}",
        f"FAKE_MODEL_SO={settings.so}",
        f"FAKE_MODEL_FINISH_SECONDS={settings.finish_seconds}",
        f"FAKE_MODEL_HANG={int(settings.hang)}",
    ]


def ready_topic(simulation_id: str, model_id: str) -> str:
    return f"/lifecycle/model/mso/{simulation_id}/{model_id}/ReadyForProcessing"


def simulation_done_topic(so: str, simulation_id: str, model_id: str) -> str:
    return f"/lifecycle/{so}/model/{simulation_id}/{model_id}/SimulationDone"


def ping_topic(simulation_id: str, model_id: str) -> str:
    return f"/healthcheck/mso/model/{simulation_id}/{model_id}/PingHealthMSOToModel"


def pong_topic(simulation_id: str, model_id: str) -> str:
    return f"/healthcheck/model/mso/{simulation_id}/{model_id}/PongHealthModelToMSO"


def pong_payload(*, seconds_running: float, stall: bool) -> bytes:
    """The pong: counters grow by one each second of running, or stay put when stalled."""
    progress = 1 if stall else int(seconds_running)
    return PongHealthModelToMSO(
        healthy=HEALTHY, numberOfBids=progress, numberOfAllocations=progress
    ).SerializeToString()


def _say(text: str) -> None:
    print(text, flush=True)


class _TerminatedError(Exception):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _connect(settings: FakeModelSettings, started: float, done: threading.Event) -> mqtt.Client:
    client_id = f"fake-model-{settings.model_id}-{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    connected = threading.Event()
    outcome: list[str] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        outcome.append(str(reason_code))
        if not reason_code.is_failure and settings.answer_pings:
            client.subscribe(ping_topic(settings.simulation_id, settings.model_id), qos=0)
        connected.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == simulation_done_topic(settings.so, settings.simulation_id, settings.model_id):
            done.set()
        elif message.topic == ping_topic(settings.simulation_id, settings.model_id):
            payload = pong_payload(seconds_running=time.monotonic() - started, stall=settings.stall)
            client.publish(pong_topic(settings.simulation_id, settings.model_id), payload, qos=0)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_SECONDS) or outcome[-1] != "Success":
        client.loop_stop()
        reason = outcome[-1] if outcome else "no answer"
        raise ConnectionError(f"could not connect to {settings.mqtt_host}:{settings.mqtt_port}: {reason}")
    return client


def _subscribe(client: mqtt.Client, topic: str) -> None:
    """Subscribe and wait for the broker's acknowledgement."""
    acknowledged: set[int] = set()
    arrived = threading.Condition()

    def on_subscribe(_client: mqtt.Client, _userdata: Any, mid: int, *_rest: Any) -> None:
        with arrived:
            acknowledged.add(mid)
            arrived.notify_all()

    client.on_subscribe = on_subscribe
    with arrived:
        mid = client.subscribe(topic, qos=0)[1]
        if not arrived.wait_for(lambda: mid in acknowledged, PUBLISH_TIMEOUT_SECONDS):
            raise ConnectionError("the broker did not acknowledge the subscription")


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def run(settings: FakeModelSettings) -> int:
    """Behave as the settings say; return the exit code."""
    started = time.monotonic()
    for line in describe_settings(settings):
        _say(line)
    if settings.start_seconds:
        _say(f"starting for {settings.start_seconds}s")
        time.sleep(settings.start_seconds)
    done = threading.Event()
    try:
        client = _connect(settings, started, done)
    except (OSError, ConnectionError) as error:
        _say(f"MQTT connection failed: {error}")
        return 1
    _say("connected to MQTT")
    try:
        if settings.exit_code == 1:
            _say("EXIT_CODE=1: exiting with 1 before ReadyForProcessing")
            return 1
        # As a DOTS model: it listens to the SO only from just before it announces itself.
        _subscribe(client, simulation_done_topic(settings.so, settings.simulation_id, settings.model_id))
        info = client.publish(
            ready_topic(settings.simulation_id, settings.model_id),
            ReadyForProcessing().SerializeToString(),
            qos=0,
        )
        info.wait_for_publish(PUBLISH_TIMEOUT_SECONDS)
        _say("ReadyForProcessing sent")
        if settings.exit_code == 2:
            _say("EXIT_CODE=2: exiting with 2 right after ReadyForProcessing")
            return 2
        _say(f"running for {settings.run_seconds}s")
        if done.wait(settings.run_seconds):
            _say("SimulationDone heard")
            if settings.hang:
                _say("FAKE_MODEL_HANG=1: never finishing")
                threading.Event().wait()
            time.sleep(settings.finish_seconds)
        _say(f"done, exiting with {settings.exit_code}")
        return settings.exit_code
    finally:
        _close(client)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = run(FakeModelSettings.from_env(os.environ))
    except _TerminatedError:
        _say(f"SIGTERM: exiting with {SIGTERM_EXIT_CODE}")
        code = SIGTERM_EXIT_CODE
    sys.exit(code)
