"""The test kit: what the tests, the benchmarks and the demo share to drive and observe a daemon.

One place for the SO that records what it hears, waiting with a deadline,
the fake model's environment and the test images, the daemon as a process
and its JSON log, pods moved by hand as a kubelet would, and the records
read back exactly as a restarted daemon reads them (through the project's
own store and decoder, never by hand). No test module imports helpers from
another; they all import from here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import kubernetes.client
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from model_services_orchestrator.messages import (
    DeployModels,
    EnvironmentVariable,
    ModelConfiguration,
    ModelHasTerminated,
)
from model_services_orchestrator.model_inventory import Delivery, Simulation
from model_services_orchestrator.record_store import RecordStore
from model_services_orchestrator.simulation_records import part_index, record_name
from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.api import ApiError
from simulation_components.control_plane.manifests import apply_manifests, load_manifests
from simulation_components.local_daemon import LocalDaemon
from simulation_components.local_mosquitto import LocalMosquitto
from simulation_components.waiting import wait_for

__all__ = [
    "CLUSTER_OBJECTS",
    "MODEL_SERVICES",
    "NAMESPACE",
    "PRINTENV_IMAGE",
    "TEST_IMAGES",
    "BrokerAddress",
    "Daemon",
    "DaemonFactory",
    "Received",
    "SimulatorRecorder",
    "core_api",
    "deploy_models",
    "fake_model_env",
    "install_model_service_crd",
    "left_in_namespace",
    "no_delay",
    "read_records",
    "ready",
    "ready_in_record",
    "record_part_count",
    "remove_model_service_crd",
    "retained_messages",
    "running_pods",
    "set_terminated",
    "settled_in_record",
    "wait_for",
]

NAMESPACE = "dots"

# A model that prints its whole environment and fails: what a careless model image does.
PRINTENV_IMAGE = "printenv-and-fail:1"
TEST_IMAGES: dict[str, list[str] | str | None] = {
    PRINTENV_IMAGE: ["{python}", "-c", "import os; print(dict(os.environ)); raise SystemExit(1)"],
}

_T = TypeVar("_T")


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


def deploy_models(models: Sequence[tuple[str, str, Sequence[tuple[str, str]]]], *, simulator_id: str = "so01",
                  keep_logs_hours: float = 0.0) -> DeployModels:
    """The DeployModels of ``(model id, image, env)`` triples."""
    return DeployModels(simulatorId=simulator_id, keepLogsHours=keep_logs_hours, modelConfigurations=[
        ModelConfiguration(modelID=model_id, imageUrl=image, environmentVariables=[
            EnvironmentVariable(name=name, value=value) for name, value in env])
        for model_id, image, env in models])


def no_delay(client: paho.Client) -> None:
    """Nagle's algorithm off on a connected client (paho leaves it on): a second small publish would wait
    for the broker's delayed ACK (40 ms), which real clients, one message at a time, never see."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SimulatorRecorder:
    """Plays the SO on MQTT: sends DeployModels, records every lifecycle message addressed to it.

    ``subscribe_qos``: 2 for the tests (a broker restart cannot deliver a message twice to them either);
    the benchmark subscribes at 1, as today's SO does.
    """

    def __init__(self, broker: BrokerAddress, so: str = "dots-so", *, subscribe_qos: int = 2) -> None:
        self.so = so
        self.subscribe_qos = subscribe_qos
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

    def subscriptions(self) -> list[tuple[str, int]]:
        """Where the SO listens (section 2 of docs/protocol.md)."""
        return [(f"/lifecycle/mso/{self.so}/#", self.subscribe_qos),
                (f"/lifecycle/model/{self.so}/#", self.subscribe_qos)]

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        no_delay(client)
        client.subscribe(self.subscriptions())

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def publish(self, topic: str, payload: bytes = b"", qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def deploy(self, simulation_id: str, models: Sequence[tuple[str, str, Sequence[tuple[str, str]]]], *,
               simulator_id: str = "so01", keep_logs_hours: float = 0.0) -> None:
        message = deploy_models(models, simulator_id=simulator_id, keep_logs_hours=keep_logs_hours)
        self.deploy_encoded(simulation_id, message.SerializeToString())

    def deploy_encoded(self, simulation_id: str, payload: bytes) -> None:
        """Publish a DeployModels already serialised (QoS 1) and wait until the broker has it."""
        self.publish(f"/lifecycle/{self.so}/mso/{simulation_id}/DeployModels", payload)

    def of(self, simulation_id: str, kind: str | None = None) -> list[Received]:
        with self._lock:
            found = [m for m in self.messages if m.topic.split("/")[4] == simulation_id]
        return [m for m in found if kind is None or m.kind == kind]

    def terminations(self, simulation_id: str) -> dict[str, tuple[str, int]]:
        return {m.model_id: m.termination() for m in self.of(simulation_id, "ModelHasTerminated")}

    def wait_all_terminated(self, simulation_id: str, timeout: float = 60.0) -> None:
        """Until AllModelsHaveTerminated; ``timeout`` counts from the simulation's last message heard."""
        wait_for(lambda: self.of(simulation_id, "AllModelsHaveTerminated"), timeout=timeout,
                 what=f"AllModelsHaveTerminated of {simulation_id}", progress=lambda: len(self.of(simulation_id)))


def retained_messages(broker: BrokerAddress, topic: str, timeout: float = 10.0) -> list[bytes]:
    """What the broker holds retained on ``topic``, as a subscriber arriving now gets it: [] when nothing.

    No waiting on the clock to conclude "nothing": the fresh subscriber also subscribes to a topic of its own
    and, once subscribed, sends itself a message there; the broker hands out retained messages when it
    acknowledges a subscription, so whatever was retained arrives before that message comes back.
    """
    probe = f"/test/retained-probe/{uuid.uuid4().hex}"
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-retained-{uuid.uuid4().hex[:8]}",
                         clean_session=True)
    client.username_pw_set(broker.username, broker.password)

    def on_message(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == probe:
            done.set()
        elif message.retain:
            got.append(bytes(message.payload))

    client.on_message = on_message
    client.on_connect = lambda c, *_args: c.subscribe([(topic, 1), (probe, 1)])
    client.on_subscribe = lambda c, *_args: c.publish(probe, b"", qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise AssertionError(f"the retained-message probe of {topic} did not come back")
    finally:
        client.loop_stop()
        client.disconnect()
    return got


def fake_model_env(broker: LocalMosquitto, simulation_id: str, model_id: str, *, exit_code: int | None = None,
                   run_seconds: float = 1.0, start_seconds: float = 0.0, finish_seconds: float = 0.0,
                   hang: bool = False) -> list[tuple[str, str]]:
    """The env of a fake model (``simulation_components.fake_model``): it listens to its SimulationDone from
    just before it announces itself, as DOTS models do."""
    env = [("MQTT_HOST", broker.host), ("MQTT_PORT", str(broker.port)), ("SIMULATOR_ID", "so01"),
           ("SIMULATION_ID", simulation_id), ("MODEL_ID", model_id), ("MQTT_USERNAME", broker.username),
           ("MQTT_PASSWORD", broker.password), ("FAKE_MODEL_RUN_SECONDS", str(run_seconds))]
    if start_seconds:
        env.append(("FAKE_MODEL_START_SECONDS", str(start_seconds)))
    if finish_seconds:
        env.append(("FAKE_MODEL_FINISH_SECONDS", str(finish_seconds)))
    if hang:
        env.append(("FAKE_MODEL_HANG", "1"))
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


# ---------------------------------------------------------------- the cluster, as a kubelet or a reader sees it


def core_api(kube: ControlPlane) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube.kube_client_configuration()))


#: What a real cluster itself keeps in every namespace (kube-controller-manager's root CA publisher).
CLUSTER_OBJECTS = frozenset({"configmaps/kube-root-ca.crt"})


def left_in_namespace(api: kubernetes.client.CoreV1Api) -> list[str]:
    """``kind/name`` of every pod, ConfigMap and Secret in the namespace, less ``CLUSTER_OBJECTS``."""
    found = [f"pods/{item.metadata.name}" for item in api.list_namespaced_pod(NAMESPACE).items if item.metadata]
    found += [f"configmaps/{item.metadata.name}" for item in api.list_namespaced_config_map(NAMESPACE).items
              if item.metadata]
    found += [f"secrets/{item.metadata.name}" for item in api.list_namespaced_secret(NAMESPACE).items if item.metadata]
    return [name for name in found if name not in CLUSTER_OBJECTS]


def set_terminated(api: kubernetes.client.CoreV1Api, name: str, exit_code: int) -> None:
    """What a kubelet reports when the container of pod ``name`` ends."""
    body: dict[str, Any] = {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{"name": name, "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"terminated": {"exitCode": exit_code,
                                                        "reason": "Completed" if exit_code == 0 else "Error"}}}]}}
    api.patch_namespaced_pod_status(name, NAMESPACE, body)


def running_pods(api: kubernetes.client.CoreV1Api, count: int, timeout: float = 20.0) -> list[str]:
    """The names of exactly ``count`` running pods, once there are; ``timeout`` counts from the last pod that
    started running, so a thousand pods on a busy machine get the time they need."""
    found: list[str] = []

    def names() -> list[str]:
        nonlocal found
        pods = [pod.to_dict() for pod in api.list_namespaced_pod(NAMESPACE).items]
        found = sorted(p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Running")
        return found if len(found) == count else []
    return wait_for(names, timeout=timeout, what=f"{count} running pods", progress=lambda: len(found))


def ready(so: SimulatorRecorder, simulation_id: str, *models: str) -> None:
    """The models' ReadyForProcessing, at QoS 0 as DOTS models send it."""
    for model in models:
        so.publish(f"/lifecycle/model/mso/{simulation_id}/{model}/ReadyForProcessing", b"", qos=0)


class _RecordObjects:
    """The record's objects as the store reads them (the API's own JSON), read-only."""

    def __init__(self, api: kubernetes.client.CoreV1Api, namespace: str) -> None:
        self._api = api
        self._namespace = namespace

    async def list_objects(self, kind: str, label_selector: str, *,
                           metadata_only: bool = False) -> list[dict[str, Any]]:
        del metadata_only  # the whole objects are a superset: loading needs them anyway
        listing = (self._api.list_namespaced_config_map if kind == "configmaps"
                   else self._api.list_namespaced_secret)
        response: Any = listing(self._namespace, label_selector=label_selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    async def put_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the test kit only reads records")

    async def replace_object(self, kind: str, body: dict[str, Any]) -> bool:
        raise AssertionError("the test kit only reads records")

    async def delete_object(self, kind: str, name: str) -> None:
        raise AssertionError("the test kit only reads records")


def read_records(api: kubernetes.client.CoreV1Api, *, so: str = "dots-so",
                 namespace: str = NAMESPACE) -> dict[str, Simulation]:
    """Every readable record, by simulation id, read as a restarted daemon reads them."""
    store = RecordStore(api=_RecordObjects(api, namespace), so=so, is_secret=lambda _name: False)
    return {restored.simulation.simulation_id: restored.simulation
            for restored in asyncio.run(store.load(roll_back=False))}


def ready_in_record(api: kubernetes.client.CoreV1Api, simulation_id: str) -> set[str]:
    simulation = read_records(api).get(simulation_id)
    return set() if simulation is None else {model_id for model_id, m in simulation.models.items() if m.ready}


def settled_in_record(api: kubernetes.client.CoreV1Api, simulation_id: str) -> bool:
    """Whether the simulation's record says that every lifecycle message decided so far was delivered (or
    there is no record, so nothing to send again).

    A daemon SIGKILLed between the SO hearing a message and the record marking it delivered sends it again
    once restarted (docs/guarantees.md, "The limits": milliseconds, but a test that kills the daemon as soon
    as the SO hears something lands right in that window): a test that counts messages across a kill waits
    for this first.
    """
    simulation = read_records(api).get(simulation_id)
    if simulation is None:
        return True
    return (simulation.models_ready is not Delivery.DECIDED and simulation.all_terminated is not Delivery.DECIDED
            and all(model.reported for model in simulation.models.values() if model.termination is not None))


def record_part_count(api: kubernetes.client.CoreV1Api, simulation_id: str, kind: str = "configmaps",
                      *, so: str = "dots-so") -> int:
    """How many part ConfigMaps (or spec Secrets) the simulation's record has."""
    name = record_name(so, simulation_id)
    listing = api.list_namespaced_config_map if kind == "configmaps" else api.list_namespaced_secret
    return sum(1 for item in listing(NAMESPACE).items
               if item.metadata and item.metadata.name and part_index(name, item.metadata.name) is not None)


DaemonFactory = Callable[..., Daemon]


# ---------------------------------------------------------------- the model registry

#: The collection of the namespace's ModelServices (the CRD of k8s_cluster_configuration/modelservice-crd.yaml).
MODEL_SERVICES = f"/apis/dots.mso.io/v1alpha1/namespaces/{NAMESPACE}/modelservices"
_MODEL_SERVICE_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modelservices.dots.mso.io"


def _served(kube: ControlPlane) -> bool:
    try:
        kube.request("GET", MODEL_SERVICES)
    except ApiError as error:
        if error.status in (404, 429, 503):  # not served, or its storage still starting
            return False
        raise
    return True


def install_model_service_crd(kube: ControlPlane) -> None:
    """The ModelService CRD, as the project's manifest has it, applied and served (a no-op when it is);
    every ModelService of the namespace deleted."""
    if not _served(kube):
        apply_manifests(load_manifests(("modelservice-crd.yaml",)), kube.request)
        wait_for(lambda: _served(kube), timeout=30, what="the ModelService CRD served")
    kube.request("DELETE", MODEL_SERVICES)
    wait_for(lambda: not kube.request("GET", MODEL_SERVICES)["items"], timeout=30, what="no ModelService left")


def remove_model_service_crd(kube: ControlPlane) -> None:
    """The ModelService CRD deleted, and no longer served (a no-op when it is not)."""
    try:
        kube.request("DELETE", _MODEL_SERVICE_CRD)
    except ApiError as error:
        if error.status != 404:
            raise
    wait_for(lambda: not _served(kube), timeout=30, what="the ModelService CRD gone")
