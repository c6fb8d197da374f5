"""The model inventory: every simulation and model the daemon runs, as a pure state machine.

``Inventory.handle(event)`` updates the state and returns the effects to
carry out (create a pod, publish a lifecycle message, save the cluster
record...) as data. No I/O, no clock, no asyncio: time comes in with the
events, so every decision can be tested with plain tables and replayed after
a restart. The rules it enforces are the protocol's promises to the SO:
ModelsReady once, ModelHasTerminated once per model, AllModelsHaveTerminated
once after the last of them, and pods kept ``keepLogsHours`` after the end.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from model_services_orchestrator.pod_observation import ContainerState, PodObservation
from model_services_orchestrator.pod_specs import pod_name, unique_pod_name

__all__ = [
    "EXIT_CREATE_REJECTED",
    "EXIT_ENDED_EARLY",
    "EXIT_POD_LOST",
    "EXIT_START_TIMEOUT",
    "CreatePod",
    "DeleteSimulation",
    "DeployRequested",
    "Effect",
    "EndRequested",
    "Event",
    "Inventory",
    "Model",
    "ModelSpec",
    "PodCreateRejected",
    "PodCreated",
    "PodGone",
    "PodListed",
    "PodSeen",
    "PublishAllModelsHaveTerminated",
    "PublishModelHasTerminated",
    "PublishModelsReady",
    "ReadyReceived",
    "ReportFailure",
    "SaveRecord",
    "Simulation",
    "SimulationCleanedUp",
    "StopModelPod",
    "Termination",
    "Tick",
    "handle_all",
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


@dataclass(slots=True)
class Model:
    """One model of a simulation."""

    model_id: str
    pod_name: str
    spec: ModelSpec | None
    created: bool = False  # the API server has the pod (or had it)
    creating: bool = False  # a create is under way (not kept across restarts)
    ready: bool = False  # ReadyForProcessing received
    container: ContainerState | None = None  # as last seen by the watch
    waiting_reason: str = ""
    waiting_message: str = ""
    refused_pulls: int = 0  # ErrImagePull answers saying the image does not exist or may not be pulled
    started_waiting_at: float | None = None
    deleting: bool = False  # we stopped the pod ourselves (or are deleting it): its end is no news
    stop_at: float | None = None  # ended early: the end of its grace period
    termination: Termination | None = None  # reported to the SO


@dataclass(slots=True)
class Simulation:
    """One simulation: its models and what has been said about it to the SO."""

    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    models: dict[str, Model] = field(default_factory=dict)
    models_ready_sent: bool = False
    all_terminated_sent: bool = False
    finished_at: float | None = None
    cleaning: bool = False
    changed: set[str] = field(default_factory=set)  # models whose recorded state changed since the last save
    ready_count: int = 0  # models with ready set; kept by the inventory, so no decision scans all models
    terminated_count: int = 0  # models with a termination

    def recount(self) -> None:
        self.ready_count = sum(1 for model in self.models.values() if model.ready)
        self.terminated_count = sum(1 for model in self.models.values() if model.termination is not None)

    def cleanup_at(self, min_delay_seconds: float) -> float | None:
        """When this simulation's pods are to be deleted; ``None`` while it runs or to keep them forever."""
        if self.finished_at is None or not math.isfinite(self.keep_logs_hours):
            return None
        return self.finished_at + max(self.keep_logs_hours * 3600.0, min_delay_seconds)


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DeployRequested:
    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    models: tuple[ModelSpec, ...]
    now: float


@dataclass(frozen=True, slots=True)
class PodCreated:
    simulation_id: str
    model_id: str
    now: float


@dataclass(frozen=True, slots=True)
class PodCreateRejected:
    """The API refused the pod; ``name_taken``: a pod of that name exists and is not this model's."""

    simulation_id: str
    model_id: str
    reason: str
    now: float
    name_taken: bool = False


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
class PodListed:
    """A full list of our pods arrived, as (simulation id, model id): a created pod missing from it is gone."""

    models: frozenset[tuple[str, str]]
    now: float


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
    | PodCreated
    | PodCreateRejected
    | ReadyReceived
    | PodSeen
    | PodGone
    | PodListed
    | SimulationCleanedUp
    | EndRequested
    | Tick
)


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SaveRecord:
    """Persist the simulation's record.

    ``urgent``: before anything that follows it is published or created. Other
    changes (a pod seen, a model ready) may be saved a moment later, together.
    """

    simulation_id: str
    urgent: bool = True


@dataclass(frozen=True, slots=True)
class CreatePod:
    simulator_id: str
    simulation_id: str
    keep_logs_hours: float
    spec: ModelSpec
    pod_name: str


@dataclass(frozen=True, slots=True)
class StopModelPod:
    """Stop a model's container and keep its pod, so its logs stay readable until the cleanup.

    ``delete``: the pod never reached a node, so there is nothing to keep and no kubelet to stop it.
    """

    simulator_id: str
    simulation_id: str
    model_id: str
    pod_name: str
    delete: bool = False


@dataclass(frozen=True, slots=True)
class DeleteSimulation:
    """Delete every pod of the simulation, then its record."""

    simulator_id: str
    simulation_id: str


@dataclass(frozen=True, slots=True)
class PublishModelsReady:
    simulation_id: str


@dataclass(frozen=True, slots=True)
class PublishModelHasTerminated:
    simulation_id: str
    model_id: str
    exit_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PublishAllModelsHaveTerminated:
    simulation_id: str


@dataclass(frozen=True, slots=True)
class ReportFailure:
    """Tell people why a model failed: the daemon's log, and today's SO through ErrorOccurred.

    ``read_log``: the container ran, so the tail of its log says more.
    """

    simulation_id: str
    model_id: str
    pod_name: str
    exit_code: int
    reason: str
    read_log: bool


Effect = (
    SaveRecord
    | CreatePod
    | StopModelPod
    | DeleteSimulation
    | PublishModelsReady
    | PublishModelHasTerminated
    | PublishAllModelsHaveTerminated
    | ReportFailure
)


# ---------------------------------------------------------------- the machine


class Inventory:
    """All simulations the daemon knows, and the rules that turn events into effects."""

    def __init__(
        self, *, start_timeout_seconds: float, min_cleanup_delay_seconds: float, stop_grace_seconds: float = 30.0,
        max_keep_logs_hours: float = 168.0,
    ) -> None:
        self.simulations: dict[str, Simulation] = {}
        # Deadlines as (time, sequence, simulation, model or None for the cleanup); entries that no
        # longer hold are dropped when they come up, so setting a deadline never scans anything.
        self._timers: list[tuple[float, int, str, str | None]] = []
        self._sequence = itertools.count()
        self._stop_grace = stop_grace_seconds
        self._start_timeout = start_timeout_seconds
        self._min_cleanup_delay = min_cleanup_delay_seconds
        self.max_keep_logs_hours = max_keep_logs_hours

    # -- queries

    def model(self, simulation_id: str, model_id: str) -> Model | None:
        simulation = self.simulations.get(simulation_id)
        return simulation.models.get(model_id) if simulation else None

    def next_deadline(self) -> float | None:
        """The earliest time at which a ``Tick`` may change something."""
        while self._timers and not self._timer_holds(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def _timer(self, at: float, simulation_id: str, model_id: str | None) -> None:
        heapq.heappush(self._timers, (at, next(self._sequence), simulation_id, model_id))

    def _timer_holds(self, timer: tuple[float, int, str, str | None]) -> bool:
        at, _, simulation_id, model_id = timer
        simulation = self.simulations.get(simulation_id)
        if simulation is None:
            return False
        if model_id is None:
            return not simulation.cleaning and simulation.cleanup_at(self._min_cleanup_delay) == at
        model = simulation.models.get(model_id)
        if model is None or model.termination is not None:
            return False
        return at in (model.stop_at,
                      None if model.started_waiting_at is None else model.started_waiting_at + self._start_timeout)

    def _start_waiting(self, simulation_id: str, model: Model, since: float) -> None:
        model.started_waiting_at = since
        self._timer(since + self._start_timeout, simulation_id, model.model_id)

    # -- restoring

    def restore(self, simulation: Simulation) -> None:
        """Adopt a simulation rebuilt from its cluster record after a restart."""
        simulation.recount()
        simulation.keep_logs_hours = min(simulation.keep_logs_hours, self.max_keep_logs_hours)
        self.simulations[simulation.simulation_id] = simulation
        if (at := simulation.cleanup_at(self._min_cleanup_delay)) is not None:
            self._timer(at, simulation.simulation_id, None)

    def adopt(self, observations: Iterable[PodObservation]) -> None:
        """Take in pods of ours that no record describes (the record was deleted by hand).

        What was already said to the SO is unknown, so the adopted simulation
        claims ModelsReady as sent: a second one would restart the SO's
        simulation, a missing one only leaves models unreported as ready.
        """
        for seen in observations:
            if self.model(seen.simulation_id, seen.model_id) is not None:
                continue
            simulation = self.simulations.setdefault(seen.simulation_id, Simulation(
                simulator_id=seen.simulator_id,
                simulation_id=seen.simulation_id,
                keep_logs_hours=min(seen.keep_logs_hours, self.max_keep_logs_hours),
                models_ready_sent=True,
            ))
            simulation.models[seen.model_id] = Model(
                model_id=seen.model_id, pod_name=seen.pod_name, spec=None, created=True, ready=True)
            simulation.ready_count += 1
            simulation.changed.add(seen.model_id)

    # -- events

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; return what has to be done about it, in order."""
        match event:
            case DeployRequested():
                return self._deploy(event)
            case PodCreated():
                return self._pod_created(event)
            case PodCreateRejected():
                if (rejected := self.model(event.simulation_id, event.model_id)) is not None:
                    rejected.creating = False
                    unique = unique_pod_name(self.simulations[event.simulation_id].simulator_id,
                                             event.simulation_id, event.model_id)
                    if event.name_taken and rejected.pod_name != unique:
                        # Another model's pod, or someone else's: never ours to take over.
                        rejected.pod_name = unique
                        return self._create(self.simulations[event.simulation_id], rejected)
                return self._terminate(event.simulation_id, event.model_id, Termination(
                    EXIT_CREATE_REJECTED, f"pod rejected: {event.reason}"), event.now)
            case ReadyReceived():
                return self._ready(event)
            case PodSeen():
                return self._pod_seen(event.observation, event.now)
            case PodGone():
                return self._pod_gone(event.simulation_id, event.model_id, event.now)
            case PodListed():
                return self._pod_listed(event)
            case SimulationCleanedUp():
                self._forget(event.simulation_id)
                return []
            case EndRequested():
                return self._end_requested(event)
            case Tick():
                return self._tick(event.now)

    def _deploy(self, event: DeployRequested) -> list[Effect]:
        if event.simulation_id in self.simulations:
            # A repeated request: the pods exist or are being made; answering again would confuse the SO.
            return []
        keep = event.keep_logs_hours if not math.isnan(event.keep_logs_hours) else 0.0
        simulation = Simulation(
            simulator_id=event.simulator_id,
            simulation_id=event.simulation_id,
            # Never forever: inf or 1e308 would keep pods and records, and the daemon's memory of them.
            keep_logs_hours=min(max(keep, 0.0), self.max_keep_logs_hours),
        )
        names: set[str] = set()
        for spec in event.models:
            if spec.model_id in simulation.models:
                continue  # listed twice: one pod, one answer
            name = pod_name(event.simulator_id, event.simulation_id, spec.model_id)
            if name in names:  # ids that differ only in case or in where their hyphens are
                name = unique_pod_name(event.simulator_id, event.simulation_id, spec.model_id)
            names.add(name)
            simulation.models[spec.model_id] = Model(model_id=spec.model_id, pod_name=name, spec=spec)
        self.simulations[event.simulation_id] = simulation
        effects: list[Effect] = [SaveRecord(event.simulation_id)]
        for model in simulation.models.values():
            effects += self._create(simulation, model)
        return effects

    def _create(self, simulation: Simulation, model: Model) -> list[Effect]:
        if model.spec is None or model.creating or model.created or simulation.cleaning:
            return []
        model.creating = True
        return [CreatePod(simulation.simulator_id, simulation.simulation_id, simulation.keep_logs_hours, model.spec,
                          model.pod_name)]

    def _pod_created(self, event: PodCreated) -> list[Effect]:
        model = self.model(event.simulation_id, event.model_id)
        if model is None or model.created:
            return []
        model.created = True
        model.creating = False
        self.simulations[event.simulation_id].changed.add(event.model_id)
        if model.container is None:
            model.container = ContainerState.WAITING
            self._start_waiting(event.simulation_id, model, event.now)
        return [SaveRecord(event.simulation_id, urgent=False)]

    def _ready(self, event: ReadyReceived) -> list[Effect]:
        simulation = self.simulations.get(event.simulation_id)
        model = simulation.models.get(event.model_id) if simulation else None
        if simulation is None or model is None or model.ready:
            return []
        model.ready = True
        simulation.ready_count += 1
        simulation.changed.add(model.model_id)
        if not simulation.models_ready_sent and simulation.ready_count == len(simulation.models):
            simulation.models_ready_sent = True
            return [SaveRecord(simulation.simulation_id), PublishModelsReady(simulation.simulation_id)]
        return [SaveRecord(simulation.simulation_id, urgent=False)]

    def _pod_seen(self, seen: PodObservation, now: float) -> list[Effect]:
        model = self.model(seen.simulation_id, seen.model_id)
        if model is None or not _is_pod_of(model, seen):
            return []
        effects: list[Effect] = []
        if not model.created:
            model.created = True
            self.simulations[seen.simulation_id].changed.add(seen.model_id)
            effects.append(SaveRecord(seen.simulation_id, urgent=False))
        model.container = seen.state
        if model.termination is not None:
            return effects
        match seen.state:
            case ContainerState.TERMINATED:
                code = seen.exit_code if seen.exit_code is not None else EXIT_POD_LOST
                return effects + self._terminate(
                    seen.simulation_id, seen.model_id, Termination(code, seen.reason), now, ran=True
                )
            case ContainerState.LOST:
                return effects + self._terminate(seen.simulation_id, seen.model_id, Termination(
                    EXIT_POD_LOST, f"pod ended without its container: {seen.reason}"), now)
            case _ if seen.deleting and not model.deleting:
                return effects + self._terminate(seen.simulation_id, seen.model_id, Termination(
                    EXIT_POD_LOST, "pod deleted before its container ended"), now)
            case ContainerState.RUNNING:
                model.started_waiting_at = None
                model.waiting_reason = ""
            case ContainerState.WAITING:
                if _pull_refused(seen.reason, seen.message) and model.waiting_reason != seen.reason:
                    model.refused_pulls += 1  # a new answer of the registry, not the same status seen again
                model.waiting_reason = seen.reason
                model.waiting_message = seen.message
                if model.started_waiting_at is None:
                    self._start_waiting(seen.simulation_id, model, seen.created_at if seen.created_at is not None
                                        else now)
                if seen.reason in _HOPELESS_WAITING_REASONS or model.refused_pulls >= _REFUSED_PULLS_TO_FAIL:
                    return effects + self._fail_start(seen.simulation_id, model, now)
        return effects

    def _pod_gone(self, simulation_id: str, model_id: str, now: float) -> list[Effect]:
        model = self.model(simulation_id, model_id)
        if model is None or model.termination is not None:
            return []
        model.container = None
        if model.deleting:
            return []
        return self._terminate(simulation_id, model_id, Termination(
            EXIT_POD_LOST, "pod deleted before its container ended"), now)

    def _pod_listed(self, event: PodListed) -> list[Effect]:
        effects: list[Effect] = []
        for simulation in list(self.simulations.values()):
            for model in list(simulation.models.values()):
                if (simulation.simulation_id, model.model_id) in event.models or model.termination is not None:
                    continue
                if model.created:
                    effects += self._pod_gone(simulation.simulation_id, model.model_id, event.now)
                elif model.spec is not None:
                    effects += self._create(simulation, model)
                else:
                    effects += self._terminate(simulation.simulation_id, model.model_id, Termination(
                        EXIT_CREATE_REJECTED, "pod never created and its request is lost"), event.now)
        return effects

    def _end_requested(self, event: EndRequested) -> list[Effect]:
        simulation = self.simulations.get(event.simulation_id)
        if simulation is None or event.model_id is not None:
            # The SO's per-model SimulationDone is the normal end: the model writes its results and
            # exits on its own, which may take minutes. Only the simulation-wide request ends early.
            return []
        for model in simulation.models.values():
            if model.termination is None and model.stop_at is None:
                model.stop_at = event.now + self._stop_grace
                self._timer(model.stop_at, simulation.simulation_id, model.model_id)
        return []

    def _fail_start(self, simulation_id: str, model: Model, now: float) -> list[Effect]:
        reason = model.waiting_reason or "not started"
        if model.waiting_message:
            reason += f": {model.waiting_message}"
        effects: list[Effect] = self._terminate(simulation_id, model.model_id, Termination(
            EXIT_START_TIMEOUT, f"container did not start: {reason}"), now)
        return effects + self._stop(simulation_id, model)

    def _stop(self, simulation_id: str, model: Model) -> list[Effect]:
        model.deleting = True
        # A pod no node took has no logs to keep, and no kubelet would ever stop it.
        unscheduled = model.waiting_reason == "Unschedulable"
        return [StopModelPod(self.simulations[simulation_id].simulator_id, simulation_id, model.model_id,
                             model.pod_name, delete=unscheduled)]

    def _tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._timer_holds(timer):
                continue
            _, _, simulation_id, model_id = timer
            simulation = self.simulations[simulation_id]
            if model_id is None:
                simulation.cleaning = True
                for model in simulation.models.values():
                    model.deleting = True
                effects.append(DeleteSimulation(simulation.simulator_id, simulation.simulation_id))
                continue
            model = simulation.models[model_id]
            if model.stop_at is not None and now >= model.stop_at:
                effects += self._terminate(simulation_id, model_id, Termination(
                    EXIT_ENDED_EARLY, "simulation ended early; still running after the grace period"), now)
                effects += self._stop(simulation_id, model)
            else:
                effects += self._fail_start(simulation_id, model, now)
        return effects

    def _terminate(
        self, simulation_id: str, model_id: str, termination: Termination, now: float, *, ran: bool = False
    ) -> list[Effect]:
        simulation = self.simulations.get(simulation_id)
        model = simulation.models.get(model_id) if simulation else None
        if simulation is None or model is None or model.termination is not None:
            return []
        model.termination = termination
        model.started_waiting_at = None
        simulation.terminated_count += 1
        simulation.changed.add(model_id)
        effects: list[Effect] = [SaveRecord(simulation_id), PublishModelHasTerminated(
            simulation_id, model_id, termination.exit_code, termination.reason)]
        if termination.failed and termination.exit_code != EXIT_ENDED_EARLY:
            effects.append(ReportFailure(
                simulation_id, model_id, model.pod_name, termination.exit_code, termination.reason, read_log=ran))
        if not simulation.all_terminated_sent and simulation.terminated_count == len(simulation.models):
            simulation.all_terminated_sent = True
            simulation.finished_at = now
            if (at := simulation.cleanup_at(self._min_cleanup_delay)) is not None:
                self._timer(at, simulation_id, None)
            effects.append(PublishAllModelsHaveTerminated(simulation_id))
        return effects

    def _forget(self, simulation_id: str) -> None:
        self.simulations.pop(simulation_id, None)


def _is_pod_of(model: Model, seen: PodObservation) -> bool:
    """Whether the pod seen is the model's; its name is then the model's pod name from now on.

    The pod carries the model's exact ids (from our annotations) and one of the two names it may have
    been created with: after a restart the record does not say which. Any other pod is a stranger.
    """
    if model.pod_name != seen.pod_name:
        names = (pod_name(seen.simulator_id, seen.simulation_id, seen.model_id),
                 unique_pod_name(seen.simulator_id, seen.simulation_id, seen.model_id))
        if seen.pod_name not in names:
            return False
        model.pod_name = seen.pod_name
    return True


def handle_all(inventory: Inventory, events: Iterable[Event]) -> list[Effect]:
    """Apply events in order and return all their effects, in order."""
    effects: list[Effect] = []
    for event in events:
        effects.extend(inventory.handle(event))
    return effects
