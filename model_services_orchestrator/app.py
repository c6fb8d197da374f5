"""The daemon: wires MQTT, the pod watch and the inventory together, and carries out the effects.

Everything that happens (a message, a pod change, a finished API call, a
deadline) becomes an input on one queue. One loop takes the inputs in
batches, lets the pure inventory decide, and executes the effects in an
order that keeps the promises across a crash: first the simulation records
are saved, then lifecycle messages go to the outbox, then pods are created
or deleted. Long-lived tasks live in one TaskGroup: if one of them dies, the
process dies with a non-zero code and Kubernetes restarts it, rather than
leaving a half-working daemon.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import itertools
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.http_endpoints import LatencyHistogram, MetricsSnapshot, serve_http
from model_services_orchestrator.k8s_api import (
    KubernetesGateway,
    PodWatcher,
    WatchEvent,
    WatchListed,
    build_api_client,
)
from model_services_orchestrator.logs import SecretRedactor, get_logger
from model_services_orchestrator.messages import codec
from model_services_orchestrator.model_health import ModelHealth
from model_services_orchestrator.mqtt_application import LoginRefusedError, MqttApplication, MqttSettings
from model_services_orchestrator.pod_observation import ContainerState, PodObservation, observe_pod
from model_services_orchestrator.pod_specs import (
    LABEL_SIMULATION_ID,
    PodSettings,
    build_pod,
    label_value,
    owned_pods_selector,
    ownership_marks,
    secret_key,
    simulation_pods_selector,
)
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.simulation_records import (
    RECORD_KEY,
    RecordEncoder,
    RecordError,
    decode_record,
    decode_specs,
    encode_specs,
    owner_uids,
    part_index,
    part_name,
    record_labels,
    record_name,
    records_selector,
    simulation_records_selector,
)
from model_services_orchestrator.topics import OutgoingTopics, subscriptions

__all__ = ["Orchestrator", "run"]

_log = get_logger(__name__)
_MAX_BATCH = 5000
_SHUTDOWN_SECONDS = 8.0
_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True, slots=True)
class _Inbound:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Created:
    simulation_id: str
    model_id: str
    outcome_created: bool
    reason: str
    name_taken: bool = False


@dataclass(frozen=True, slots=True)
class _Cleaned:
    simulation_id: str


_Input = _Inbound | WatchListed | list[WatchEvent] | _Created | _Cleaned


class Orchestrator:
    """The running daemon for one SO."""

    def __init__(self, *, settings: Settings, redactor: SecretRedactor) -> None:
        self.settings = settings
        self.redactor = redactor
        self.so = settings.so_name
        self.topics = OutgoingTopics(self.so)
        self.inventory = inv.Inventory(
            start_timeout_seconds=settings.model_start_timeout_seconds,
            min_cleanup_delay_seconds=settings.min_cleanup_delay_seconds,
            stop_grace_seconds=settings.model_stop_grace_seconds,
            max_keep_logs_hours=settings.max_keep_logs_hours,
        )
        self.pod_settings = PodSettings(
            so=self.so,
            pull_image_secret_name=settings.kubernetes_pull_image_secret_name,
            node_selector=settings.node_selector,
            tolerations=tuple(settings.tolerations),
            cpu_request=settings.model_cpu_request,
            memory_request=settings.model_memory_request,
            cpu_limit=settings.model_cpu_limit,
            memory_limit=settings.model_memory_limit,
            run_as_non_root=settings.model_run_as_non_root,
        )
        self.gateway = KubernetesGateway(
            api_client=build_api_client(settings),
            namespace=settings.kubernetes_namespace,
            concurrency=settings.pod_create_concurrency,
            request_timeout=settings.kubernetes_request_timeout_seconds,
            qps=settings.kubernetes_qps,
            burst=settings.kubernetes_burst,
        )
        self.mqtt = MqttApplication(
            settings=MqttSettings(
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                username=settings.mqtt_username,
                password=settings.mqtt_password.get_secret_value(),
                client_id=settings.effective_mqtt_client_id,
                keepalive=settings.mqtt_keepalive_seconds,
                subscriptions=tuple(subscriptions(self.so)),
                publish_qos=settings.mqtt_publish_qos,
                max_inflight=settings.mqtt_max_inflight_messages,
            ),
            on_message=self._received,
        )
        self.watcher = PodWatcher(
            gateway=self.gateway,
            label_selector=owned_pods_selector(self.so),
            deliver=self._from_thread,
            reduce=observe_pod,
            watch_timeout_seconds=settings.kubernetes_watch_timeout_seconds,
            silence_seconds=settings.kubernetes_watch_silence_seconds,
        )
        self._secret_name = re.compile(settings.secret_env_name_pattern)
        self._secret_names: dict[str, bool] = {}
        self._inputs: asyncio.Queue[_Input] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._reports: dict[str, set[asyncio.Task[None]]] = {}
        self._record_uids: dict[str, str] = {}
        self._records = RecordEncoder()
        self._record_locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._queued: dict[str, list[inv.Effect]] = {}  # waiting for their simulation's record to be saved
        self._committers: dict[str, asyncio.Task[None]] = {}
        # Pods are created by a fixed set of workers, each building a body only when it can send it:
        # ten thousand bodies built up front would sit in memory waiting for a slot.
        self._creates: asyncio.Queue[inv.CreatePod] = asyncio.Queue()
        self._creating = 0
        self._stopping = asyncio.Event()
        self.messages_received: dict[str, int] = {}
        self.model_health = ModelHealth(interval_seconds=settings.model_healthcheck_interval_seconds)
        self.pods_created = 0
        self._create_latency = LatencyHistogram()

    # -- inputs

    def _received(self, topic: str, payload: bytes) -> None:
        self._inputs.put_nowait(_Inbound(topic, payload))

    def _from_thread(self, item: WatchListed | list[WatchEvent]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._inputs.put_nowait, item)

    # -- the loop

    async def _process(self) -> None:
        while True:
            deadline = self.inventory.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            batch: list[_Input] = []
            if self._inputs.empty():
                # asyncio.timeout rather than wait_for, which wraps every wait in a task of its own.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        batch.append(await self._inputs.get())
            else:
                batch.append(self._inputs.get_nowait())
            while batch and not self._inputs.empty() and len(batch) < _MAX_BATCH:
                batch.append(self._inputs.get_nowait())
            now = time.time()
            effects: list[inv.Effect] = []
            for item in batch:
                effects += inv.handle_all(self.inventory, self._to_events(item, now))
            effects += self.inventory.handle(inv.Tick(now))
            if effects:
                self._execute(effects)

    def _to_events(self, item: _Input, now: float) -> list[inv.Event]:
        match item:
            case _Inbound():
                return self._decode(item, now)
            case WatchListed():
                observations: list[PodObservation] = [seen for seen in item.pods if seen is not None]
                # Pods of ours that no record describes; pods on their way out (a cleanup) are not orphans.
                self.inventory.adopt([seen for seen in observations
                                      if seen.simulation_id not in self.inventory.simulations and not seen.deleting])
                events: list[inv.Event] = [inv.PodSeen(seen, now) for seen in observations]
                listed = frozenset((seen.simulation_id, seen.model_id) for seen in observations)
                events.append(inv.PodListed(listed, now))
                return events
            case list():
                changes: list[inv.Event] = []
                for change in item:
                    if (seen := change.pod) is None:
                        continue
                    changes.append(inv.PodSeen(seen, now))
                    if change.type == "DELETED":
                        changes.append(inv.PodGone(seen.simulation_id, seen.model_id, seen.pod_name, now))
                return changes
            case _Created():
                if item.outcome_created:
                    return [inv.PodCreated(item.simulation_id, item.model_id, now)]
                return [inv.PodCreateRejected(item.simulation_id, item.model_id, item.reason, now, item.name_taken)]
            case _Cleaned():
                return [inv.SimulationCleanedUp(item.simulation_id)]

    def _decode(self, item: _Inbound, now: float) -> list[inv.Event]:
        try:
            message = codec.decode(
                item.topic, item.payload, so=self.so, max_payload_bytes=self.settings.max_payload_bytes)
        except codec.DecodeError as exc:
            _log.warning("message dropped", topic=item.topic[:300], reason=str(exc)[:300], size=len(item.payload))
            return []
        kind = type(message).__name__
        self.messages_received[kind] = self.messages_received.get(kind, 0) + 1
        match message:
            case codec.DeployRequest():
                self._register_secrets(message.simulation_id, message.models)
                if message.simulation_id in self.inventory.simulations:
                    _log.warning("repeated DeployModels ignored", simulation_id=message.simulation_id)
                    return []
                _log.info("deploying models", simulation_id=message.simulation_id,
                          simulator_id=message.simulator_id, models=len(message.models),
                          keep_logs_hours=message.keep_logs_hours)
                if message.keep_logs_hours > self.inventory.max_keep_logs_hours:
                    _log.warning("keepLogsHours capped", simulation_id=message.simulation_id,
                                 requested=str(message.keep_logs_hours),
                                 kept=self.inventory.max_keep_logs_hours, setting="MAX_KEEP_LOGS_HOURS")
            case codec.SimulationDoneRequest() if message.simulation_id in self.inventory.simulations:
                _log.info("simulation ended by the SO", simulation_id=message.simulation_id,
                          model_id=message.model_id)
            case codec.HealthPing():
                self._answer_ping(message)
            case codec.ModelPong():
                self.model_health.pong(message.simulation_id, message.model_id, bids=message.bids,
                                       allocations=message.allocations, now=now)
        return codec.lifecycle_events(message, now)

    def _answer_ping(self, ping: codec.HealthPing) -> None:
        reasons = self.ready_reasons()
        unknown = [sim for sim in ping.active_simulations if sim not in self.inventory.simulations]
        if unknown:
            reasons.append("unknown simulations: " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
        self.mqtt.publish_volatile(self.topics.pong_health(ping.instance_id), codec.encode_pong(reasons))

    def _is_secret(self, env_name: str) -> bool:
        # Thousands of models share a handful of env var names: decide each name once.
        if (known := self._secret_names.get(env_name)) is None:
            known = self._secret_names[env_name] = self._secret_name.search(env_name) is not None
        return known

    def _register_secrets(self, simulation_id: str, models: Iterable[inv.ModelSpec]) -> None:
        self.redactor.add_env(((name, value) for spec in models for name, value in spec.env if self._is_secret(name)),
                              owner=simulation_id)

    # -- effects

    def _execute(self, effects: list[inv.Effect]) -> None:
        """Carry the effects out, in order per simulation, without holding up the loop.

        What follows an urgent save of a simulation's record waits, in order, in
        that simulation's queue for the save: one committer per simulation saves
        the record as it is then (covering everything queued so far) and performs
        what was queued. While a save is under way, more queues up for the next
        one, so a storm of terminations costs a few saves, not one per batch.
        """
        for effect in effects:
            simulation_id = effect.simulation_id
            if isinstance(effect, inv.SaveRecord):
                if effect.urgent:
                    self._queued.setdefault(simulation_id, [])
                    if simulation_id not in self._committers:
                        self._committers[simulation_id] = self._spawn(self._commit(simulation_id))
                else:
                    self._dirty.add(simulation_id)
            elif simulation_id in self._queued:
                self._queued[simulation_id].append(effect)
            else:
                self._perform(effect)

    async def _commit(self, simulation_id: str) -> None:
        try:
            while simulation_id in self._queued:
                queued = self._queued.pop(simulation_id)
                await self._save_record(simulation_id)
                for effect in queued:
                    self._perform(effect)
        finally:
            self._committers.pop(simulation_id, None)

    def _perform(self, effect: inv.Effect) -> None:
        match effect:
            case inv.PublishModelsReady():
                _log.info("models ready", simulation_id=effect.simulation_id)
                self.mqtt.outbox.put(self.topics.models_ready(effect.simulation_id), codec.encode_models_ready())
            case inv.PublishModelHasTerminated():
                _log.info("model terminated", simulation_id=effect.simulation_id, model_id=effect.model_id,
                          exit_code=effect.exit_code, reason=effect.reason)
                self.mqtt.outbox.put(self.topics.model_has_terminated(effect.simulation_id, effect.model_id),
                                     codec.encode_model_has_terminated(effect.exit_code))
            case inv.PublishAllModelsHaveTerminated():
                _log.info("all models terminated", simulation_id=effect.simulation_id)
                self.mqtt.outbox.put(self.topics.all_models_have_terminated(effect.simulation_id),
                                     codec.encode_all_models_have_terminated())
            case inv.CreatePod():
                self._creates.put_nowait(effect)
            case inv.StopModelPod():
                self._spawn(self._stop_pod(effect))
            case inv.DeleteSimulation():
                self._spawn(self._delete_simulation(effect))
            case inv.ReportFailure():
                report = self._spawn(self._report_failure(effect))
                self._reports.setdefault(effect.simulation_id, set()).add(report)
            case inv.SaveRecord():
                pass

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(self._guarded(coroutine))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)
        return task

    async def _guarded(self, coroutine: Any) -> None:
        try:
            await coroutine
        except Exception as exc:  # noqa: BLE001 (an action failing for good is logged; the watch converges)
            _log.error("kubernetes action failed", error=type(exc).__name__, detail=str(exc)[:300])

    async def _create_pods(self) -> None:
        while not self._stopping.is_set():
            effect = await self._creates.get()
            self._creating += 1
            try:
                await self._guarded(self._create_pod(effect))
            finally:
                self._creating -= 1

    async def _create_pod(self, effect: inv.CreatePod) -> None:
        body = build_pod(
            settings=self.pod_settings,
            simulator_id=effect.simulator_id,
            simulation_id=effect.simulation_id,
            model_id=effect.spec.model_id,
            image=effect.spec.image,
            env=effect.spec.env,
            keep_logs_hours=effect.keep_logs_hours,
            name=effect.pod_name,
            secret_name=record_name(self.so, effect.simulation_id),
            is_secret=self._is_secret,
        )
        started = time.monotonic()
        try:
            outcome = await self.gateway.create_pod(body, ownership_marks(
                self.so, effect.simulator_id, effect.simulation_id, effect.spec.model_id))
            self._create_latency.observe(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 (retries exhausted: the model gets its answer, never silence)
            self._inputs.put_nowait(_Created(effect.simulation_id, effect.spec.model_id, False,
                                             f"API unavailable: {type(exc).__name__}"))
            return
        if outcome.created:
            self.pods_created += 1
        else:
            _log.warning("pod rejected", simulation_id=effect.simulation_id, model_id=effect.spec.model_id,
                         status=outcome.status, reason=outcome.reason[:500])
        self._inputs.put_nowait(_Created(effect.simulation_id, effect.spec.model_id, outcome.created,
                                         f"{outcome.status} {outcome.reason}", outcome.name_taken))

    async def _stop_pod(self, effect: inv.StopModelPod) -> None:
        marks = ownership_marks(self.so, effect.simulator_id, effect.simulation_id, effect.model_id)
        if effect.delete:
            done = await self.gateway.delete_own_pod(effect.pod_name, marks)
        else:
            done = await self.gateway.stop_pod(effect.pod_name, marks)
        if not done:
            _log.warning("pod not stopped: gone, or not this model's", simulation_id=effect.simulation_id,
                         model_id=effect.model_id, pod=effect.pod_name)

    async def _delete_simulation(self, effect: inv.DeleteSimulation) -> None:
        # The failed containers' logs are read before their pods go.
        if reports := self._reports.pop(effect.simulation_id, None):
            await asyncio.wait(reports)
        _log.info("deleting finished simulation", simulation_id=effect.simulation_id)
        await self.gateway.delete_pods(simulation_pods_selector(self.so, effect.simulation_id))
        # Under the record's lock: a save under way must not bring the record back after this.
        async with self._record_locks.setdefault(effect.simulation_id, asyncio.Lock()):
            # The head first: what is left if the daemon dies now is owned by it, so the cluster collects it.
            await self.gateway.delete_object("configmaps", record_name(self.so, effect.simulation_id))
            selector = simulation_records_selector(self.so, effect.simulation_id)
            for item in await self.gateway.list_objects("configmaps", selector):
                await self.gateway.delete_object("configmaps", item["metadata"]["name"])
            for item in await self.gateway.list_objects("secrets", selector):
                await self.gateway.delete_object("secrets", item["metadata"]["name"])
            self._record_uids.pop(effect.simulation_id, None)
        self._record_locks.pop(effect.simulation_id, None)
        self._records.forget(effect.simulation_id)
        # Its models' logs are no longer read: their secrets need not be remembered.
        self.redactor.forget(effect.simulation_id)
        self._inputs.put_nowait(_Cleaned(effect.simulation_id))

    async def _report_failure(self, effect: inv.ReportFailure) -> None:
        lines: list[str] = []
        if effect.read_log and self.settings.failed_log_tail_lines:
            try:
                text = await self.gateway.read_log_tail(effect.pod_name, self.settings.failed_log_tail_lines)
                lines = self.redactor.redact(text).splitlines()
            except Exception as exc:  # noqa: BLE001 (the failure is still reported, without its log)
                lines = [f"(log unavailable: {type(exc).__name__})"]
        _log.warning("model failed", simulation_id=effect.simulation_id, model_id=effect.model_id,
                     exit_code=effect.exit_code, reason=effect.reason, last_log_lines=lines)
        if self.settings.report_failures_as_error_occurred:
            message = f"Model {effect.model_id} failed with exit code {effect.exit_code}"
            message += f" ({effect.reason})" if effect.reason else ""
            if lines:
                message += ". Last log lines:\n" + "\n".join(lines)
            self.mqtt.outbox.put(self.topics.error_occurred(effect.simulation_id, effect.model_id),
                                 codec.encode_error_occurred(self.redactor.redact(message)))

    async def _flush_records(self, interval: float = 1.0) -> None:
        """Save, now and then, the records whose changes publish nothing (pods seen, models ready)."""
        while True:
            await asyncio.sleep(interval)
            if self._dirty:
                await asyncio.gather(*(self._save_record(simulation_id) for simulation_id in list(self._dirty)))

    async def _save_record(self, simulation_id: str) -> None:
        # One save of a record at a time, each writing the state as it is when it starts: an older
        # snapshot can never land after a newer one.
        lock = self._record_locks.setdefault(simulation_id, asyncio.Lock())
        async with lock:
            self._dirty.discard(simulation_id)
            await self._write_record(simulation_id)
        if simulation_id not in self.inventory.simulations:
            self._record_locks.pop(simulation_id, None)

    async def _write_record(self, simulation_id: str) -> None:
        simulation = self.inventory.simulations.get(simulation_id)
        if simulation is None or simulation.cleaning:
            return
        name = record_name(self.so, simulation_id)
        write = self._records.encode(simulation, everything=simulation_id not in self._record_uids)
        while True:
            try:
                if (uid := self._record_uids.get(simulation_id)) is not None:
                    # The parts first, the head last: a head never claims more than its parts hold.
                    await self._write_parts(simulation_id, uid, write.parts)
                    if await self.gateway.replace_object("configmaps", self._record_object(
                            "ConfigMap", name, simulation_id, None, data=write.head)):
                        return
                    # Deleted by someone: created again below, with its parts and the specs it owns.
                    del self._record_uids[simulation_id]
                    write = self._records.encode(simulation, everything=True)
                saved = await self.gateway.put_object("configmaps", self._record_object(
                    "ConfigMap", name, simulation_id, None, data=write.head))
                uid = self._record_uids[simulation_id] = saved["metadata"]["uid"]
                await self._save_specs(simulation, uid)
                await self._write_parts(simulation_id, uid, write.parts)
                return
            except Exception as exc:  # noqa: BLE001 (nothing is published before its record is safe)
                _log.error("could not save simulation record, retrying", simulation_id=simulation_id,
                           error=type(exc).__name__, detail=str(exc)[:300])
                await asyncio.sleep(2.0)
                # Which parts landed is unknown: the next attempt writes them all.
                write = self._records.encode(simulation, everything=True)

    def _record_object(self, kind: str, name: str, simulation_id: str, owner_uid: str | None,
                       *, data: dict[str, str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "labels": record_labels(self.so, simulation_id)}
        if owner_uid is not None:
            # Gone with the head when someone deletes it, even while the daemon is down.
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                            "name": record_name(self.so, simulation_id), "uid": owner_uid}]
        body: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}
        if kind == "Secret":
            body["type"] = "Opaque"
        return body

    async def _write_parts(self, simulation_id: str, owner_uid: str, parts: dict[int, dict[str, str]]) -> None:
        """Replace the given parts of a record, or create those not there (yet, or any more)."""
        name = record_name(self.so, simulation_id)

        async def write(index: int, data: dict[str, str]) -> None:
            body = self._record_object("ConfigMap", part_name(name, index), simulation_id, owner_uid, data=data)
            if not await self.gateway.replace_object("configmaps", body):
                await self.gateway.put_object("configmaps", body)

        await asyncio.gather(*(write(index, data) for index, data in parts.items()))

    async def _write_secret(self, name: str, simulation_id: str, owner_uid: str, *, data: dict[str, str]) -> None:
        """Replace a Secret of a record (written once, but perhaps again after a failed save), or create it."""
        body = self._record_object("Secret", name, simulation_id, owner_uid, data=data)
        if not await self.gateway.replace_object("secrets", body):
            await self.gateway.put_object("secrets", body)

    async def _save_specs(self, simulation: inv.Simulation, owner_uid: str) -> None:
        specs = [model.spec for model in simulation.models.values() if model.spec is not None]
        name = record_name(self.so, simulation.simulation_id)
        secret_values = {
            secret_key(value): base64.b64encode(value.encode("utf-8")).decode("ascii")
            for spec in specs for env_name, value in spec.env if self._is_secret(env_name)
        }
        parts = encode_specs(specs)
        await asyncio.gather(
            self._write_secret(name, simulation.simulation_id, owner_uid, data=secret_values),
            *(self._write_secret(part_name(name, index), simulation.simulation_id, owner_uid, data=data)
              for index, data in enumerate(parts)))

    # -- start-up and shutdown

    async def _restore(self) -> None:
        """Rebuild the inventory from the records in the cluster, before anything else happens."""
        selector = records_selector(self.so)
        configmaps = await self.gateway.list_objects("configmaps", selector)
        secrets = await self.gateway.list_objects("secrets", selector)
        # A part belongs to the head that owns it (by uid) and is named after it: never to a head
        # whose name merely resembles its own (simulation ``r-p0`` and part 0 of simulation ``r``).
        owned: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for kind, items in (("configmaps", configmaps), ("secrets", secrets)):
            for item in items:
                for owner in owner_uids(item):
                    owned.setdefault(owner, []).append((kind, item))

        for configmap in configmaps:
            head = configmap.get("data") or {}
            if RECORD_KEY not in head:
                continue  # a part, read with its head
            name, uid = configmap["metadata"]["name"], configmap["metadata"]["uid"]
            parts: dict[str, dict[int, dict[str, str]]] = {"configmaps": {}, "secrets": {}}
            for kind, item in owned.get(uid, []):
                if (index := part_index(name, item["metadata"]["name"])) is not None:
                    parts[kind][index] = item.get("data") or {}
            spec_parts = parts["secrets"]
            try:
                specs = decode_specs(spec_parts[index] for index in itertools.takewhile(
                    spec_parts.__contains__, itertools.count()))
                simulation = decode_record(head, parts["configmaps"].get, specs)
                labels = configmap["metadata"].get("labels") or {}
                if labels.get(LABEL_SIMULATION_ID) != label_value(simulation.simulation_id):
                    raise RecordError(f"labelled for another simulation than {simulation.simulation_id!r}")
            except RecordError as exc:
                _log.error("simulation record unreadable, ignored", record=name, reason=str(exc))
                continue
            if specs:
                self._register_secrets(simulation.simulation_id, specs.values())
            self.inventory.restore(simulation)
            if name == record_name(self.so, simulation.simulation_id):
                self._record_uids[simulation.simulation_id] = uid
            # else: a record of the layout before 0.3; the first save writes it whole under its new name,
            # and the cleanup deletes both (by label).
            _log.info("simulation restored", simulation_id=simulation.simulation_id, models=len(simulation.models),
                      models_ready_sent=simulation.models_ready_sent,
                      all_terminated_sent=simulation.all_terminated_sent)

    def ready_reasons(self) -> list[str]:
        """Why the daemon is not fully working right now; empty when it is."""
        reasons = []
        if not self.gateway.reachable:
            reasons.append("the Kubernetes API is unreachable")
        if not self.watcher.in_sync:
            reasons.append("the pod watch is not in sync")
        if not self.mqtt.connected:
            reasons.append("the MQTT broker session is not established")
        return reasons

    def _running_models(self) -> list[tuple[str, str]]:
        return [
            (simulation.simulation_id, model.model_id)
            for simulation in self.inventory.simulations.values()
            for model in simulation.models.values()
            if model.termination is None and model.container is ContainerState.RUNNING
        ]

    async def _watch_model_health(self, interval: float) -> None:
        """Ping running models every interval; report those that stopped answering or progressing, once."""
        while True:
            await asyncio.sleep(interval)
            running = self._running_models()
            for verdict in self.model_health.check(running, time.time()):
                _log.warning("model unhealthy", simulation_id=verdict.simulation_id, model_id=verdict.model_id,
                             reason=verdict.reason)
                self.mqtt.outbox.put(self.topics.unhealthy_model(verdict.simulation_id, verdict.model_id),
                                     codec.encode_unhealthy_model())
            ping = codec.encode_ping_model()
            for simulation_id, model_id in running:
                self.mqtt.publish_volatile(self.topics.ping_model(simulation_id, model_id), ping)

    def metrics(self) -> MetricsSnapshot:
        models: dict[str, int] = {}
        for simulation in self.inventory.simulations.values():
            for model in simulation.models.values():
                state = _model_state(model)
                models[state] = models.get(state, 0) + 1
        return MetricsSnapshot(
            active_simulations=len(self.inventory.simulations),
            models_by_state=models,
            pods_created=self.pods_created,
            pod_create_latency_buckets=self._create_latency.cumulative(),
            pod_create_latency_sum=self._create_latency.total,
            api_errors=dict(self.gateway.api_errors),
            mqtt_reconnects=self.mqtt.reconnects,
            messages_received=dict(self.messages_received),
            messages_sent=dict(self.mqtt.outbox.sent_by_type),
            watch_restarts=self.watcher.restarts,
            watch_relists=self.watcher.relists,
        )

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        # What exists now (the libraries' modules, classes and clients) lives as long as the daemon:
        # full collections need not scan it again, which shortens their pauses.
        gc.freeze()
        await self._restore()
        try:
            async with asyncio.TaskGroup() as group:
                watch = group.create_task(_in_daemon_thread(self.watcher.run, "pod-watch"), name="pod-watch")
                events = group.create_task(self._process(), name="inventory")
                mqtt = group.create_task(self.mqtt.run(), name="mqtt")
                stopping = group.create_task(self._stopping.wait(), name="stop-signal")
                flush = group.create_task(self._flush_records(), name="record-flush")
                tasks = {watch, events, mqtt, stopping, flush}
                tasks |= {group.create_task(self._create_pods(), name=f"pod-creator-{index}")
                          for index in range(self.settings.pod_create_concurrency)}
                if (interval := self.settings.model_healthcheck_interval_seconds) > 0:
                    tasks.add(group.create_task(self._watch_model_health(interval), name="model-health"))
                if self.settings.http_port:
                    tasks.add(group.create_task(serve_http(
                        port=self.settings.http_port, ready_reasons=self.ready_reasons, snapshot=self.metrics),
                        name="http"))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if stopping not in done:
                    for task in done:
                        task.result()
                    raise RuntimeError(f"long-lived task ended: {[t.get_name() for t in done]}")
                await self._shutdown(events, mqtt)
                self.watcher.stop()
                for task in tasks:
                    task.cancel()
        finally:
            self.watcher.stop()
            self.gateway.close()

    async def _shutdown(self, events: asyncio.Task[None], mqtt: asyncio.Task[None]) -> None:
        _log.info("shutting down")
        self.mqtt.stop_receiving()
        deadline = time.monotonic() + _SHUTDOWN_SECONDS
        # In-flight API calls finish, and the loop turns their results into lifecycle messages.
        while (self._actions or self._creating or not self._inputs.empty()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        events.cancel()
        if self._dirty:
            await asyncio.wait_for(asyncio.gather(*(self._save_record(sim) for sim in list(self._dirty))),
                                   max(0.1, deadline - time.monotonic()))
        if self.mqtt.connected:
            await self.mqtt.flush(max(0.0, deadline - time.monotonic()))
        mqtt.cancel()


async def _in_daemon_thread(body: Callable[[], None], name: str) -> None:
    """Run a blocking body in its own daemon thread and wait for it.

    Unlike asyncio.to_thread, a thread stuck in a blocking read can never keep
    the process from exiting: the loop's default executor is joined at exit.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if finished.done():
            return
        if error is None:
            finished.set_result(None)
        else:
            finished.set_exception(error)

    def thread_body() -> None:
        error: BaseException | None = None
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task, which decides)
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop may already be closed at exit
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=thread_body, name=name, daemon=True).start()
    await finished


def _model_state(model: inv.Model) -> str:
    if model.termination is not None:
        return "failed" if model.termination.failed else "succeeded"
    if model.ready:
        return "ready"
    if model.container is ContainerState.RUNNING:
        return "running"
    return "pending"


def _first(error: BaseException, kind: type[_E]) -> _E | None:
    """``error`` itself or the first of its kind among the errors it groups (a TaskGroup's)."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _first(inner, kind)) is not None:
                return found
    return None


def run(settings: Settings, redactor: SecretRedactor) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit code to end the process with."""

    async def main() -> None:
        orchestrator = Orchestrator(settings=settings, redactor=redactor)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, orchestrator.request_stop)
        await orchestrator.run()

    try:
        asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 (the process's last word: say what broke, exit non-zero)
        if (refused := _first(exc, LoginRefusedError)) is not None:
            # An operator's mistake, not a bug: one line that says what to fix, no traceback.
            _log.critical("mqtt login refused", detail=str(refused))
            return 1
        _log.critical("daemon failed", error=type(exc).__name__, detail=str(exc)[:500], exc_info=True)
        return 1
    _log.info("stopped")
    return 0

