"""In-process fakes of the runtime's adapters, so its ordering and retry rules are tested in milliseconds.

Like kopf's ``KopfRunner`` or structlog's ``testing``: the runtime runs in
the test's own event loop against a ``FakeCluster`` (pods and the record's
ConfigMaps and Secrets in memory, with a watch that reports what changes,
the API's 1 MiB object limit, and faults to inject) and a ``FakeBroker``
(which confirms messages at once, or holds them until told). A daemon
"killed" is a runtime task cancelled without its shutdown; a new runtime
over the same cluster is its restart. The end-to-end tests run the real
thing against a real API server and a real Mosquitto; these do not replace
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from model_services_orchestrator.admission import read_quota
from model_services_orchestrator.k8s_api import CreateOutcome
from model_services_orchestrator.kube_errors import TRANSIENT, Invalid, KubeError, NotFound
from model_services_orchestrator.logs import SecretRedactor
from model_services_orchestrator.messages.lifecycle_pb2 import ModelHasTerminated
from model_services_orchestrator.pod_observation import observe_pod
from model_services_orchestrator.pod_specs import PodSettings, owned_pods_selector, owns, secret_env_names
from model_services_orchestrator.record_store import RecordStore
from model_services_orchestrator.runtime import PodChange, QuotaApi, Runtime, RuntimeSettings

__all__ = ["FakeBroker", "FakeCluster", "running", "wait_until"]

_T = TypeVar("_T")
_MAX_OBJECT_BYTES = 1024 * 1024


@dataclass
class _Fault:
    call: str
    error: KubeError
    times: int | None


@dataclass
class FakeCluster:
    """Pods, ConfigMaps and Secrets of one namespace, in memory; implements ``PodApi`` and ``ObjectApi``."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    watcher: Runtime | None = None
    _faults: list[_Fault] = field(default_factory=list)

    # -- faults

    def fail(self, call: str, error: KubeError, times: int | None = 1) -> None:
        """Make the next ``times`` calls named ``call`` (``create_pod``, ``replace_object:secrets``...) fail;
        ``None``: until ``heal``."""
        self._faults.append(_Fault(call, error, times))

    def heal(self) -> None:
        self._faults.clear()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        for fault in self._faults:
            if name == fault.call or name.split(":", maxsplit=1)[0] == fault.call:
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                raise fault.error

    # -- the watch

    def _watched(self, pod: Mapping[str, Any]) -> bool:
        """Whether the watcher's watch (by its SO's label selector) shows the pod."""
        return self.watcher is not None and _matches(pod, owned_pods_selector(self.watcher.settings.so))

    def _report(self, name: str, gone: bool = False) -> None:
        pod = self.pods.get(name) or {}
        if self.watcher is not None and self._watched(pod) and (seen := observe_pod(pod)) is not None:
            self.watcher.pods_changed([PodChange(seen, gone=gone)])

    def relist(self) -> None:
        """A full list of the pods, as the watch gives one after a (re)start or 410."""
        if self.watcher is not None:
            self.watcher.listing_started()
            self.watcher.pods_listed(observe_pod(pod) for pod in self.pods.values() if self._watched(pod))

    def set_container(self, name: str, state: str, *, exit_code: int | None = None, reason: str = "",
                      message: str = "") -> None:
        """What the kubelet reports: ``waiting``, ``running`` or ``terminated``."""
        pod = self.pods[name]
        detail: dict[str, Any] = {}
        if state == "waiting":
            detail = {"reason": reason or "ContainerCreating", "message": message}
        elif state == "running":
            detail = {"startedAt": "2026-01-01T00:00:00Z"}  # as a kubelet says it (an empty one reads as not running)
        elif state == "terminated":
            detail = {"exitCode": exit_code or 0, "reason": reason or ("Completed" if not exit_code else "Error")}
        phase = {"waiting": "Pending", "running": "Running"}.get(state, "Failed" if exit_code else "Succeeded")
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": "model", "state": {state: detail}}]}
        self._report(name)

    def remove_pod(self, name: str) -> None:
        """Someone else deletes the pod."""
        self._report(name, gone=True)
        del self.pods[name]

    # -- PodApi

    async def create_pod(self, body: dict[str, Any], marks: Mapping[str, Mapping[str, str]]) -> CreateOutcome:
        await asyncio.sleep(0)
        try:
            self._call("create_pod")
        except TRANSIENT:
            raise
        except KubeError as error:  # as the gateway answers: a refusal is an outcome, not an error
            return CreateOutcome(created=False, status=error.status, reason=error.message or error.reason)
        name = body["metadata"]["name"]
        if (existing := self.pods.get(name)) is not None:
            if owns(existing, marks):
                return CreateOutcome(created=True, status=409)
            return CreateOutcome(created=False, status=409, reason="a pod of that name is not this model's",
                           name_taken=True)
        pod = copy.deepcopy(body)
        pod["metadata"]["uid"] = str(uuid.uuid4())
        pod["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pod["status"] = {"phase": "Pending"}
        self.pods[name] = pod
        self._report(name)
        return CreateOutcome(created=True, status=201)

    async def stop_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool:
        await asyncio.sleep(0)
        self._call("stop_pod")
        pod = self.pods.get(name)
        if pod is None or not owns(pod, marks):
            return False
        pod["spec"]["activeDeadlineSeconds"] = 1
        return True

    async def delete_own_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool:
        await asyncio.sleep(0)
        self._call("delete_own_pod")
        pod = self.pods.get(name)
        if pod is None or not owns(pod, marks):
            return False
        self._report(name, gone=True)
        self.pods.pop(name, None)
        return True

    async def delete_pods(self, label_selector: str) -> None:
        await asyncio.sleep(0)
        self._call("delete_pods")
        for name in [name for name, pod in self.pods.items() if _matches(pod, label_selector)]:
            self._report(name, gone=True)
            self.pods.pop(name, None)

    async def delete_kueue_workload(self, name: str, pod_names: Collection[str]) -> bool:
        await asyncio.sleep(0)
        self._call("delete_kueue_workload")
        return False  # no Kueue here: no Workload

    async def list_pods(self, label_selector: str, keep: Callable[[dict[str, Any]], _T | None]) -> list[_T]:
        await asyncio.sleep(0)
        self._call("list_pods")
        return [kept for pod in self.pods.values() if _matches(pod, label_selector)
                if (kept := keep({"metadata": copy.deepcopy(pod["metadata"])})) is not None]

    async def read_log_tail(self, name: str, lines: int) -> str:
        await asyncio.sleep(0)
        self._call("read_log_tail")
        if name not in self.pods:
            raise NotFound(f"pods {name!r} not found")
        return "\n".join(self.logs.get(name, "").splitlines()[-lines:])

    # -- ObjectApi

    async def list_objects(self, kind: str, label_selector: str, *,
                           metadata_only: bool = False) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        self._call(f"list_objects:{kind}")
        return [{"metadata": copy.deepcopy(body["metadata"])} if metadata_only else copy.deepcopy(body)
                for (k, _), body in self.objects.items() if k == kind and _matches(body, label_selector)]

    async def put_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._call(f"put_object:{kind}")
        self._check_size(body)
        name = body["metadata"]["name"]
        stored = copy.deepcopy(body)
        previous = self.objects.get((kind, name))
        stored["metadata"]["uid"] = previous["metadata"]["uid"] if previous else str(uuid.uuid4())
        self.objects[(kind, name)] = stored
        return copy.deepcopy(stored)

    async def replace_object(self, kind: str, body: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        self._call(f"replace_object:{kind}")
        name = body["metadata"]["name"]
        if (previous := self.objects.get((kind, name))) is None:
            return False
        self._check_size(body)
        stored = copy.deepcopy(body)
        stored["metadata"]["uid"] = previous["metadata"]["uid"]
        self.objects[(kind, name)] = stored
        return True

    async def delete_object(self, kind: str, name: str) -> None:
        await asyncio.sleep(0)
        self._call(f"delete_object:{kind}")
        removed = self.objects.pop((kind, name), None)
        if removed is not None:
            # The garbage collector: what the deleted object owned goes with it.
            uid = removed["metadata"]["uid"]
            for key, body in list(self.objects.items()):
                if any(owner.get("uid") == uid for owner in body["metadata"].get("ownerReferences") or []):
                    del self.objects[key]

    @staticmethod
    def _check_size(body: dict[str, Any]) -> None:
        if len(json.dumps(body)) > _MAX_OBJECT_BYTES:
            name = body["metadata"]["name"]
            raise Invalid(f"{name}: Too long: must have at most {_MAX_OBJECT_BYTES} bytes", status=422)


def _matches(body: Mapping[str, Any], label_selector: str) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, _, value in (term.partition("=") for term in
                                                            label_selector.split(",") if term))


@dataclass
class FakeBroker:
    """Both MQTT sessions (``Publisher`` and ``Outbox``): records what is published; receives (PUBREC) a
    lifecycle message at once unless ``hold`` is set, and completes it (PUBCOMP) once it is released."""

    connected: bool = True
    hold: bool = False
    published: list[tuple[str, bytes]] = field(default_factory=list)
    held: list[Callable[[], None]] = field(default_factory=list)
    packet_ids: list[int] = field(default_factory=list)  # of the lifecycle messages, as sent
    _completions: dict[int, Callable[[], None]] = field(default_factory=dict)

    def send(self, packet_id: int, topic: str, payload: bytes, *, received: bool = False,
             on_received: Callable[[], None], on_delivered: Callable[[], None]) -> None:
        assert packet_id not in self._completions, f"packet id {packet_id} in use twice"
        self._completions[packet_id] = on_delivered
        if received:
            return  # only its PUBREL is left: nothing goes to the SO
        self.packet_ids.append(packet_id)
        self.publish(topic, payload, on_received)

    def release(self, packet_id: int) -> None:
        if (on_delivered := self._completions.pop(packet_id, None)) is not None:
            asyncio.get_running_loop().call_soon(on_delivered)

    def publish(self, topic: str, payload: bytes, on_delivered: Callable[[], None] | None = None) -> None:
        self.published.append((topic, payload))
        if on_delivered is not None:
            if self.hold:
                self.held.append(on_delivered)
            else:
                asyncio.get_running_loop().call_soon(on_delivered)

    def publish_volatile(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def confirm(self) -> None:
        """The broker confirms everything held."""
        held, self.held = self.held, []
        for on_delivered in held:
            on_delivered()

    def kinds(self, simulation_id: str) -> list[str]:
        """The last topic level of what went out about a simulation, in order."""
        return [topic.rsplit("/", 1)[-1] for topic, _ in self.published if topic.split("/")[4] == simulation_id]

    def terminations(self, simulation_id: str) -> list[tuple[str, int]]:
        found = []
        for topic, payload in self.published:
            parts = topic.split("/")
            if parts[-1] == "ModelHasTerminated" and parts[4] == simulation_id:
                message = ModelHasTerminated()
                message.ParseFromString(payload)
                found.append((parts[5], message.exitCode))
        return found


def runtime_settings(**overrides: Any) -> RuntimeSettings:
    """Settings for a runtime under test: quick retries, no grace, the daemon's defaults otherwise."""
    values: dict[str, Any] = {
        "so": "dots-so", "pod_settings": PodSettings(so="dots-so"),
        "secret_env_name_pattern": "(?i)(pass|secret|token|key|credential)", "min_cleanup_delay_seconds": 0.0,
        "retry_base_seconds": 0.01, "retry_max_seconds": 0.2, "failed_log_tail_lines": 5,
    }
    values.update(overrides)
    return RuntimeSettings(**values)


@contextlib.asynccontextmanager
async def running(cluster: FakeCluster, broker: FakeBroker, *, quotas: QuotaApi | None = None,
                  **settings: Any) -> AsyncIterator[Runtime]:
    """A runtime restored from ``cluster`` and running; leaving the block kills it (no shutdown).
    ``quotas``: admission by the namespace's quota, on those quotas (listed before it runs)."""
    options = runtime_settings(**settings)
    records = RecordStore(api=cluster, so=options.so, is_secret=secret_env_names(options.secret_env_name_pattern))
    runtime = Runtime(settings=options, pods=cluster, records=records, publisher=broker, outbox=broker,
                      redactor=SecretRedactor(), quotas=quotas)
    cluster.watcher = runtime
    await runtime.restore()
    cluster.relist()
    if quotas is not None:
        runtime.quotas_listed([read_quota(quota) for quota in await quotas.list_quotas()])
    task = asyncio.create_task(runtime.run(), name="runtime under test")
    try:
        yield runtime
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        runtime.queue.close()
        cluster.watcher = None


async def wait_until(condition: Callable[[], _T], *, timeout: float = 5.0, what: str = "condition") -> _T:
    """Let the loop run until ``condition()`` is truthy; fail with ``what`` at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return value
