"""What the end-to-end tests drive: the daemon as a process, and an SO that records what it hears.

The daemon runs exactly as in production (``python -m
model_services_orchestrator``, configured by env vars), against a real
Mosquitto and the local Kubernetes API server; tests look at it only
through the wire (MQTT), the API server and its log.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from model_services_orchestrator.messages import (
    DeployModels,
    EnvironmentVariable,
    ModelConfiguration,
    ModelHasTerminated,
)
from simulation_components.local_daemon import LocalDaemon
from simulation_components.local_mosquitto import LocalMosquitto

_T = TypeVar("_T")


def wait_for(condition: Callable[[], _T], *, timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> _T:
    """Poll until ``condition()`` is truthy and return it; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes

    @property
    def kind(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    @property
    def model_id(self) -> str:
        return self.topic.split("/")[-2]

    def termination(self) -> tuple[str, int]:
        message = ModelHasTerminated()
        message.ParseFromString(self.payload)
        return ("FAILED" if message.status == 1 else "SUCCESSFULL", message.exitCode)


class BrokerAddress(Protocol):
    """Where a broker is and how to log in: a LocalMosquitto, or a cluster's broker."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


class SimulatorRecorder:
    """Plays the SO on MQTT: sends DeployModels, records every lifecycle message addressed to it."""

    def __init__(self, broker: BrokerAddress, so: str = "dots-so") -> None:
        self.so = so
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # A persistent session, like the daemon's: what is published while the broker restarts is not lost.
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-so-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.username_pw_set(broker.username, broker.password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the test SO could not subscribe")

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        # QoS 2, so that a broker restart cannot deliver a message twice to the test either.
        client.subscribe([(f"/lifecycle/mso/{self.so}/#", 2), (f"/lifecycle/model/{self.so}/#", 2)])

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def publish(self, topic: str, payload: bytes = b"", qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def deploy(self, simulation_id: str, models: list[tuple[str, str, list[tuple[str, str]]]], *,
               simulator_id: str = "so01", keep_logs_hours: float = 0.0) -> None:
        message = DeployModels(simulatorId=simulator_id, keepLogsHours=keep_logs_hours, modelConfigurations=[
            ModelConfiguration(modelID=model_id, imageUrl=image, environmentVariables=[
                EnvironmentVariable(name=name, value=value) for name, value in env])
            for model_id, image, env in models])
        self.publish(f"/lifecycle/{self.so}/mso/{simulation_id}/DeployModels", message.SerializeToString())

    def of(self, simulation_id: str, kind: str | None = None) -> list[Received]:
        with self._lock:
            found = [m for m in self.messages if m.topic.split("/")[4] == simulation_id]
        return [m for m in found if kind is None or m.kind == kind]

    def terminations(self, simulation_id: str) -> dict[str, tuple[str, int]]:
        return {m.model_id: m.termination() for m in self.of(simulation_id, "ModelHasTerminated")}

    def wait_all_terminated(self, simulation_id: str, timeout: float = 60.0) -> None:
        wait_for(lambda: self.of(simulation_id, "AllModelsHaveTerminated"), timeout=timeout,
                 what=f"AllModelsHaveTerminated of {simulation_id}")


def fake_model_env(broker: LocalMosquitto, simulation_id: str, model_id: str, *, exit_code: int | None = None,
                   run_seconds: float = 1.0) -> list[tuple[str, str]]:
    env = [("MQTT_HOST", broker.host), ("MQTT_PORT", str(broker.port)), ("SIMULATOR_ID", "so01"),
           ("SIMULATION_ID", simulation_id), ("MODEL_ID", model_id), ("MQTT_USERNAME", broker.username),
           ("MQTT_PASSWORD", broker.password), ("FAKE_MODEL_RUN_SECONDS", str(run_seconds))]
    if exit_code is not None:
        env.append(("EXIT_CODE", str(exit_code)))
    return env


class Daemon(LocalDaemon):
    """The orchestrator as its own process, and what its JSON log says."""

    def log_events(self) -> Iterator[dict[str, Any]]:
        for line in self.log_text().splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e.get("event") == event]

    def wait_logged(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(lambda: self.logged(event), timeout=timeout, what=f"log event {event!r}")[0]

    def stop(self, timeout: float = 15.0) -> int:
        code = super().stop(timeout)
        assert code is not None and code >= 0, f"daemon did not stop within {timeout}s"
        return code
