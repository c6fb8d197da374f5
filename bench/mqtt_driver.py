"""The driver's MQTT side: an SO that deploys and stamps what it hears, and models that say they are ready.

The SO is the kit's recording SO. It subscribes exactly as the DOTS SO does (``/lifecycle/mso/<so>/#`` and
``/lifecycle/model/<so>/#``, QoS 1), plus its health pong
topic, which the driver uses to know the daemon is subscribed and its pod
watch in sync before deploying. The models share one connection: the
daemon sees only topics, and ten thousand client connections would measure
the broker and the driver rather than the daemon. They publish an empty
ReadyForProcessing at QoS 0, as DOTS models do.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from model_services_orchestrator.messages import HEALTHY, ModelHasTerminated, PingHealthSOToMSO, PongHealthMSOToSO
from simulation_components.kit import SimulatorRecorder, no_delay
from simulation_components.local_mosquitto import LocalMosquitto

__all__ = ["Heard", "ModelsPublisher", "SimulatorDriver"]

_CONNECT_SECONDS = 10.0


def _connect(client: paho.Client, broker: LocalMosquitto) -> None:
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        if reason.is_failure:
            failure.append(str(reason))
        no_delay(client)
        connected.set()

    client.on_connect = on_connect
    client.username_pw_set(broker.username, broker.password)
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    if not connected.wait(_CONNECT_SECONDS) or failure:
        client.loop_stop()
        raise RuntimeError(f"could not connect to the broker: {failure or 'timeout'}")


@dataclass
class Heard:
    """What the SO received, stamped with ``time.monotonic()`` on arrival."""

    models_ready: dict[str, list[float]] = field(default_factory=dict)  # simulation -> arrivals
    all_terminated: dict[str, list[float]] = field(default_factory=dict)
    terminated: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (simulation, model) -> arrivals
    exit_codes: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # -> (status, exitCode)
    other: Counter[str] = field(default_factory=Counter)  # ErrorOccurred, UnhealthyModel, ...
    last_arrival: float = 0.0  # of any lifecycle message


class SimulatorDriver(SimulatorRecorder):
    """The kit's recording SO, which also stamps what it hears by arrival and pings the daemon's health."""

    def __init__(self, broker: LocalMosquitto, so: str = "dots-so", subscribe_qos: int = 1) -> None:
        self.heard = Heard()
        self.instance = f"bench-{uuid.uuid4().hex[:8]}"
        self._healthy = threading.Event()
        self._pong_reasons: list[str] = []
        super().__init__(broker, so, subscribe_qos=subscribe_qos)

    def subscriptions(self) -> list[tuple[str, int]]:
        return [*super().subscriptions(), (f"/healthcheck/mso/{self.so}/{self.instance}/PongHealthMSOToSO", 0)]

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        super()._on_message(client, userdata, message)
        parts = message.topic.split("/")
        kind = parts[-1]
        heard = self.heard
        if parts[1] == "lifecycle":
            heard.last_arrival = now
        if kind == "ModelHasTerminated" and len(parts) == 7:
            key = (parts[4], parts[5])
            heard.terminated.setdefault(key, []).append(now)
            decoded = ModelHasTerminated()
            decoded.ParseFromString(bytes(message.payload))
            heard.exit_codes[key] = (decoded.status, decoded.exitCode)
        elif kind == "ModelsReady" and len(parts) == 6:
            heard.models_ready.setdefault(parts[4], []).append(now)
        elif kind == "AllModelsHaveTerminated" and len(parts) == 6:
            heard.all_terminated.setdefault(parts[4], []).append(now)
        elif kind == "PongHealthMSOToSO":
            pong = PongHealthMSOToSO()
            pong.ParseFromString(bytes(message.payload))
            self._pong_reasons = list(pong.reasons)
            if pong.healthy == HEALTHY:
                self._healthy.set()
        else:
            heard.other[kind] += 1

    def wait_daemon_healthy(self, timeout: float) -> None:
        """Ping until the daemon answers HEALTHY: subscribed, the API reachable, its pod watch in sync."""
        deadline = time.monotonic() + timeout
        ping = PingHealthSOToMSO(healthy=HEALTHY).SerializeToString()
        topic = f"/healthcheck/{self.so}/mso/{self.instance}/PingHealthSOToMSO"
        while not self._healthy.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not answer HEALTHY in {timeout}s (last reasons: "
                                   f"{self._pong_reasons})")
            self.client.publish(topic, ping, qos=0)
            self._healthy.wait(0.25)


class ModelsPublisher:
    """The models' side of the lifecycle, on one connection: ReadyForProcessing at QoS 0."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-models-{uuid.uuid4().hex[:8]}")
        self.client.max_queued_messages_set(0)
        _connect(self.client, broker)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def ready(self, simulation_id: str, model_ids: Sequence[str], *, rate: float = 0.0,
              timeout: float = 60.0) -> float:
        """Publish every model's ReadyForProcessing; the time the last one was written to the socket.

        ``rate`` > 0 spreads them evenly at that many a second (real models become ready over the
        seconds their pods take to start); 0 sends them as fast as the driver can.
        """
        info: paho.MQTTMessageInfo | None = None
        started = time.monotonic()
        for index, model_id in enumerate(model_ids):
            if rate > 0 and (ahead := started + index / rate - time.monotonic()) > 0.001:
                time.sleep(ahead)
            info = self.client.publish(f"/lifecycle/model/mso/{simulation_id}/{model_id}/ReadyForProcessing",
                                       b"", qos=0)
        if info is not None:
            info.wait_for_publish(timeout)
        return time.monotonic()
