"""The runtime: inputs change the inventory, and one sync per simulation makes the world match it.

Shaped like a Kubernetes controller (sample-controller, client-go's
workqueue). Every input (an MQTT message, pods seen by the watch, a
deadline, a confirmation from the broker) is applied to the pure inventory
at once, in the event loop, and only marks the simulations it changed in one
deduplicating work queue. Workers take one simulation at a time and run
``sync``, which converges it from the inventory's decisions, in an order
that keeps the promises across a crash:

1. save the record if it changed (readies and confirmations included: the
   window a SIGKILL can lose them in is one sync, not a timer);
2. publish the lifecycle messages the saved record decided, in order; each
   is marked delivered when the broker confirms it, and saved again;
3. report failures (the log tail, ErrorOccurred), best effort;
4. stop, in place, the pods of models the daemon ended;
5. create the pods still missing, a bounded number per pass;
6. delete pods and record once the simulation is due for its cleanup.

A failed call is never an answer by itself: the sync raises, and the queue
brings the simulation back after a per-key backoff. Only a domain deadline
(a model's start timeout) or a permanent rejection turns into a FAILED code.
Nothing in flight is kept outside the queue and the inventory.

Beside the syncs, with a ``QuotaApi``, one task admits whole simulations by
the namespace's ResourceQuota (``admission``): a simulation deployed while a
quota applies waits in the queue, with its record saved and no pod, until a
consistent read of the quotas shows room for all of its pods.

The adapters come in as small protocols (``PodApi``, ``Publisher``,
``QuotaApi``, and the ``RecordStore`` over an ``ObjectApi``), so the rules
here are tested in-process with the fakes of ``testing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from model_services_orchestrator import admission
from model_services_orchestrator import model_inventory as inv
from model_services_orchestrator.kube_errors import TRANSIENT, Forbidden, KubeError
from model_services_orchestrator.leadership import LeadershipLostError
from model_services_orchestrator.logs import SecretRedactor, get_logger
from model_services_orchestrator.messages import codec
from model_services_orchestrator.metrics import (
    CREATE_BUCKETS,
    START_BUCKETS,
    Histogram,
    LifecycleStats,
    ReconcileStats,
)
from model_services_orchestrator.model_health import ModelHealth
from model_services_orchestrator.model_registry import RECORDED_BYTES_MAX, Registry, recorded_size, resolve
from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import (
    LABEL_SIMULATION_KEY,
    PodSettings,
    build_pod,
    of_simulation,
    ownership_marks,
    secret_env_names,
    simulation_candidates_selector,
    simulation_key,
    simulation_marks,
    simulation_pods_selector,
)
from model_services_orchestrator.record_store import RecordStore
from model_services_orchestrator.topics import OutgoingTopics
from model_services_orchestrator.work_queue import WorkQueue

__all__ = ["MODEL_STATES", "SIMULATION_PHASES", "CreateResult", "Outbox", "PodApi", "PodChange", "Publisher",
           "QuotaApi", "Runtime", "RuntimeSettings"]

_log = get_logger(__name__)
_T = TypeVar("_T")

# Refusals of a create that pass by themselves: kube-apiserver answers 403 for a few seconds after it
# restarts (its RBAC caches are empty). Retried with backoff until the model's start deadline (-2).
_PASSING_CREATE_REFUSALS = frozenset({403})
SIMULATION_PHASES = ("starting", "running", "ended")
# The least time between two admission decisions: the quota changes with every pod created or ended, and the
# changes that come meanwhile make one more decision, not one each.
_ADMISSION_PAUSE_SECONDS = 0.2
MODEL_STATES = ("pending", "running", "ready", "succeeded", "failed")


class CreateResult(Protocol):
    """What became of a create: made (or already this model's), or rejected for good."""

    @property
    def created(self) -> bool: ...

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def name_taken(self) -> bool: ...


class PodApi(Protocol):
    """The calls on pods the runtime makes; failures raise ``kube_errors.KubeError``."""

    async def create_pod(self, body: dict[str, Any], marks: Mapping[str, Mapping[str, str]]) -> CreateResult: ...

    async def stop_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool: ...

    async def delete_own_pod(self, name: str, marks: Mapping[str, Mapping[str, str]]) -> bool: ...

    async def delete_pods(self, label_selector: str) -> None: ...

    async def delete_kueue_workload(self, name: str, pod_names: Collection[str]) -> bool: ...

    async def list_pods(self, label_selector: str, keep: Callable[[dict[str, Any]], _T | None]) -> list[_T]: ...

    async def read_log_tail(self, name: str, lines: int) -> str: ...


class QuotaApi(Protocol):
    """The namespace's ResourceQuotas, read consistently (not from a cache): what admission decides on."""

    async def list_quotas(self) -> list[dict[str, Any]]: ...


class Publisher(Protocol):
    """The MQTT session, as the runtime uses it."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, on_delivered: Callable[[], None] | None = None) -> None: ...

    def publish_volatile(self, topic: str, payload: bytes) -> None: ...


class Outbox(Protocol):
    """The session of the lifecycle messages (``mqtt_outbox``): published under the packet ids the records hold."""

    def send(self, packet_id: int, topic: str, payload: bytes, *, received: bool = False,
             on_received: Callable[[], None], on_delivered: Callable[[], None]) -> None: ...

    def release(self, packet_id: int) -> None: ...


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A pod the cleanup of a simulation found: its name, whether it is the simulation's, whether it carries
    the simulation's key label."""

    name: str
    ours: bool
    keyed: bool


@dataclass(frozen=True, slots=True)
class PodChange:
    """A pod seen by the watch; ``gone``: it was deleted."""

    pod: PodObservation
    gone: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    so: str
    pod_settings: PodSettings
    secret_env_name_pattern: str
    model_start_timeout_seconds: float = 300.0
    min_cleanup_delay_seconds: float = 5.0
    model_stop_grace_seconds: float = 30.0
    model_finish_timeout_seconds: float = 3600.0
    ready_settle_seconds: float = 10.0
    max_keep_logs_hours: float = 168.0
    failed_log_tail_lines: int = 30
    report_failures_as_error_occurred: bool = True
    max_payload_bytes: int = 16 * 1024 * 1024
    model_healthcheck_interval_seconds: float = 0.0
    workers: int = 4
    creates_per_sync: int = 512  # a pass's worth: saves and messages of the simulation wait at most that long
    retry_base_seconds: float = 0.2
    retry_max_seconds: float = 30.0
    admission_timeout_seconds: float | None = None  # a queued simulation's longest wait; None: for ever


class Runtime:
    """The daemon's state and its convergence, for one SO."""

    def __init__(self, *, settings: RuntimeSettings, pods: PodApi, records: RecordStore, publisher: Publisher,
                 outbox: Outbox, redactor: SecretRedactor, clock: Callable[[], float] = time.time,
                 registry: Registry | None = None, quotas: QuotaApi | None = None) -> None:
        self.settings = settings
        # The ModelServices, as the daemon's watch keeps them; without one, the registry is off.
        self.registry = registry if registry is not None else Registry()
        self.pods = pods
        self.records = records
        self.publisher = publisher
        self.outbox = outbox
        self.redactor = redactor
        self.clock = clock
        self.topics = OutgoingTopics(settings.so)
        self.inventory = inv.Inventory(
            start_timeout_seconds=settings.model_start_timeout_seconds,
            min_cleanup_delay_seconds=settings.min_cleanup_delay_seconds,
            stop_grace_seconds=settings.model_stop_grace_seconds,
            max_keep_logs_hours=settings.max_keep_logs_hours,
            so=settings.so,
            finish_timeout_seconds=settings.model_finish_timeout_seconds,
            ready_settle_seconds=settings.ready_settle_seconds,
            admission_timeout_seconds=settings.admission_timeout_seconds,
            whole_groups=bool(settings.pod_settings.kueue_queue_name),
        )
        # Admission by the namespace's quota: on with a QuotaApi. ``quotas``: the namespace's, as watched (None:
        # not listed yet, so a simulation deployed now waits for the first decision).
        self.quota_api = quotas
        self.quotas: dict[str, admission.Quota] | None = None
        self._admission_wanted = asyncio.Event()
        self._waiting_logged: set[str] = set()
        self._pod_demands: dict[tuple[str, str], admission.Resources] = {}  # by simulation and image
        self.admission_wait = Histogram(START_BUCKETS)
        self.queue: WorkQueue[str] = WorkQueue(base_delay=settings.retry_base_seconds,
                                               max_delay=settings.retry_max_seconds)
        self.model_health = ModelHealth(interval_seconds=settings.model_healthcheck_interval_seconds)
        self.is_secret = secret_env_names(settings.secret_env_name_pattern)
        self._deadlines_changed = asyncio.Event()
        self._receipts_pending = asyncio.Event()
        # What the session record holds (the broker's receipts of undelivered messages), as last written.
        self._session_record: dict[int, inv.MessageKey] = {}
        self._waiting_until: float | None = None  # the deadline the timer sleeps until (None: no deadline)
        self._stopping = False
        self._answer_ping: Callable[[codec.HealthPing], None] = lambda _ping: None
        # Received messages to acknowledge once their simulation's record holds ``version``, in order.
        self._acks: deque[tuple[str | None, int, Callable[[], None]]] = deque()
        # What the metrics report.
        self.messages_received: dict[str, int] = {}
        self.pods_created = 0
        self.models_restarted = 0
        self.create_latency = Histogram(CREATE_BUCKETS)
        self.reconciles = ReconcileStats()
        self.lifecycle = LifecycleStats()
        # When each simulation's DeployModels came (this daemon's life only), for its ModelsReady latency.
        self._deployed_at: dict[str, float] = {}

    # -- inputs (in the event loop)

    def on_ping(self, answer: Callable[[codec.HealthPing], None]) -> None:
        """Who answers the SO's health pings (the daemon, which knows the adapters' health)."""
        self._answer_ping = answer

    def receive(self, topic: str, payload: bytes, ack: Callable[[], None] | None = None) -> None:
        """An MQTT message; ``ack()`` acknowledges it to the broker, once the record holds what it changed
        (a kill before that makes the broker deliver it again)."""
        now = self.clock()
        try:
            message = codec.decode(topic, payload, so=self.settings.so,
                                   max_payload_bytes=self.settings.max_payload_bytes, now=now)
        except codec.DecodeError as exc:
            _log.warning("message dropped", topic=topic[:300], reason=str(exc)[:300], size=len(payload))
            self._acknowledge_when_saved(None, ack)
            return
        kind = topic.rsplit("/", 1)[-1]
        self.messages_received[kind] = self.messages_received.get(kind, 0) + 1
        match message:
            case inv.DeployRequested():
                message = self._deploying(message)
            case inv.EndRequested() if message.simulation_id in self.inventory.simulations:
                _log.info("simulation ended by the SO" if message.model_id is None else "model told to finish",
                          simulation_id=message.simulation_id, model_id=message.model_id)
            case codec.HealthPing():
                self._answer_ping(message)
                self._acknowledge_when_saved(None, ack)
                return
            case codec.ModelPong():
                self.model_health.pong(message.simulation_id, message.model_id, bids=message.bids,
                                       allocations=message.allocations, now=now)
                self._acknowledge_when_saved(None, ack)
                return
        self.apply([message])
        self._acknowledge_when_saved(message.simulation_id, ack)

    def _acknowledge_when_saved(self, simulation_id: str | None, ack: Callable[[], None] | None) -> None:
        if ack is None:
            return  # QoS 0: nothing to acknowledge
        simulation = self.inventory.simulations.get(simulation_id) if simulation_id is not None else None
        self._acks.append((simulation_id, simulation.version if simulation is not None else 0, ack))
        self._acknowledge_saved()

    def _acknowledge_saved(self) -> None:
        """Acknowledge, in order, the messages whose changes the records now hold (or that changed nothing)."""
        while self._acks:
            simulation_id, version, ack = self._acks[0]
            simulation = self.inventory.simulations.get(simulation_id) if simulation_id is not None else None
            if simulation is not None and simulation.saved_version < version:
                return
            self._acks.popleft()
            ack()

    def _deploying(self, request: inv.DeployRequested) -> inv.DeployRequested:
        """Log a DeployModels; the request as the inventory is to take it: queued when a quota admits it, a new
        simulation's images resolved in the model registry, once and for good."""
        self.redactor.add_env(((name, value) for spec in request.models for name, value in spec.env
                               if self.is_secret(name)), owner=request.simulation_id)
        known = self.inventory.simulations.get(request.simulation_id)
        if known is None and request.refused:
            _log.warning("DeployModels refused", simulation_id=request.simulation_id, reason=request.refused[:500],
                         answer="FAILED -1 for each model that can be answered")
            return request
        if known is None:
            resolution = resolve((spec.image for spec in request.models), self.registry, self.is_secret)
            if resolution.resolved or resolution.unknown:
                _log.info("model registry resolved images", simulation_id=request.simulation_id,
                          services={image: each.service for image, each in resolution.resolved.items()},
                          unknown=sorted(resolution.unknown))
            if (size := recorded_size(resolution.resolved)) > RECORDED_BYTES_MAX:
                refused = (f"its ModelServices take {size} bytes in its record, more than {RECORDED_BYTES_MAX}: "
                           "fewer or smaller env defaults")
                _log.warning("DeployModels refused", simulation_id=request.simulation_id, reason=refused,
                             answer="FAILED -1 for each model")
                return dataclasses.replace(request, refused=refused)
            request = dataclasses.replace(request, services=resolution.resolved, unknown=resolution.unknown)
        if known is None and self._admission_applies():
            request = dataclasses.replace(request, queued=True)
            self._admission_wanted.set()
        if known is None:
            self._deployed_at[request.simulation_id] = request.now
            _log.info("deploying models", simulation_id=request.simulation_id, simulator_id=request.simulator_id,
                      models=len(request.models), keep_logs_hours=request.keep_logs_hours)
            if request.keep_logs_hours > self.settings.max_keep_logs_hours:
                _log.warning("keepLogsHours capped", simulation_id=request.simulation_id,
                             requested=str(request.keep_logs_hours), kept=self.settings.max_keep_logs_hours,
                             setting="MAX_KEEP_LOGS_HOURS")
            return request
        added = [spec.model_id for spec in request.models if spec.model_id not in known.models]
        _log.warning("repeated DeployModels", simulation_id=request.simulation_id,
                     models_added=len(added), answer="FAILED -1 for each model it adds" if added else "none")
        return request

    def connected(self) -> None:
        """The MQTT session is (re)connected and subscribed: readies sent meanwhile may be lost."""
        self.apply([inv.Connected(self.clock())])

    def listing_started(self) -> None:
        """A full list of our pods is about to be requested, from the watch."""
        self.apply([inv.ListStarted()])

    def pods_listed(self, observations: Iterable[PodObservation | None]) -> None:
        """A full list of our pods, from the watch."""
        now = self.clock()
        pods = tuple(seen for seen in observations if seen is not None)
        for seen in pods:
            self._observe_start(seen, now)
        self.apply([inv.PodListed(pods, now)])

    def pods_changed(self, changes: Iterable[PodChange]) -> None:
        """Pods that changed, from the watch."""
        now = self.clock()
        events: list[inv.Event] = []
        for change in changes:
            self._observe_start(change.pod, now)
            events.append(inv.PodSeen(change.pod, now))
            if change.gone:
                events.append(inv.PodGone(change.pod.simulation_id, change.pod.model_id, change.pod.pod_name, now))
        self.apply(events)

    def _observe_start(self, seen: PodObservation, now: float) -> None:
        """A model's container seen running for the first time: how long since it was asked for.

        Its start deadline, until then, is the time it was asked for (its DeployModels, its restart, or its
        pod's creation when the daemon restarted meanwhile) plus the start timeout.
        """
        if seen.state is not ContainerState.RUNNING:
            return
        simulation = self.inventory.simulations.get(seen.simulation_id)
        model = simulation.models.get(seen.model_id) if simulation is not None else None
        if (simulation is not None and model is not None and model.start_deadline is not None
                and model.termination is None):
            asked = model.start_deadline - self.inventory.start_timeout(simulation, model)
            self.lifecycle.model_start.observe(max(0.0, now - asked))

    def apply(self, events: Iterable[inv.Event]) -> None:
        """Hand events to the inventory and queue the simulations they changed."""
        for simulation_id in self.inventory.handle_all(events):
            self.queue.add(simulation_id)
        if self.quota_api is not None and self.inventory.queued():
            # What admitted simulations still create shrinks with their creates and ends, and a decision may
            # have counted a pod twice (in the quota's ``used`` and as still to create): decide again (at most
            # every _ADMISSION_PAUSE_SECONDS), not only when a quota changes.
            self._admission_wanted.set()
        if waits := self.inventory.admission_waits:
            for waited in waits:
                self.admission_wait.observe(waited)
            waits.clear()
        # Wake the timer only for a deadline earlier than the one it sleeps until: a burst of ten thousand
        # readies sets none, and must not cost ten thousand wake-ups.
        deadline = self.inventory.next_deadline()
        if deadline is not None and (self._waiting_until is None or deadline < self._waiting_until):
            self._deadlines_changed.set()

    # -- start-up

    async def restore(self) -> None:
        """Rebuild the inventory from the records in the cluster, before anything else happens.

        Nothing can be decided before the records are read: transient failures are waited out (a
        control plane that restarts with the daemon); a refusal (401, 403) ends the daemon.
        """
        delay = self.settings.retry_base_seconds
        while True:
            try:
                loaded = await self.records.load()
                break
            except TRANSIENT as exc:
                _log.warning("records unreadable, retrying", error=type(exc).__name__, detail=str(exc)[:300],
                             retry_in_seconds=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
        now = self.clock()
        self.inventory.restore_receipts(self.records.receipts_at_start)
        self._session_record = dict(self.records.receipts_at_start)
        self._receipts_pending.set()  # receipts of messages delivered meanwhile are dropped
        for restored in loaded:
            simulation = restored.simulation
            self.redactor.add_env(restored.secret_env, owner=simulation.simulation_id)
            self.inventory.restore(simulation, now)
            self.queue.add(simulation.simulation_id)
            _log.info("simulation restored", simulation_id=simulation.simulation_id, models=len(simulation.models),
                      models_ready=simulation.models_ready.name, all_terminated=simulation.all_terminated.name,
                      waiting_admission=simulation.waiting_admission)
        if self.quota_api is None and (queued := self.inventory.queued()):
            # Queued by a daemon that admitted by quota; this one does not (QUOTA_ADMISSION=false, or the Role
            # lets it not read quotas): they would wait for ever.
            _log.warning("queued simulations admitted: admission by quota is off", simulations=len(queued))
            self.apply([inv.Admitted(simulation.simulation_id, now) for simulation in queued])
        self._admission_wanted.set()

    # -- running

    async def run(self) -> None:
        """Workers and deadlines, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deadlines(), name="deadlines")
            group.create_task(self._write_receipts(), name="receipts")
            for index in range(self.settings.workers):
                group.create_task(self._work(), name=f"sync-worker-{index}")
            if self.quota_api is not None:
                group.create_task(self._admit(), name="admission")
            if (interval := self.settings.model_healthcheck_interval_seconds) > 0:
                group.create_task(self._watch_model_health(interval), name="model-health")

    def _received(self, message: inv.Outgoing) -> None:
        """The broker's PUBREC: written to the session record, then the PUBREL goes (``_write_receipts``)."""
        self.apply([inv.Received(message)])
        self._receipts_pending.set()

    async def _write_receipts(self) -> None:
        """Keep the session record holding every receipt whose delivery no record holds yet; release each
        receipt once written. One write for all that came during the last: a PUBREL waits for one small
        write, never for a simulation's record."""
        delay = self.settings.retry_base_seconds
        while True:
            await self._receipts_pending.wait()
            self._receipts_pending.clear()
            receipts, unwritten = self.inventory.receipts_to_write()
            # Equal: the record holds them already (written for the same message, in this life or the last).
            if receipts != self._session_record:
                try:
                    if receipts:
                        await self.records.save_receipts(receipts)
                    else:
                        await self.records.delete_receipts()
                    self._session_record = receipts
                except KubeError as exc:
                    _log.warning("session record not saved, retrying", error=type(exc).__name__,
                                 detail=str(exc)[:300], retry_in_seconds=round(delay, 2))
                    self._receipts_pending.set()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.retry_max_seconds)
                    continue
            delay = self.settings.retry_base_seconds
            self.inventory.receipts_written(unwritten)
            for packet_id in unwritten:
                if packet_id in self.inventory.receipts:
                    self.outbox.release(packet_id)

    async def _deadlines(self) -> None:
        while True:
            deadline = self.inventory.next_deadline()
            self._deadlines_changed.clear()
            self._waiting_until = deadline
            if deadline is None or deadline > self.clock():
                timeout = None if deadline is None else deadline - self.clock()
                # asyncio.timeout rather than wait_for, which wraps every wait in a task of its own.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._deadlines_changed.wait()
                        continue
            self.apply([inv.Tick(self.clock())])

    async def _work(self) -> None:
        while True:
            simulation_id = await self.queue.get()
            started = time.monotonic()
            try:
                more = await self.sync(simulation_id)
            except LeadershipLostError:
                self.reconciles.observe("error", time.monotonic() - started)
                raise  # no retry: this process must stop acting at once (the daemon exits)
            except Exception as exc:  # noqa: BLE001 (a failed sync is retried with backoff, never fatal)
                self.reconciles.observe("error", time.monotonic() - started)
                delay = self.queue.add_rate_limited(simulation_id)
                fields = {"simulation_id": simulation_id, "error": type(exc).__name__, "detail": str(exc)[:300],
                          "retry_in_seconds": round(delay, 2)}
                if isinstance(exc, KubeError):
                    _log.warning("sync failed, retrying", **fields)
                else:
                    _log.error("sync failed, retrying", **fields, exc_info=True)
            else:
                self.reconciles.observe("requeue" if more else "success", time.monotonic() - started)
                self.queue.forget(simulation_id)
                if more:
                    self.queue.add(simulation_id)
            finally:
                self.queue.done(simulation_id)

    async def sync(self, simulation_id: str) -> bool:
        """Converge one simulation; whether work is left for another pass at once."""
        inventory = self.inventory
        if simulation_id not in inventory.simulations:
            return False
        # The pods still missing are created while the record is saved: they need only its first save
        # (their specs and Secrets), and a pass of creates then never waits behind a save.
        creating = self._start_creates(simulation_id)
        try:
            if inventory.needs_save(simulation_id):
                version, changed = inventory.take_changes(simulation_id)
                # A failed save raises here: the store writes everything on its next attempt.
                await self.records.save(inventory.simulations[simulation_id], changed)
                inventory.record_saved(simulation_id, version)
                self._acknowledge_saved()
                if inventory.receipts != self._session_record:
                    self._receipts_pending.set()  # deliveries recorded: their receipts go from the session record
            if creating is None:
                creating = self._start_creates(simulation_id)  # the first save made them possible
            for message in inventory.releasable(simulation_id):
                self._publish(message)
            await self._report_and_stop(simulation_id)
        finally:
            outcomes = await creating if creating is not None else []
        if failures := [outcome for outcome in outcomes if isinstance(outcome, BaseException)]:
            # Transient or not, the pods not made are tried again after the backoff; only their start
            # deadline fails them (-2).
            raise failures[0]
        if self._stopping:
            return False  # what is left is resumed from the record by the next daemon
        if inventory.cleanup_due(simulation_id, self.clock()):
            await self._clean_up(simulation_id)
            return False
        return len(outcomes) == self.settings.creates_per_sync

    async def _report_and_stop(self, simulation_id: str) -> None:
        """Steps 3 and 4: tell people about failures and restarts; stop or delete the pods decided on."""
        inventory = self.inventory
        if reports := inventory.take_reports(simulation_id):
            await asyncio.gather(*(self._report(report) for report in reports))
        for model_id in inventory.take_restarts(simulation_id):
            self.models_restarted += 1
            _log.warning("model restarted: its ReadyForProcessing was not heard since the broker connection",
                         simulation_id=simulation_id, model_id=model_id,
                         settle_seconds=self.settings.ready_settle_seconds)
        if self._stopping:
            return
        if stops := inventory.pods_to_stop(simulation_id):
            await asyncio.gather(*(self._stop(stop) for stop in stops))
        if deletes := inventory.pods_to_delete(simulation_id):
            await asyncio.gather(*(self._delete(delete) for delete in deletes))

    def _start_creates(self, simulation_id: str) -> asyncio.Future[list[BaseException | None]] | None:
        """Start a pass of creates (at most ``creates_per_sync``); ``None`` when there is nothing to create."""
        if self._stopping:
            return None
        if not (creates := self.inventory.pods_to_create(simulation_id, self.settings.creates_per_sync)):
            return None
        secret_for = self.records.secret_for(simulation_id)  # once a pass: it names the record's Secrets
        return asyncio.gather(*(self._create(create, secret_for) for create in creates), return_exceptions=True)

    # -- the steps

    def _publish(self, message: inv.Outgoing) -> None:
        match message.kind:
            case inv.MessageKind.MODELS_READY:
                _log.info("models ready", simulation_id=message.simulation_id)
                topic, payload = self.topics.models_ready(message.simulation_id), codec.encode_models_ready()
            case inv.MessageKind.MODEL_HAS_TERMINATED:
                # -4: the daemon cut the model short; the reason says why.
                log = _log.warning if message.exit_code == inv.EXIT_ENDED_EARLY else _log.info
                log("model terminated", simulation_id=message.simulation_id, model_id=message.model_id,
                    exit_code=message.exit_code, reason=message.reason)
                topic = self.topics.model_has_terminated(message.simulation_id, message.model_id)
                payload = codec.encode_model_has_terminated(message.exit_code)
            case inv.MessageKind.ALL_MODELS_HAVE_TERMINATED:
                _log.info("all models terminated", simulation_id=message.simulation_id)
                topic = self.topics.all_models_have_terminated(message.simulation_id)
                payload = codec.encode_all_models_have_terminated()

        self.outbox.send(message.packet_id, topic, payload, received=message.received,
                         on_received=lambda: self._received(message),
                         on_delivered=lambda: self._delivered(message))
        if message.received:
            self.outbox.release(message.packet_id)  # the record already holds its receipt

    def _delivered(self, message: inv.Outgoing) -> None:
        """The broker confirmed a lifecycle message (PUBCOMP): counted, and the inventory told."""
        self.lifecycle.delivered(message.kind.value, message.exit_code)
        if message.kind is inv.MessageKind.MODELS_READY and (
                deployed := self._deployed_at.pop(message.simulation_id, None)) is not None:
            self.lifecycle.models_ready.observe(max(0.0, self.clock() - deployed))
        self.apply([inv.Delivered(message)])

    async def _report(self, report: inv.FailureReport) -> None:
        lines: list[str] = []
        if report.read_log and self.settings.failed_log_tail_lines:
            try:
                text = await self.pods.read_log_tail(report.pod_name, self.settings.failed_log_tail_lines)
                lines = self.redactor.redact(text).splitlines()
            except KubeError as exc:  # the failure is still reported, without its log
                lines = [f"(log unavailable: {type(exc).__name__})"]
        _log.warning("model failed", simulation_id=report.simulation_id, model_id=report.model_id,
                     exit_code=report.exit_code, reason=report.reason, last_log_lines=lines)
        if self.settings.report_failures_as_error_occurred:
            message = f"Model {report.model_id} failed with exit code {report.exit_code}"
            message += f" ({report.reason})" if report.reason else ""
            if lines:
                message += ". Last log lines:\n" + "\n".join(lines)
            self.publisher.publish(self.topics.error_occurred(report.simulation_id, report.model_id),
                                   codec.encode_error_occurred(self.redactor.redact(message)))

    async def _stop(self, stop: inv.StopPod) -> None:
        marks = ownership_marks(self.settings.so, stop.simulator_id, stop.simulation_id, stop.model_id)
        if stop.delete:
            done = await self.pods.delete_own_pod(stop.pod_name, marks)
        else:
            done = await self.pods.stop_pod(stop.pod_name, marks)
        if not done:
            _log.warning("pod not stopped: gone, or not this model's", simulation_id=stop.simulation_id,
                         model_id=stop.model_id, pod=stop.pod_name)
        self.apply([inv.PodStopped(stop.simulation_id, stop.model_id)])

    async def _delete(self, delete: inv.DeletePod) -> None:
        marks = ownership_marks(self.settings.so, delete.simulator_id, delete.simulation_id, delete.model_id)
        await self.pods.delete_own_pod(delete.pod_name, marks)
        self.apply([inv.PodDeleted(delete.simulation_id, delete.model_id, delete.pod_name)])

    async def _create(self, create: inv.CreatePod, secret_for: Callable[[str], str]) -> None:
        spec = create.spec
        body = build_pod(
            settings=self.settings.pod_settings,
            simulator_id=create.simulator_id,
            simulation_id=create.simulation_id,
            model_id=spec.model_id,
            image=spec.image,
            env=spec.env,
            keep_logs_hours=create.keep_logs_hours,
            name=create.pod_name,
            group_size=create.group_size,
            is_secret=self.is_secret,
            secret_for=secret_for,
            service=create.service,
        )
        started = time.monotonic()
        try:
            result = await self.pods.create_pod(body, ownership_marks(
                self.settings.so, create.simulator_id, create.simulation_id, spec.model_id))
        except KubeError as exc:
            self.apply([inv.PodCreateFailed(create.simulation_id, spec.model_id, str(exc)[:500])])
            raise
        now = self.clock()
        if not result.created and result.status in _PASSING_CREATE_REFUSALS:
            self.apply([inv.PodCreateFailed(create.simulation_id, spec.model_id,
                                            f"{result.status} {result.reason}"[:500])])
            raise Forbidden(result.reason, what="create pod")
        if result.created:
            self.pods_created += 1
            self.create_latency.observe(time.monotonic() - started)
            self.apply([inv.PodCreated(create.simulation_id, spec.model_id, now)])
            return
        _log.warning("pod rejected", simulation_id=create.simulation_id, model_id=spec.model_id,
                     status=result.status, reason=result.reason[:500], pod=create.pod_name)
        self.apply([inv.PodCreateRejected(create.simulation_id, spec.model_id, f"{result.status} {result.reason}",
                                          now, result.name_taken)])

    async def _clean_up(self, simulation_id: str) -> None:
        simulation = self.inventory.simulations[simulation_id]
        _log.info("deleting finished simulation", simulation_id=simulation_id)
        await self._delete_pods(simulation_id)
        if self.settings.pod_settings.kueue_queue_name:
            # A group Kueue never admitted keeps its pods (Kueue's finalizer) until its Workload goes.
            await self.pods.delete_kueue_workload(simulation_key(self.settings.so, simulation_id),
                                                  {model.pod_name for model in simulation.models.values()})
        await self.records.delete(simulation_id)
        self.apply([inv.SimulationCleanedUp(simulation.simulation_id)])
        self._deployed_at.pop(simulation_id, None)
        for key in [key for key in self._pod_demands if key[0] == simulation_id]:
            del self._pod_demands[key]
        self._waiting_logged.discard(simulation_id)
        self._admission_wanted.set()  # what it held of the quota may be free now
        self._acknowledge_saved()
        # Its models' logs are no longer read: their secrets need not be remembered.
        self.redactor.forget(simulation_id)

    async def _delete_pods(self, simulation_id: str) -> None:
        """Delete the simulation's pods, and no other simulation's.

        The candidates (by the ``simulation_id`` label, which other ids may share) are told apart by their
        annotations. Ours that carry the simulation's key label go in one delete-collection by that label,
        unless some other pod carries it too (made by hand to look like ours): then, like the pods of an
        earlier version without the key, each goes on its own, if its annotations still say it is ours.
        """
        so = self.settings.so
        key = simulation_key(so, simulation_id)

        def seen(pod: dict[str, Any]) -> _Candidate | None:
            # Only a name and two answers past each page: ten thousand pods' metadata would be tens of MiB.
            candidate = _Candidate(pod["metadata"]["name"], of_simulation(pod, so, simulation_id),
                                   _labels(pod).get(LABEL_SIMULATION_KEY) == key)
            return candidate if candidate.ours or candidate.keyed else None

        candidates = await self.pods.list_pods(simulation_candidates_selector(so, simulation_id), seen)
        if any(candidate.keyed and not candidate.ours for candidate in candidates):
            one_by_one = [candidate.name for candidate in candidates if candidate.ours]
        else:
            one_by_one = [candidate.name for candidate in candidates if candidate.ours and not candidate.keyed]
            if any(candidate.keyed for candidate in candidates):
                await self.pods.delete_pods(simulation_pods_selector(so, simulation_id))
        marks = simulation_marks(so, simulation_id)
        await asyncio.gather(*(self.pods.delete_own_pod(name, marks) for name in one_by_one))

    # -- admission by the namespace's quota

    def _admission_applies(self) -> bool:
        """Whether a simulation deployed now waits for admission: a quota that holds our pods limits the
        namespace (or the quotas are not listed yet)."""
        if self.quota_api is None:
            return False
        return self.quotas is None or any(quota.applies and quota.hard for quota in self.quotas.values())

    def quotas_listed(self, quotas: Iterable[admission.Quota]) -> None:
        """A full list of the namespace's ResourceQuotas, from their watch."""
        self.quotas = {quota.name: quota for quota in quotas}
        self._admission_wanted.set()

    def quotas_changed(self, changes: Iterable[tuple[admission.Quota, bool]]) -> None:
        """ResourceQuotas that changed (``True``: deleted), from their watch: room may have come."""
        quotas = self.quotas if self.quotas is not None else {}
        for quota, gone in changes:
            if gone:
                quotas.pop(quota.name, None)
            else:
                quotas[quota.name] = quota
        self.quotas = quotas
        self._admission_wanted.set()

    def _pod_demand(self, simulation: inv.Simulation, image: str) -> admission.Resources:
        """What one pod of the simulation with that image takes of a quota, from the pod it would create (the
        settings' requests and limits, or those of the ModelService the image resolved to)."""
        key = (simulation.simulation_id, image)
        if (known := self._pod_demands.get(key)) is not None:
            return known
        body = build_pod(settings=self.settings.pod_settings, simulator_id=simulation.simulator_id,
                         simulation_id=simulation.simulation_id, model_id="demand", image=image, env=(),
                         keep_logs_hours=simulation.keep_logs_hours, is_secret=self.is_secret,
                         secret_for=lambda _value: "", service=simulation.services.get(image))
        demand = self._pod_demands[key] = admission.pod_demand(body)
        return demand

    def _demand(self, simulation: inv.Simulation) -> admission.Resources:
        """What the pods the simulation is still to create take of a quota."""
        return admission.added(*(admission.scaled(self._pod_demand(simulation, image), count)
                                 for image, count in self.inventory.models_to_create(simulation).items()))

    async def _admit(self) -> None:
        """Decide on the queue whenever something changed: a simulation queued, a quota changed, one of ours
        cleaned up. Each decision reads the quotas afresh: ``used`` counts every pod created before the read,
        and what admitted simulations are still to create is taken from the inventory just before it."""
        delay = self.settings.retry_base_seconds
        assert self.quota_api is not None
        while True:
            await self._admission_wanted.wait()
            self._admission_wanted.clear()
            if self._stopping or self.quotas is None or not self.inventory.queued():
                continue
            reserved = admission.added(*(self._demand(simulation) for simulation in self.inventory.simulations.values()
                                         if simulation.queued_at is None and simulation.finished_at is None))
            try:
                listed = await self.quota_api.list_quotas()
            except KubeError as exc:
                _log.warning("quotas unreadable, admission retried", error=type(exc).__name__, detail=str(exc)[:300],
                             retry_in_seconds=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                self._admission_wanted.set()
                continue
            delay = self.settings.retry_base_seconds
            self._decide([admission.read_quota(quota) for quota in listed], reserved)
            await asyncio.sleep(_ADMISSION_PAUSE_SECONDS)

    def _decide(self, quotas: list[admission.Quota], reserved: admission.Resources) -> None:
        queued = self.inventory.queued()
        verdicts = admission.decide([(simulation.simulation_id, self._demand(simulation)) for simulation in queued],
                                    quotas, reserved)
        now = self.clock()
        events: list[inv.Event] = []
        for position, simulation in enumerate(queued, start=1):
            simulation_id, queued_at = simulation.simulation_id, simulation.queued_at or now
            if simulation_id in verdicts.admitted:
                self._waiting_logged.discard(simulation_id)
                _log.info("simulation admitted", simulation_id=simulation_id, models=len(simulation.models),
                          waited_seconds=round(now - queued_at, 3))
                events.append(inv.Admitted(simulation_id, now))
            elif (reason := verdicts.never.get(simulation_id)) is not None:
                self._waiting_logged.discard(simulation_id)
                _log.warning("simulation can never fit the namespace's quota", simulation_id=simulation_id,
                             reason=reason, answer="FAILED -1 for each model")
                events.append(inv.AdmissionRefused(simulation_id, f"not admitted: {reason}", now))
            elif (note := verdicts.waiting.get(simulation_id)) is not None:
                if simulation_id not in self._waiting_logged:
                    self._waiting_logged.add(simulation_id)  # once: the quota changes with every pod
                    _log.info("simulation waits for room in the namespace's quota", simulation_id=simulation_id,
                              models=len(simulation.models), reason=note, queue_position=position)
                if note != simulation.waiting_note:
                    events.append(inv.AdmissionWaiting(simulation_id, note))
        self.apply(events)

    # -- shutting down

    async def drain(self, timeout: float) -> bool:
        """Stop starting new work; let the syncs save and publish what is decided. Whether all settled."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            dirty = [simulation_id for simulation_id in self.inventory.simulations
                     if self.inventory.needs_save(simulation_id)]
            for simulation_id in dirty:
                self.queue.add(simulation_id)
            if not dirty and self.queue.idle():
                return True
            await asyncio.sleep(0.02)
        return False

    # -- health and metrics

    def running_models(self) -> list[tuple[str, str]]:
        return [
            (simulation.simulation_id, model.model_id)
            for simulation in self.inventory.simulations.values()
            for model in simulation.models.values()
            if model.termination is None and model.container is ContainerState.RUNNING
        ]

    def simulations_by_phase(self) -> dict[str, int]:
        """``starting`` (no ModelsReady yet), ``running`` (ModelsReady decided), ``ended`` (every model's end
        decided; kept until its cleanup)."""
        counts = dict.fromkeys(SIMULATION_PHASES, 0)
        for simulation in self.inventory.simulations.values():
            if simulation.all_terminated is not inv.Delivery.NONE:
                counts["ended"] += 1
            elif simulation.models_ready is not inv.Delivery.NONE:
                counts["running"] += 1
            else:
                counts["starting"] += 1
        return counts

    def models_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(MODEL_STATES, 0)
        for simulation in self.inventory.simulations.values():
            for model in simulation.models.values():
                counts[_model_state(model)] += 1
        return counts

    async def _watch_model_health(self, interval: float) -> None:
        """Ping running models every interval; report those that stopped answering or progressing, once."""
        while True:
            await asyncio.sleep(interval)
            running = self.running_models()
            for verdict in self.model_health.check(running, self.clock()):
                _log.warning("model unhealthy", simulation_id=verdict.simulation_id, model_id=verdict.model_id,
                             reason=verdict.reason)
                self.publisher.publish(self.topics.unhealthy_model(verdict.simulation_id, verdict.model_id),
                                       codec.encode_unhealthy_model())
            ping = codec.encode_ping_model()
            for simulation_id, model_id in running:
                self.publisher.publish_volatile(self.topics.ping_model(simulation_id, model_id), ping)


def _model_state(model: inv.Model) -> str:
    if model.termination is not None:
        return "failed" if model.termination.failed else "succeeded"
    if model.ready:
        return "ready"
    if model.container is ContainerState.RUNNING:
        return "running"
    return "pending"


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    return labels
