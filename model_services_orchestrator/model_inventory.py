"""The model inventory: every simulation and model the daemon runs, as a pure state machine.

``Inventory.handle(event)`` updates the state and says which simulations
changed. The state carries the decisions themselves: which pods are to be
created or stopped, which lifecycle messages are decided and whether the
broker confirmed them, when a simulation is due for its cleanup. The runtime
reads those decisions for one simulation at a time and makes the cluster and
the broker match them, like a Kubernetes controller's sync. No I/O, no clock,
no asyncio: time comes in with the events, so every decision can be tested
with plain tables and replayed after a restart.

The rules it enforces are the protocol's promises to the SO: ModelsReady
once, ModelHasTerminated once per model, AllModelsHaveTerminated once after
the last of them, and pods kept ``keepLogsHours`` after the end. A message is
decided in the state first; it may go out only once the record that holds
the decision is saved (``releasable``), and is marked delivered when the
broker confirms it, so a restarted daemon publishes what was decided and not
confirmed, and never decides anything twice.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from model_services_orchestrator.model_registry import Resolved
from model_services_orchestrator.packet_ids import PacketIds
from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import pod_name, restarted_pod_name, unique_pod_name

__all__ = [
    "EXIT_CREATE_REJECTED",
    "EXIT_ENDED_EARLY",
    "EXIT_POD_LOST",
    "EXIT_START_TIMEOUT",
    "AdmissionRefused",
    "AdmissionWaiting",
    "Admitted",
    "Connected",
    "CreatePod",
    "DeletePod",
    "Delivered",
    "Delivery",
    "DeployRequested",
    "EndRequested",
    "Event",
    "FailureReport",
    "Inventory",
    "ListStarted",
    "MessageKey",
    "MessageKind",
    "Model",
    "ModelSpec",
    "Outgoing",
    "Phase",
    "PodCreateFailed",
    "PodCreateRejected",
    "PodCreated",
    "PodDeleted",
    "PodGone",
    "PodListed",
    "PodSeen",
    "PodStopped",
    "ReadyReceived",
    "Received",
    "Simulation",
    "SimulationCleanedUp",
    "StopPod",
    "StopReason",
    "Termination",
    "Tick",
]

EXIT_CREATE_REJECTED = -1
EXIT_START_TIMEOUT = -2
EXIT_POD_LOST = -3
EXIT_ENDED_EARLY = -4

# Waiting reasons that no amount of waiting fixes.
_HOPELESS_WAITING_REASONS = frozenset({"InvalidImageName"})
# What registries answer (as containerd words it in ErrImagePull) when an image does not exist or may not
# be pulled: waiting does not change that answer. Timeouts, 5xx and rate limits are not among them.
_REFUSED_PULL_MARKERS = ("not found", "pull access denied", "repository does not exist", "manifest unknown",
                         "unauthorized")
# A refused pull is believed on its second answer: one answer could be a registry's passing confusion.
_REFUSED_PULLS_TO_FAIL = 2


def _pull_refused(reason: str, message: str) -> bool:
    lowered = message.lower()
    return reason == "ErrImagePull" and any(marker in lowered for marker in _REFUSED_PULL_MARKERS)


# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model as the SO asked for it."""

    model_id: str
    image: str
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Termination:
    """How a model ended, as reported (or about to be reported) to the SO."""

    exit_code: int
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.exit_code != 0


class Phase(Enum):
    """Where a model is in its life, as far as the daemon's own actions go."""

    PENDING = "pending"  # its pod is to be created (retried until its start deadline)
    CREATED = "created"  # the API server has (or had) its pod
    STOPPING = "stopping"  # ended by the daemon's decision: its pod is to be stopped in place
    ENDED = "ended"  # its termination is decided and nothing is left to do to its pod


class StopReason(IntEnum):
    """Why the daemon is to stop a model at its ``stop_at`` (recorded, so a restart keeps the deadline)."""

    NONE = 0
    ENDED_EARLY = 1  # the SO's simulation-wide SimulationDone
    UNHEARD = 2  # the SO's SimulationDone to a model whose ReadyForProcessing was not seen: it did not hear it
    FINISH_TIMEOUT = 3  # still running MODEL_FINISH_TIMEOUT_SECONDS after its SimulationDone


class Delivery(IntEnum):
    """How far a lifecycle message got. Recorded: a restarted daemon resends what is not DELIVERED."""

    NONE = 0
    DECIDED = 1  # in the state; goes out once the record holding it is saved
    DELIVERED = 2  # the broker confirmed it (PUBCOMP at QoS 2)


# Which message a receipt is of: (simulation, kind, model); a packet id alone may be given out again.
MessageKey = tuple[str, str, str]


class MessageKind(Enum):
    MODELS_READY = "ModelsReady"
    MODEL_HAS_TERMINATED = "ModelHasTerminated"
    ALL_MODELS_HAVE_TERMINATED = "AllModelsHaveTerminated"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A decided lifecycle message; ``version``: the record version that first holds the decision."""

    simulation_id: str
    kind: MessageKind
    version: int
    model_id: str = ""
    exit_code: int = 0
    reason: str = ""
    packet_id: int = 0  # its MQTT packet id, recorded with the decision
    received: bool = False  # the session record says the broker received it (PUBREC): only its PUBREL is left

    @property
    def key(self) -> MessageKey:
        return self.simulation_id, self.kind.value, self.model_id


@dataclass(frozen=True, slots=True)
class FailureReport:
    """Tell people why a model failed: the daemon's log, and today's SO through ErrorOccurred (best effort).

    ``read_log``: the container ran, so the tail of its log says more.
    """

    simulation_id: str
    model_id: str
    pod_name: str
    exit_code: int
    reason: str
    read_log: bool


@dataclass(frozen=True, slots=True)
class CreatePod:
    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    spec: ModelSpec
    pod_name: str
    service: Resolved | None = None  # what the model registry made of its image
    group_size: int = 0  # of the simulation's Kueue pod group


@dataclass(frozen=True, slots=True)
class DeletePod:
    """Delete a pod this model no longer uses (it was restarted under another name), if it is still ours."""

    simulator_id: str
    simulation_id: str
    model_id: str
    pod_name: str


@dataclass(frozen=True, slots=True)
class StopPod:
    """Stop a model's container and keep its pod, so its logs stay readable until the cleanup.

    ``delete``: the pod never reached a node, so there is nothing to keep and no kubelet to stop it.
    """

    simulator_id: str
    simulation_id: str
    model_id: str
    pod_name: str
    delete: bool = False


@dataclass(slots=True)
class Model:
    """One model of a simulation."""

    model_id: str
    pod_name: str
    spec: ModelSpec | None
    phase: Phase = Phase.PENDING
    has_pod: bool = False  # the API server has (or had) its pod
    # Not recorded: how many lists of pods had been started when ``has_pod`` was learnt. Only a pod known
    # before a list began can be in that list's snapshot, so only such a pod is gone when it is missing.
    pod_known_at_list: int = 0
    ready: bool = False  # ReadyForProcessing received
    container: ContainerState | None = None  # as last seen by the watch
    waiting_reason: str = ""
    waiting_message: str = ""
    refused_pulls: int = 0  # ErrImagePull answers saying the image does not exist or may not be pulled
    start_deadline: float | None = None  # not running by then: -2
    stop_at: float | None = None  # the daemon stops the model then, for ``stop_reason``
    stop_reason: StopReason = StopReason.NONE
    # Not recorded: when to restart the model if its ReadyForProcessing, lost while the daemon was away
    # from the broker, has not come again by then (set on each connection).
    ready_check_at: float | None = None
    restarted: bool = False  # its pod was deleted and made again under ``restarted_pod_name``; once only
    termination: Termination | None = None  # decided
    reported: bool = False  # its ModelHasTerminated was delivered
    packet_id: int = 0  # of its ModelHasTerminated


@dataclass(slots=True)
class Simulation:
    """One simulation: its models, what has been decided and said about it, and the work that is left."""

    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    models: dict[str, Model] = field(default_factory=dict)
    models_ready: Delivery = Delivery.NONE
    all_terminated: Delivery = Delivery.NONE
    models_ready_id: int = 0  # packet ids of the two simulation-wide messages
    all_terminated_id: int = 0
    finished_at: float | None = None  # when its last termination was decided
    # The SO sent SimulationDone (to a model, or to the simulation): it ended the simulation, and a
    # ModelsReady now would crash today's SO. Never sent after this.
    ended_by_so: bool = False
    # What the model registry made of its images at its DeployModels (by the SO's image): recorded, so a
    # ModelService changed later changes nothing here.
    services: dict[str, Resolved] = field(default_factory=dict)
    # How many models its first DeployModels named: the pod group Kueue admits whole (KUEUE_QUEUE_NAME).
    group_size: int = 0
    # Waiting for admission by the namespace's quota since then (``admission``): none of its pods is created,
    # and its models' start deadlines are not set. None: admitted (or never queued).
    queued_at: float | None = None
    # Book-keeping, not recorded:
    admitted_version: int = 0  # the version that holds its admission: no pod before that version is saved
    waiting_note: str = ""  # what it needs and what is free, as admission last found it
    version: int = 1  # bumped by every change of what the record holds
    saved_version: int = 0  # the version the cluster's record holds (0: none yet)
    # Changes that wait for the next save rather than make one: pods created, while more are being
    # created (a save per pass of creates would take the API server's time from the creates).
    lazy: bool = False
    changed: set[str] = field(default_factory=set)  # models whose record entry changed since last taken
    outgoing: deque[Outgoing] = field(default_factory=deque)  # decided, not yet released, in order
    to_create: dict[str, None] = field(default_factory=dict)  # models in PENDING with a spec, in order
    to_stop: dict[str, None] = field(default_factory=dict)  # models in STOPPING
    to_delete: dict[str, str] = field(default_factory=dict)  # a restarted model's earlier pod, by model
    restarts: list[str] = field(default_factory=list)  # models restarted since last taken (to be logged)
    # Packet ids of delivered messages, free once the version that records the delivery is saved.
    to_free: list[tuple[int, int]] = field(default_factory=list)
    models_ready_out: bool = False  # its ModelsReady handed out, not yet delivered
    reports: list[FailureReport] = field(default_factory=list)
    ready_count: int = 0
    terminated_count: int = 0
    reported_count: int = 0  # models whose ModelHasTerminated was delivered

    @property
    def waiting_admission(self) -> bool:
        """Queued and not finished (a queued simulation the SO ended finishes without ever being admitted)."""
        return self.queued_at is not None and self.finished_at is None

    def cleanup_at(self, min_delay_seconds: float) -> float | None:
        """When this simulation's pods are to be deleted; ``None`` while it runs."""
        if self.finished_at is None:
            return None
        return self.finished_at + max(self.keep_logs_hours * 3600.0, min_delay_seconds)


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DeployRequested:
    """A DeployModels; ``refused``: why it cannot run (some of its ids cannot be answered), and its other
    models, those listed, are answered FAILED -1 at once. ``services``: what the model registry made of its
    images; ``unknown``: images naming no ModelService, with why (their models are answered FAILED -1)."""

    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    models: tuple[ModelSpec, ...]
    now: float
    refused: str = ""
    services: Mapping[str, Resolved] = field(default_factory=dict)
    unknown: Mapping[str, str] = field(default_factory=dict)
    queued: bool = False  # the namespace's quota admits it: it waits for ``Admitted``


@dataclass(frozen=True, slots=True)
class Admitted:
    """The quota's headroom holds the whole queued simulation: its pods may be created, its start timeout runs."""

    simulation_id: str
    now: float


@dataclass(frozen=True, slots=True)
class AdmissionRefused:
    """The queued simulation needs more than the quota allows at all: every model FAILED -1 with ``reason``."""

    simulation_id: str
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class AdmissionWaiting:
    """Why the queued simulation still waits (what it needs, what is free): the reason of its -2 if its
    ``ADMISSION_TIMEOUT_SECONDS`` runs out."""

    simulation_id: str
    note: str


@dataclass(frozen=True, slots=True)
class PodCreated:
    simulation_id: str
    model_id: str
    now: float


@dataclass(frozen=True, slots=True)
class PodCreateFailed:
    """A create failed in a way that may pass (an API server restarting answers 403 until its caches fill):
    retried until the model's start deadline, whose -2 then gives this reason."""

    simulation_id: str
    model_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PodCreateRejected:
    """The API refused the pod for good; ``name_taken``: a pod of that name exists and is not this model's."""

    simulation_id: str
    model_id: str
    reason: str
    now: float
    name_taken: bool = False


@dataclass(frozen=True, slots=True)
class PodDeleted:
    """A restarted model's earlier pod was deleted (or found gone, or not ours)."""

    simulation_id: str
    model_id: str
    pod_name: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The daemon (re)connected to the broker: ReadyForProcessing sent while it was away may be lost."""

    now: float


@dataclass(frozen=True, slots=True)
class PodStopped:
    """The stop of a model's pod was carried out (or found unnecessary: the pod is gone or not ours)."""

    simulation_id: str
    model_id: str


@dataclass(frozen=True, slots=True)
class ReadyReceived:
    simulation_id: str
    model_id: str
    now: float


@dataclass(frozen=True, slots=True)
class PodSeen:
    observation: PodObservation
    now: float


@dataclass(frozen=True, slots=True)
class PodGone:
    simulation_id: str
    model_id: str
    pod_name: str
    now: float


@dataclass(frozen=True, slots=True)
class ListStarted:
    """A full list of our pods is about to be requested: its snapshot holds every pod known by now."""


@dataclass(frozen=True, slots=True)
class PodListed:
    """A full list of our pods: pods of simulations nobody knows are adopted, a pod known before the list
    was requested (``ListStarted``) and missing from it is gone."""

    observations: tuple[PodObservation, ...]
    now: float


@dataclass(frozen=True, slots=True)
class Delivered:
    """The broker confirmed a lifecycle message."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class Received:
    """The broker received a lifecycle message (PUBREC at QoS 2): recorded before its PUBREL may go."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class SimulationCleanedUp:
    simulation_id: str


@dataclass(frozen=True, slots=True)
class EndRequested:
    """The SO ended the simulation early (``model_id`` None), or told one model to finish (PROTOCOL.md
    section 4): the latter is a normal end, never a reason to stop the model."""

    simulation_id: str
    model_id: str | None
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


Event = (
    DeployRequested
    | Admitted
    | AdmissionRefused
    | AdmissionWaiting
    | PodCreated
    | PodCreateFailed
    | PodCreateRejected
    | PodStopped
    | PodDeleted
    | Connected
    | ReadyReceived
    | PodSeen
    | PodGone
    | ListStarted
    | PodListed
    | Delivered
    | Received
    | SimulationCleanedUp
    | EndRequested
    | Tick
)


# ---------------------------------------------------------------- the machine


class Inventory:
    """All simulations the daemon knows, and the rules that turn events into decisions."""

    def __init__(
        self, *, start_timeout_seconds: float, min_cleanup_delay_seconds: float, stop_grace_seconds: float = 30.0,
        max_keep_logs_hours: float = 168.0, so: str = "", finish_timeout_seconds: float = 3600.0,
        ready_settle_seconds: float = 10.0, admission_timeout_seconds: float | None = None,
        whole_groups: bool = False,
    ) -> None:
        self._finish_timeout = finish_timeout_seconds
        # Kueue's pod groups (KUEUE_QUEUE_NAME): a simulation's pods are admitted all or none, so one that can
        # never have its pod leaves the others gated for ever.
        self._whole_groups = whole_groups
        self._admission_timeout = admission_timeout_seconds
        #: How long each simulation waited for its admission (admitted, refused or timed out), to be taken.
        self.admission_waits: list[float] = []
        self._ready_settle = ready_settle_seconds
        self._so = so  # in the hash of a unique pod name: another SO in the namespace may run equal ids
        self.simulations: dict[str, Simulation] = {}
        # Deadlines as (time, sequence, simulation, model or None for the cleanup); entries that no
        # longer hold are dropped when they come up, so setting a deadline never scans anything.
        self._timers: list[tuple[float, int, str, str | None]] = []
        self._sequence = itertools.count()
        self._stop_grace = stop_grace_seconds
        self._start_timeout = start_timeout_seconds
        self._min_cleanup_delay = min_cleanup_delay_seconds
        self.max_keep_logs_hours = max_keep_logs_hours
        self._touched: set[str] = set()
        self._lists_started = 0
        self.packet_ids = PacketIds()
        # The broker's receipts (PUBREC) of messages whose delivery the records do not hold yet, kept in the
        # session record (``receipts``) before their PUBREL may go; ``_unwritten``: not in it yet.
        self.receipts: dict[int, MessageKey] = {}
        self._unwritten: set[int] = set()
        self._restored_receipts: dict[int, MessageKey] = {}

    # -- queries

    def model(self, simulation_id: str, model_id: str) -> Model | None:
        simulation = self.simulations.get(simulation_id)
        return simulation.models.get(model_id) if simulation else None

    def next_deadline(self) -> float | None:
        """The earliest time at which a ``Tick`` may change something."""
        while self._timers and not self._timer_holds(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def queued(self) -> list[Simulation]:
        """The simulations waiting for admission, first come first: those the SO has not ended meanwhile."""
        waiting = [simulation for simulation in self.simulations.values()
                   if simulation.waiting_admission and not simulation.ended_by_so]
        return sorted(waiting, key=lambda simulation: simulation.queued_at or 0.0)

    @staticmethod
    def models_to_create(simulation: Simulation) -> Counter[str]:
        """How many pods the simulation is still to create, by image (a ModelService may give an image its own
        resources): what it takes of a quota that ``used`` does not show yet."""
        return Counter(model.spec.image for model in simulation.models.values()
                       if model.phase is Phase.PENDING and model.spec is not None and model.termination is None
                       and model.stop_at is None)

    # -- what the runtime carries out for one simulation

    def needs_save(self, simulation_id: str) -> bool:
        simulation = self.simulations.get(simulation_id)
        return simulation is not None and (simulation.version > simulation.saved_version
                                           or (simulation.lazy and not simulation.to_create))

    def take_changes(self, simulation_id: str) -> tuple[int, set[str]]:
        """The version a save is to write and the models changed since the last call (lazy changes too)."""
        simulation = self.simulations[simulation_id]
        if simulation.lazy:
            simulation.lazy = False
            simulation.version += 1
        changed, simulation.changed = simulation.changed, set()
        return simulation.version, changed

    def record_saved(self, simulation_id: str, version: int) -> None:
        """The cluster's record now holds ``version``: what it decided may be published."""
        if (simulation := self.simulations.get(simulation_id)) is not None:
            simulation.saved_version = max(simulation.saved_version, version)
            if simulation.to_free:
                # The record says these were delivered: the broker holds them no more, their receipts can go.
                held = []
                for at, packet_id in simulation.to_free:
                    if at <= simulation.saved_version:
                        self._forget_packet_id(packet_id)
                    else:
                        held.append((at, packet_id))
                simulation.to_free = held

    def receipts_to_write(self) -> tuple[dict[int, MessageKey], list[int]]:
        """The receipts the session record is to hold, and those of them it does not hold yet."""
        return dict(self.receipts), sorted(self._unwritten)

    def receipts_written(self, packet_ids: Iterable[int]) -> None:
        """The session record holds these receipts: their PUBREL may go."""
        self._unwritten.difference_update(packet_ids)

    def restore_receipts(self, receipts: dict[int, MessageKey]) -> None:
        """The receipts the session record held at start-up; before any ``restore``."""
        self._restored_receipts = receipts

    def _forget_packet_id(self, packet_id: int) -> None:
        self.packet_ids.free(packet_id)
        self.receipts.pop(packet_id, None)
        self._unwritten.discard(packet_id)

    def releasable(self, simulation_id: str) -> list[Outgoing]:
        """Decided messages whose decision the saved record holds, in order; each is handed out once."""
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return []
        released: list[Outgoing] = []
        while simulation.outgoing and simulation.outgoing[0].version <= simulation.saved_version:
            message = simulation.outgoing[0]
            # Messages may go out on different sessions, which do not keep each other's order: a termination
            # waits for ModelsReady to be delivered, AllModelsHaveTerminated for every termination.
            if message.kind is MessageKind.MODEL_HAS_TERMINATED and simulation.models_ready_out:
                break
            if (message.kind is MessageKind.ALL_MODELS_HAVE_TERMINATED
                    and simulation.reported_count < simulation.terminated_count):
                break
            simulation.outgoing.popleft()
            if not (message.kind is MessageKind.MODELS_READY and simulation.ended_by_so):
                released.append(message)
                simulation.models_ready_out |= message.kind is MessageKind.MODELS_READY
        return released

    def pods_to_create(self, simulation_id: str, limit: int) -> list[CreatePod]:
        """Up to ``limit`` pods to create; none before the record (and the Secrets its pods need) exists."""
        simulation = self.simulations.get(simulation_id)
        if (simulation is None or simulation.saved_version == 0 or simulation.queued_at is not None
                or simulation.saved_version < simulation.admitted_version):
            return []
        creates: list[CreatePod] = []
        # A model the daemon is to stop anyway gets no pod now: it would never hear the SO.
        wanted = (model_id for model_id in simulation.to_create if simulation.models[model_id].stop_at is None)
        for model_id in itertools.islice(wanted, limit):
            model = simulation.models[model_id]
            assert model.spec is not None
            creates.append(CreatePod(simulation.simulator_id, simulation.simulation_id, simulation.keep_logs_hours,
                                     model.spec, model.pod_name, simulation.services.get(model.spec.image),
                                     simulation.group_size or len(simulation.models)))
        return creates

    def pods_to_stop(self, simulation_id: str) -> list[StopPod]:
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return []
        stops = []
        for model_id in simulation.to_stop:
            model = simulation.models[model_id]
            # A pod no node took has no logs to keep, and no kubelet would ever stop it.
            stops.append(StopPod(simulation.simulator_id, simulation.simulation_id, model_id, model.pod_name,
                                 delete=model.waiting_reason == "Unschedulable"))
        return stops

    def pods_to_delete(self, simulation_id: str) -> list[DeletePod]:
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return []
        return [DeletePod(simulation.simulator_id, simulation_id, model_id, name)
                for model_id, name in simulation.to_delete.items()]

    def take_restarts(self, simulation_id: str) -> list[str]:
        """The models restarted since the last call, for the log and the metrics."""
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return []
        restarts, simulation.restarts = simulation.restarts, []
        return restarts

    def take_reports(self, simulation_id: str) -> list[FailureReport]:
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return []
        reports, simulation.reports = simulation.reports, []
        return reports

    def cleanup_due(self, simulation_id: str, now: float) -> bool:
        """Whether its pods and record are to go now: everything said and confirmed, the logs kept long enough."""
        simulation = self.simulations.get(simulation_id)
        if simulation is None or simulation.all_terminated is not Delivery.DELIVERED:
            return False
        at = simulation.cleanup_at(self._min_cleanup_delay)
        return (at is not None and now >= at and not simulation.outgoing and not simulation.to_stop
                and simulation.saved_version == simulation.version and not simulation.lazy)

    # -- restoring

    def restore(self, simulation: Simulation, now: float) -> None:
        """Adopt a simulation rebuilt from its cluster record after a restart.

        The record was saved: what it decided and the broker did not confirm is
        released again, in the order it was decided in.
        """
        simulation.keep_logs_hours = self._keep_logs_hours(simulation.keep_logs_hours)
        simulation.saved_version = simulation.version
        simulation.ready_count = sum(1 for model in simulation.models.values() if model.ready)
        simulation.terminated_count = sum(1 for model in simulation.models.values() if model.termination)
        simulation.reported_count = sum(1 for model in simulation.models.values() if model.reported)
        sid = simulation.simulation_id
        self.simulations[sid] = simulation
        complete = bool(simulation.models)
        # A model refused -1 counts as ready (it holds up nothing) but never announced itself: a simulation
        # of refused models only never had its last ready, and gets no ModelsReady.
        announced = any(model.ready and not (model.termination is not None
                                             and model.termination.exit_code == EXIT_CREATE_REJECTED)
                        for model in simulation.models.values())
        if (simulation.models_ready is Delivery.NONE and not simulation.ended_by_so and complete and announced
                and simulation.ready_count == len(simulation.models)):
            # Killed between the last ready's save and the decision's: decided now, saved before it goes out.
            simulation.models_ready = Delivery.DECIDED
            self._changed(simulation)
        self._hold_packet_ids(simulation)
        if simulation.queued_at is not None:
            self._admission_timer(simulation)
        for model in simulation.models.values():
            if model.stop_at is not None and model.termination is None:
                self._timer(model.stop_at, sid, model.model_id)
            if model.phase is Phase.PENDING and simulation.queued_at is None:
                if model.spec is not None:
                    simulation.to_create[model.model_id] = None
                self._set_start_deadline(simulation, model, now)
            elif model.phase is Phase.STOPPING:
                simulation.to_stop[model.model_id] = None
        if (simulation.all_terminated is Delivery.NONE and complete
                and simulation.terminated_count == len(simulation.models)):
            # Every model's end is recorded, the simulation's is not: decided now, as the last termination's was.
            simulation.all_terminated = Delivery.DECIDED
            simulation.all_terminated_id = self.packet_ids.take()
            simulation.finished_at = now
            self._changed(simulation)
        self._queue_undelivered(simulation)
        if (at := simulation.cleanup_at(self._min_cleanup_delay)) is not None:
            self._timer(at, sid, None)

    def _hold_packet_ids(self, simulation: Simulation) -> None:
        """The ids the broker may still hold are taken before any new one is given out."""
        if simulation.models_ready is Delivery.DECIDED:
            simulation.models_ready_id = self._held(simulation, simulation.models_ready_id)
        if simulation.all_terminated is Delivery.DECIDED:
            simulation.all_terminated_id = self._held(simulation, simulation.all_terminated_id)
        for model in simulation.models.values():
            if model.termination is not None and not model.reported:
                held = self._held(simulation, model.packet_id)
                if held != model.packet_id:
                    model.packet_id = held
                    simulation.changed.add(model.model_id)

    def _queue_undelivered(self, simulation: Simulation) -> None:
        """What the record decided and the broker did not confirm, in the order it was decided in."""
        sid = simulation.simulation_id
        messages: list[Outgoing] = []
        if simulation.models_ready is Delivery.DECIDED and not simulation.ended_by_so:
            messages.append(Outgoing(sid, MessageKind.MODELS_READY, simulation.version,
                                     packet_id=simulation.models_ready_id))
        messages.extend(self._termination_message(simulation, model) for model in simulation.models.values()
                        if model.termination is not None and not model.reported)
        if simulation.all_terminated is Delivery.DECIDED:
            messages.append(Outgoing(sid, MessageKind.ALL_MODELS_HAVE_TERMINATED, simulation.version,
                                     packet_id=simulation.all_terminated_id))
        for message in messages:
            # Received by the broker in an earlier life, as the session record says: only its PUBREL is left.
            received = self._restored_receipts.get(message.packet_id) == message.key
            if received:
                self.receipts[message.packet_id] = message.key
            simulation.outgoing.append(dataclasses.replace(message, received=received))

    def _held(self, simulation: Simulation, packet_id: int) -> int:
        """A recorded id of an undelivered message, held; a record without one (an earlier version) gets one."""
        if packet_id and packet_id not in self.packet_ids:
            self.packet_ids.hold(packet_id)
            return packet_id
        # None recorded, or the same id in two records (impossible unless written by hand): a new one, saved
        # before its message goes out.
        self._changed(simulation)
        return self.packet_ids.take()

    # -- events

    def handle(self, event: Event) -> set[str]:  # noqa: PLR0912 (one arm per kind of event, nothing more)
        """Apply one event; the ids of the simulations that changed (to be synced)."""
        match event:
            case DeployRequested():
                self._deploy(event)
            case Admitted():
                self._admitted(event)
            case AdmissionRefused():
                self._admission_refused(event)
            case AdmissionWaiting():
                if (simulation := self.simulations.get(event.simulation_id)) is not None:
                    simulation.waiting_note = event.note
            case PodCreated():
                self._pod_created(event)
            case PodCreateFailed():
                self._create_failed(event)
            case PodCreateRejected():
                self._create_rejected(event)
            case PodStopped():
                self._pod_stopped(event)
            case PodDeleted():
                self._pod_deleted(event)
            case Connected():
                self._connected(event.now)
            case ReadyReceived():
                self._ready(event)
            case PodSeen():
                self._pod_seen(event.observation, event.now)
            case PodGone():
                self._pod_gone(event.simulation_id, event.model_id, event.pod_name, event.now)
            case ListStarted():
                self._lists_started += 1
            case PodListed():
                self._pod_listed(event)
            case Delivered():
                self._delivered(event.message)
            case Received():
                self._received(event.message)
            case SimulationCleanedUp():
                self._cleaned_up(event.simulation_id)
            case EndRequested():
                self._end_requested(event)
            case Tick():
                self._tick(event.now)
        touched, self._touched = self._touched, set()
        return touched

    def handle_all(self, events: Iterable[Event]) -> set[str]:
        touched: set[str] = set()
        for event in events:
            touched |= self.handle(event)
        return touched

    # -- rules

    def _changed(self, simulation: Simulation, model_id: str | None = None) -> None:
        """Something the record holds changed."""
        simulation.version += 1
        if model_id is not None:
            simulation.changed.add(model_id)
        self._touched.add(simulation.simulation_id)

    def _deploy(self, event: DeployRequested) -> None:
        existing = self.simulations.get(event.simulation_id)
        if existing is not None:
            self._deploy_again(existing, event)
            return
        simulation = Simulation(
            simulator_id=event.simulator_id,
            simulation_id=event.simulation_id,
            keep_logs_hours=self._keep_logs_hours(event.keep_logs_hours),
            services=dict(event.services),
            queued_at=event.now if event.queued and not event.refused else None,
        )
        names: set[str] = set()
        for spec in event.models:
            if spec.model_id in simulation.models:
                continue  # listed twice: one pod, one answer
            name = pod_name(event.simulator_id, event.simulation_id, spec.model_id)
            if name in names:  # ids that differ only in case or in where their hyphens are
                name = unique_pod_name(event.simulator_id, event.simulation_id, spec.model_id, self._so)
            names.add(name)
            model = simulation.models[spec.model_id] = Model(model_id=spec.model_id, pod_name=name, spec=spec)
            if simulation.queued_at is None:
                simulation.to_create[spec.model_id] = None
                self._set_start_deadline(simulation, model, event.now)
        self.simulations[event.simulation_id] = simulation
        if simulation.queued_at is not None:
            self._admission_timer(simulation)
        self._changed(simulation)
        simulation.changed.update(simulation.models)
        if event.refused:
            for model in simulation.models.values():
                self._refuse(simulation, model, f"simulation refused: {event.refused}", event.now)
        elif event.unknown:
            for model in list(simulation.models.values()):
                if model.spec is not None and (why := event.unknown.get(model.spec.image)) is not None:
                    self._refuse(simulation, model, why, event.now)
        # Kueue's pod group is the pods that will exist: a model refused here never has one.
        simulation.group_size = sum(1 for model in simulation.models.values() if model.spec is not None)

    def _admission_timer(self, simulation: Simulation) -> None:
        if self._admission_timeout is not None and simulation.queued_at is not None and simulation.finished_at is None:
            self._timer(simulation.queued_at + self._admission_timeout, simulation.simulation_id, None)

    def _leave_queue(self, simulation: Simulation, now: float) -> None:
        assert simulation.queued_at is not None
        self.admission_waits.append(max(0.0, now - simulation.queued_at))
        simulation.queued_at = None
        simulation.waiting_note = ""

    def _admitted(self, event: Admitted) -> None:
        simulation = self.simulations.get(event.simulation_id)
        if simulation is None or simulation.queued_at is None:
            return
        self._leave_queue(simulation, event.now)
        for model in simulation.models.values():
            if model.phase is Phase.PENDING and model.spec is not None and model.termination is None:
                simulation.to_create[model.model_id] = None
                # The start timeout counts from the admission: waiting in the queue is not starting.
                self._set_start_deadline(simulation, model, event.now)
        self._changed(simulation)
        simulation.admitted_version = simulation.version

    def _admission_refused(self, event: AdmissionRefused) -> None:
        simulation = self.simulations.get(event.simulation_id)
        if simulation is None or simulation.queued_at is None:
            return
        self._leave_queue(simulation, event.now)
        self._changed(simulation)
        for model in list(simulation.models.values()):
            self._terminate(simulation, model, Termination(EXIT_CREATE_REJECTED, event.reason), event.now)

    def _admission_timed_out(self, simulation: Simulation, now: float) -> None:
        assert self._admission_timeout is not None
        reason = f"not admitted within ADMISSION_TIMEOUT_SECONDS ({self._admission_timeout:g} s)"
        if simulation.waiting_note:
            reason += f": {simulation.waiting_note}"
        self._leave_queue(simulation, now)
        self._changed(simulation)
        for model in list(simulation.models.values()):
            self._terminate(simulation, model, Termination(EXIT_START_TIMEOUT, reason), now)

    def _deploy_again(self, simulation: Simulation, event: DeployRequested) -> None:
        """The one check for a repeated DeployModels: models already known are answered once, as they
        are; models it adds are answered at once (PROTOCOL.md section 5: every model named gets one)."""
        for spec in event.models:
            if spec.model_id in simulation.models:
                continue
            name = unique_pod_name(simulation.simulator_id, simulation.simulation_id, spec.model_id, self._so)
            model = simulation.models[spec.model_id] = Model(model_id=spec.model_id, pod_name=name, spec=None)
            self._refuse(simulation, model, "simulation already deployed: a second DeployModels cannot add models",
                         event.now)

    def _refuse(self, simulation: Simulation, model: Model, reason: str, now: float) -> None:
        """Answer a model that will never have a pod: FAILED -1, at once."""
        simulation.to_create.pop(model.model_id, None)
        model.spec = None
        # Ready in the sense that it holds up nothing: it will never send ReadyForProcessing.
        model.ready = True
        simulation.ready_count += 1
        self._terminate(simulation, model, Termination(EXIT_CREATE_REJECTED, reason), now)

    def _keep_logs_hours(self, requested: float) -> float:
        """The one clamp of keepLogsHours: never negative or NaN (0), never forever (inf or 1e308 would keep
        pods and records, and the daemon's memory of them)."""
        return 0.0 if math.isnan(requested) else min(max(requested, 0.0), self.max_keep_logs_hours)

    def start_timeout(self, simulation: Simulation, model: Model) -> float:
        """How long the model may take to start: its ModelService's startTimeoutSeconds, else the setting."""
        service = simulation.services.get(model.spec.image) if model.spec is not None else None
        if service is not None and service.start_timeout_seconds is not None:
            return service.start_timeout_seconds
        return self._start_timeout

    def _set_start_deadline(self, simulation: Simulation, model: Model, since: float) -> None:
        model.start_deadline = since + self.start_timeout(simulation, model)
        self._timer(model.start_deadline, simulation.simulation_id, model.model_id)

    def _move(self, simulation: Simulation, model: Model, phase: Phase, *, lazy: bool = False) -> None:
        """Set a model's phase, keeping the simulation's work lists in step."""
        if model.phase is phase:
            return
        if model.phase is Phase.PENDING:
            simulation.to_create.pop(model.model_id, None)
        elif model.phase is Phase.STOPPING:
            simulation.to_stop.pop(model.model_id, None)
        model.phase = phase
        if phase is Phase.STOPPING:
            simulation.to_stop[model.model_id] = None
        if lazy:
            simulation.lazy = True
            simulation.changed.add(model.model_id)
            self._touched.add(simulation.simulation_id)
        else:
            self._changed(simulation, model.model_id)

    def _pod_created(self, event: PodCreated) -> None:
        simulation = self.simulations.get(event.simulation_id)
        model = simulation.models.get(event.model_id) if simulation else None
        if simulation is not None and model is not None:
            self._pod_exists(simulation, model)  # unless the watch showed the pod first

    def _pod_exists(self, simulation: Simulation, model: Model) -> None:
        if model.has_pod:
            return
        model.has_pod = True
        model.pod_known_at_list = self._lists_started
        if model.phase is Phase.PENDING:
            # Saved with the next save, or once the simulation's creates are done: a pod the record does
            # not know yet is found by a restarted daemon's create (409, and ours) or its listing.
            self._move(simulation, model, Phase.CREATED, lazy=True)
        elif model.phase is Phase.ENDED and model.termination is not None and model.termination.exit_code in (
                EXIT_START_TIMEOUT, EXIT_ENDED_EARLY):
            # Ended by the daemon while its create was under way: the pod it got after all is stopped.
            self._move(simulation, model, Phase.STOPPING)
        else:
            self._changed(simulation, model.model_id)

    def _create_failed(self, event: PodCreateFailed) -> None:
        model = self.model(event.simulation_id, event.model_id)
        if model is not None and model.phase is Phase.PENDING:
            model.waiting_reason, model.waiting_message = "pod not created", event.reason

    def _create_rejected(self, event: PodCreateRejected) -> None:
        simulation = self.simulations.get(event.simulation_id)
        model = simulation.models.get(event.model_id) if simulation else None
        if simulation is None or model is None or model.phase is not Phase.PENDING:
            return
        unique = unique_pod_name(simulation.simulator_id, simulation.simulation_id, model.model_id, self._so)
        if event.name_taken and model.pod_name != unique:
            # Another model's pod, or someone else's: never ours to take over. Try the name of these exact ids.
            model.pod_name = unique
            self._touched.add(simulation.simulation_id)
            return
        self._terminate(simulation, model, Termination(EXIT_CREATE_REJECTED, f"pod rejected: {event.reason}"),
                        event.now)
        self._group_incomplete(simulation, model, event.now)

    def _group_incomplete(self, simulation: Simulation, lost: Model, now: float) -> None:
        """With Kueue's pod groups, a model that will never have a pod keeps its group from ever being admitted:
        the others, none of which can have started, are answered -1 at once (their gated pods stopped and kept)
        rather than wait for ever."""
        if not self._whole_groups:
            return
        reason = f"Kueue's pod group can never be complete: model {lost.model_id} has no pod"
        for model in list(simulation.models.values()):
            if model.termination is None and model.phase in (Phase.PENDING, Phase.CREATED) and not model.ready:
                self._terminate(simulation, model, Termination(EXIT_CREATE_REJECTED, reason), now, stop=True)

    def _pod_stopped(self, event: PodStopped) -> None:
        simulation = self.simulations.get(event.simulation_id)
        model = simulation.models.get(event.model_id) if simulation else None
        if simulation is not None and model is not None and model.phase is Phase.STOPPING:
            self._move(simulation, model, Phase.ENDED)

    def _ready(self, event: ReadyReceived) -> None:
        simulation = self.simulations.get(event.simulation_id)
        model = simulation.models.get(event.model_id) if simulation else None
        if simulation is None or model is None or model.ready:
            return
        model.ready = True
        simulation.ready_count += 1
        self._changed(simulation, model.model_id)
        if (simulation.models_ready is Delivery.NONE and not simulation.ended_by_so
                and simulation.ready_count == len(simulation.models)):
            simulation.models_ready = Delivery.DECIDED
            simulation.models_ready_id = self.packet_ids.take()
            simulation.version += 1
            simulation.outgoing.append(Outgoing(simulation.simulation_id, MessageKind.MODELS_READY,
                                                simulation.version, packet_id=simulation.models_ready_id))

    def _pod_seen(self, seen: PodObservation, now: float) -> bool:
        """Take in what a pod of a known model shows; whether it is the model's pod."""
        simulation = self.simulations.get(seen.simulation_id)
        model = simulation.models.get(seen.model_id) if simulation else None
        if simulation is None or model is None:
            return False
        if not _is_pod_of(model, seen, self._so):
            if model.restarted and not seen.deleting and seen.pod_name in _first_names(seen, self._so):
                # The pod it had before its restart, still there (the daemon was killed before deleting it).
                simulation.to_delete[model.model_id] = seen.pod_name
                self._touched.add(simulation.simulation_id)
            return False
        self._pod_exists(simulation, model)
        if model.container is None and seen.state is not ContainerState.RUNNING:
            # First seen since the connection, not running: it had sent nothing while the daemon was away.
            model.ready_check_at = None
        model.container = seen.state
        if model.termination is not None:
            return True
        if seen.stopped_by_kueue:
            # Preempted or evicted: Kueue stops the whole group, each pod with this reason.
            self._terminate(simulation, model, Termination(
                EXIT_POD_LOST, f"stopped by Kueue: {seen.stopped_by_kueue}"), now)
            return True
        match seen.state:
            case ContainerState.TERMINATED:
                code = seen.exit_code if seen.exit_code is not None else EXIT_POD_LOST
                self._terminate(simulation, model, Termination(code, seen.reason), now, ran=True)
            case ContainerState.LOST:
                self._terminate(simulation, model, Termination(
                    EXIT_POD_LOST, f"pod ended without its container: {seen.reason}"), now)
            case _ if seen.deleting:
                self._terminate(simulation, model, Termination(
                    EXIT_POD_LOST, "pod deleted before its container ended"), now)
            case ContainerState.RUNNING:
                model.start_deadline = None
                model.waiting_reason = ""
                model.waiting_message = ""
            case ContainerState.WAITING if seen.gated:
                # Waiting for Kueue to admit its group: no start deadline until the gates go.
                model.start_deadline = None
                model.waiting_reason, model.waiting_message = "SchedulingGated", "waiting for Kueue's admission"
            case ContainerState.WAITING:
                self._waiting(simulation, model, seen, now)
        return True

    def _waiting(self, simulation: Simulation, model: Model, seen: PodObservation, now: float) -> None:
        if _pull_refused(seen.reason, seen.message) and model.waiting_reason != seen.reason:
            model.refused_pulls += 1  # a new answer of the registry, not the same status seen again
        model.waiting_reason = seen.reason
        model.waiting_message = seen.message
        if model.start_deadline is None:
            # A pod of a Kueue group may have waited long at its gates: it counts from when it is seen ungated.
            since = now if seen.queued or seen.created_at is None else seen.created_at
            self._set_start_deadline(simulation, model, since)
        if seen.reason in _HOPELESS_WAITING_REASONS or model.refused_pulls >= _REFUSED_PULLS_TO_FAIL:
            self._fail_start(simulation, model, now)

    def _pod_gone(self, simulation_id: str, model_id: str, name: str, now: float) -> None:
        simulation = self.simulations.get(simulation_id)
        model = simulation.models.get(model_id) if simulation else None
        if simulation is None or model is None:
            return
        if model.restarted and name != model.pod_name:
            if simulation.to_delete.get(model_id) == name:
                del simulation.to_delete[model_id]
            return  # its pod from before the restart
        model.container = None
        if model.phase is Phase.STOPPING:
            self._move(simulation, model, Phase.ENDED)  # nothing left to stop
        if model.termination is None:
            self._terminate(simulation, model, Termination(
                EXIT_POD_LOST, "pod deleted before its container ended"), now)

    def _pod_listed(self, event: PodListed) -> None:
        # Pods of simulations no record describes; pods on their way out (a cleanup) are not orphans.
        self._adopt([seen for seen in event.observations if seen.simulation_id not in self.simulations
                     and not seen.deleting])
        listed: set[tuple[str, str]] = set()
        for seen in event.observations:
            if self._pod_seen(seen, event.now):
                listed.add((seen.simulation_id, seen.model_id))
        for simulation in list(self.simulations.values()):
            for model in list(simulation.models.values()):
                # A pod learnt of after the list was requested may be younger than its snapshot: the watch
                # that resumes from the list's resourceVersion shows its changes, a deletion included.
                if (model.has_pod and model.pod_known_at_list < self._lists_started
                        and model.phase in (Phase.CREATED, Phase.STOPPING)
                        and (simulation.simulation_id, model.model_id) not in listed):
                    self._pod_gone(simulation.simulation_id, model.model_id, model.pod_name, event.now)
        for simulation in list(self.simulations.values()):
            for model in list(simulation.models.values()):
                if model.phase is Phase.PENDING and model.spec is None:
                    # Restored without its spec (its Secret lost): it can never be created.
                    self._terminate(simulation, model, Termination(
                        EXIT_CREATE_REJECTED, "pod never created and its request is lost"), event.now)
                    self._group_incomplete(simulation, model, event.now)

    def _adopt(self, observations: Iterable[PodObservation]) -> None:
        """Take in pods of ours that no record describes (the record was deleted by hand).

        What was already said to the SO is unknown, so the adopted simulation
        claims ModelsReady as delivered: a second one would restart the SO's
        simulation, a missing one only leaves models unreported as ready.
        """
        for seen in observations:
            simulation = self.simulations.get(seen.simulation_id)
            if simulation is None:
                simulation = self.simulations[seen.simulation_id] = Simulation(
                    simulator_id=seen.simulator_id,
                    simulation_id=seen.simulation_id,
                    keep_logs_hours=self._keep_logs_hours(seen.keep_logs_hours),
                    models_ready=Delivery.DELIVERED,
                )
            if seen.model_id in simulation.models:
                continue
            simulation.models[seen.model_id] = Model(model_id=seen.model_id, pod_name=seen.pod_name, spec=None,
                                                     phase=Phase.CREATED, has_pod=True, ready=True)
            simulation.ready_count += 1
            self._changed(simulation, seen.model_id)

    def _received(self, message: Outgoing) -> None:
        if message.simulation_id not in self.simulations or not message.packet_id:
            return
        # Written already (a broker that lost our session received it again): released with the next write.
        self.receipts[message.packet_id] = message.key
        self._unwritten.add(message.packet_id)

    def _cleaned_up(self, simulation_id: str) -> None:
        simulation = self.simulations.pop(simulation_id, None)
        if simulation is None:
            return
        # Only the ids it still holds: a delivered message's id was freed, and may now be another's.
        held = [packet_id for _, packet_id in simulation.to_free]
        if simulation.models_ready is Delivery.DECIDED:
            held.append(simulation.models_ready_id)
        if simulation.all_terminated is Delivery.DECIDED:
            held.append(simulation.all_terminated_id)
        held.extend(model.packet_id for model in simulation.models.values()
                    if model.termination is not None and not model.reported)
        for packet_id in held:
            if packet_id:
                self._forget_packet_id(packet_id)

    def _delivered(self, message: Outgoing) -> None:
        simulation = self.simulations.get(message.simulation_id)
        if simulation is None:
            return
        if message.packet_id:
            simulation.to_free.append((simulation.version + 1, message.packet_id))
        match message.kind:
            case MessageKind.MODELS_READY:
                simulation.models_ready = Delivery.DELIVERED
                simulation.models_ready_out = False
                self._changed(simulation)
            case MessageKind.ALL_MODELS_HAVE_TERMINATED:
                simulation.all_terminated = Delivery.DELIVERED
                self._changed(simulation)
                if (at := simulation.cleanup_at(self._min_cleanup_delay)) is not None:
                    self._timer(at, simulation.simulation_id, None)
            case MessageKind.MODEL_HAS_TERMINATED:
                model = simulation.models.get(message.model_id)
                if model is not None and not model.reported:
                    model.reported = True
                    simulation.reported_count += 1
                    self._changed(simulation, model.model_id)

    def _end_requested(self, event: EndRequested) -> None:
        simulation = self.simulations.get(event.simulation_id)
        if simulation is None:
            return
        if not simulation.ended_by_so:
            simulation.ended_by_so = True
            self._changed(simulation)
        if event.model_id is None or simulation.queued_at is not None:
            # Ended as a whole, or while it waits for admission: ended by the SO, it is never admitted, and
            # none of its models can hear anything (no pod): each is answered after the grace.
            for each in simulation.models.values():
                self._stop_later(simulation, each, event.now + self._stop_grace, StopReason.ENDED_EARLY)
            return
        if (model := simulation.models.get(event.model_id)) is None:
            return
        if model.ready:
            # The normal end: the model writes its results and exits on its own, which may take minutes.
            self._stop_later(simulation, model, event.now + self._finish_timeout, StopReason.FINISH_TIMEOUT)
        else:
            # It subscribes just before it announces itself, and the SO's SimulationDone is QoS 0 and not
            # retained: a model not yet heard from cannot have heard it, and would run for ever.
            self._stop_later(simulation, model, event.now + self._stop_grace, StopReason.UNHEARD)

    def _stop_later(self, simulation: Simulation, model: Model, at: float, reason: StopReason) -> None:
        """Stop the model at ``at`` unless it ends before, or an earlier stop is already set."""
        if model.termination is not None or (model.stop_at is not None and model.stop_at <= at):
            return
        model.stop_at, model.stop_reason = at, reason
        self._timer(at, simulation.simulation_id, model.model_id)
        self._changed(simulation, model.model_id)

    def _connected(self, now: float) -> None:
        for simulation in self.simulations.values():
            if simulation.models_ready is not Delivery.NONE or simulation.ended_by_so:
                continue
            for model in simulation.models.values():
                if _may_restart(model, unseen_too=True):
                    model.ready_check_at = now + self._ready_settle
                    self._timer(model.ready_check_at, simulation.simulation_id, model.model_id)

    def _restart_unheard(self, simulation: Simulation, model: Model, now: float) -> None:
        """Its ReadyForProcessing, sent while the daemon was away, is lost: a new pod announces it again."""
        if simulation.models_ready is not Delivery.NONE or simulation.ended_by_so or not _may_restart(model):
            return
        simulation.to_delete[model.model_id] = model.pod_name
        model.restarted = True
        model.pod_name = restarted_pod_name(simulation.simulator_id, simulation.simulation_id, model.model_id,
                                            self._so)
        model.has_pod = False
        model.container = None
        self._move(simulation, model, Phase.PENDING)
        simulation.to_create[model.model_id] = None
        self._set_start_deadline(simulation, model, now)
        simulation.restarts.append(model.model_id)
        self._changed(simulation, model.model_id)

    def _pod_deleted(self, event: PodDeleted) -> None:
        simulation = self.simulations.get(event.simulation_id)
        if simulation is not None and simulation.to_delete.get(event.model_id) == event.pod_name:
            del simulation.to_delete[event.model_id]

    def _fail_start(self, simulation: Simulation, model: Model, now: float) -> None:
        reason = model.waiting_reason or ("pod not created" if model.phase is Phase.PENDING else "not started")
        if model.waiting_message:
            reason += f": {model.waiting_message}"
        self._terminate(simulation, model, Termination(EXIT_START_TIMEOUT, f"container did not start: {reason}"),
                        now, stop=True)

    def _tick(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._timer_holds(timer):
                continue
            _, _, simulation_id, model_id = timer
            simulation = self.simulations[simulation_id]
            if model_id is None:
                if simulation.waiting_admission:
                    self._admission_timed_out(simulation, now)
                self._touched.add(simulation_id)  # the cleanup is due, or the queue's wait is over
                continue
            model = simulation.models[model_id]
            at = timer[0]
            if at == model.stop_at:
                self._terminate(simulation, model, Termination(EXIT_ENDED_EARLY, self._stop_text(model)), now,
                                stop=True)
            elif at == model.ready_check_at:
                model.ready_check_at = None
                self._restart_unheard(simulation, model, now)
            else:
                self._fail_start(simulation, model, now)

    def _timer(self, at: float, simulation_id: str, model_id: str | None) -> None:
        heapq.heappush(self._timers, (at, next(self._sequence), simulation_id, model_id))

    def _timer_holds(self, timer: tuple[float, int, str, str | None]) -> bool:
        at, _, simulation_id, model_id = timer
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return False
        if model_id is None:
            if simulation.waiting_admission:
                assert simulation.queued_at is not None
                return self._admission_timeout is not None and simulation.queued_at + self._admission_timeout == at
            return simulation.cleanup_at(self._min_cleanup_delay) == at
        model = simulation.models.get(model_id)
        if model is None or model.termination is not None:
            return False
        return at in (model.stop_at, model.start_deadline, model.ready_check_at)

    def _stop_text(self, model: Model) -> str:
        match model.stop_reason:
            case StopReason.UNHEARD:
                return ("ended by the SO before it announced itself, so it never heard SimulationDone; "
                        "still running after the grace period")
            case StopReason.FINISH_TIMEOUT:
                return (f"still running {self._finish_timeout:g} s after the SO's SimulationDone "
                        "(MODEL_FINISH_TIMEOUT_SECONDS)")
            case _:
                return "simulation ended early; still running after the grace period"

    def _terminate(self, simulation: Simulation, model: Model, termination: Termination, now: float, *,
                   ran: bool = False, stop: bool = False, report: bool = True) -> None:
        """Decide how a model ended. ``stop``: its pod may still run and is to be stopped in place."""
        if model.termination is not None:
            return
        model.termination = termination
        model.packet_id = self.packet_ids.take()
        model.start_deadline = None
        simulation.terminated_count += 1
        if stop and model.has_pod:
            self._move(simulation, model, Phase.STOPPING)
        else:
            self._move(simulation, model, Phase.ENDED)
        self._changed(simulation, model.model_id)
        simulation.outgoing.append(self._termination_message(simulation, model))
        if report and termination.failed and termination.exit_code != EXIT_ENDED_EARLY:
            simulation.reports.append(FailureReport(simulation.simulation_id, model.model_id, model.pod_name,
                                                    termination.exit_code, termination.reason, read_log=ran))
        if simulation.all_terminated is Delivery.NONE and simulation.terminated_count == len(simulation.models):
            simulation.all_terminated = Delivery.DECIDED
            simulation.all_terminated_id = self.packet_ids.take()
            simulation.finished_at = now
            simulation.outgoing.append(Outgoing(simulation.simulation_id, MessageKind.ALL_MODELS_HAVE_TERMINATED,
                                                simulation.version, packet_id=simulation.all_terminated_id))

    @staticmethod
    def _termination_message(simulation: Simulation, model: Model) -> Outgoing:
        assert model.termination is not None
        return Outgoing(simulation.simulation_id, MessageKind.MODEL_HAS_TERMINATED, simulation.version,
                        model.model_id, model.termination.exit_code, model.termination.reason,
                        packet_id=model.packet_id)


def _may_restart(model: Model, *, unseen_too: bool = False) -> bool:
    """Running, unheard, restartable: its pod can be made again, and never was.

    ``unseen_too``: a pod the watch has not shown since this process started (a restored record, the first
    list still on its way) may be running too, so it is checked once the settle time has passed."""
    running = model.container is ContainerState.RUNNING or (unseen_too and model.container is None)
    return (not model.ready and model.termination is None and not model.restarted and model.spec is not None
            and model.phase is Phase.CREATED and running and model.stop_at is None)


def _first_names(seen: PodObservation, so: str) -> tuple[str, ...]:
    """The names a model's pod may have before any restart (the last: an earlier version's unique name)."""
    return (pod_name(seen.simulator_id, seen.simulation_id, seen.model_id),
            unique_pod_name(seen.simulator_id, seen.simulation_id, seen.model_id, so),
            unique_pod_name(seen.simulator_id, seen.simulation_id, seen.model_id))


def _is_pod_of(model: Model, seen: PodObservation, so: str) -> bool:
    """Whether the pod seen is the model's; its name is then the model's pod name from now on.

    The pod carries the model's exact ids (from our annotations) and one of the names it may have been
    created with: after a restart the record does not say which (the unique name without the SO is an
    earlier version's). Any other pod is a stranger.
    """
    if model.pod_name != seen.pod_name:
        if model.restarted or seen.pod_name not in _first_names(seen, so):
            return False
        model.pod_name = seen.pod_name
    return True
