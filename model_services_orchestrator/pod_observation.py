"""What a pod seen in the cluster says about its model, decoded once at the edge.

Pure: takes the pod as the JSON dict the API server sent (the watch hands us
raw JSON; building ``V1Pod`` objects for thousands of pods is needlessly
slow) and returns a small typed observation. Nothing past this module reads
Kubernetes pod objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from model_services_orchestrator.pod_specs import (
    ANNOTATION_MODEL_ID,
    ANNOTATION_SIMULATION_ID,
    ANNOTATION_SIMULATOR_ID,
    KUEUE_ADMISSION_GATE,
    KUEUE_GROUP_NAME,
    LABEL_KEEP_LOGS_HOURS,
)

__all__ = ["KUEUE_STOP_CONDITION", "ContainerState", "PodObservation", "observe_pod"]

#: The condition Kueue writes on each pod of a group it stops (preempted, evicted, deactivated) before
#: deleting it; its reason and message say why.
KUEUE_STOP_CONDITION = "TerminationTarget"


class ContainerState(Enum):
    """Where a model's container is, as far as the pod status tells."""

    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"
    LOST = "lost"  # the pod failed without a container exit (evicted, node lost)


@dataclass(frozen=True, slots=True)
class PodObservation:
    """One pod of ours as last seen."""

    pod_name: str
    simulator_id: str
    simulation_id: str
    model_id: str
    keep_logs_hours: float
    state: ContainerState
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    created_at: float | None = None
    deleting: bool = False
    # Kueue's pod groups: one of a group; held by scheduling gates (waiting for the group's admission);
    # why Kueue stopped it ("" while it did not).
    queued: bool = False
    gated: bool = False
    stopped_by_kueue: str = ""


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _float(value: object, default: float) -> float:
    try:
        return float(str(value))
    except ValueError:
        return default


def _container_state(pod: dict[str, Any]) -> tuple[ContainerState, str, str, int | None]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    if terminated := state.get("terminated"):
        code = terminated.get("exitCode")
        return (
            ContainerState.TERMINATED,
            terminated.get("reason") or "",
            terminated.get("message") or "",
            int(code) if code is not None else None,
        )
    if state.get("running"):
        return ContainerState.RUNNING, "", "", None
    phase = status.get("phase") or ""
    if phase in ("Failed", "Succeeded"):
        return ContainerState.LOST, status.get("reason") or phase, status.get("message") or "", None
    if waiting := state.get("waiting"):
        return ContainerState.WAITING, waiting.get("reason") or "", waiting.get("message") or "", None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return ContainerState.WAITING, condition.get("reason") or "", condition.get("message") or "", None
    return ContainerState.WAITING, "", "", None


def _kueue_stop(pod: dict[str, Any]) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == KUEUE_STOP_CONDITION and condition.get("status") == "True":
            return ": ".join(part for part in (condition.get("reason"), condition.get("message")) if part)
    return ""


def observe_pod(pod: dict[str, Any]) -> PodObservation | None:
    """The observation of a pod of ours; ``None`` for a pod that carries no model ids."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    # The exact ids are in our annotations only: labels are lower-cased or hashed stand-ins, and
    # a pod without the annotations is not ours to act on (PROTOCOL.md section 6).
    simulation_id = annotations.get(ANNOTATION_SIMULATION_ID)
    model_id = annotations.get(ANNOTATION_MODEL_ID)
    name = metadata.get("name")
    if not simulation_id or not model_id or not name:
        return None
    state, reason, message, exit_code = _container_state(pod)
    return PodObservation(
        pod_name=name,
        simulator_id=annotations.get(ANNOTATION_SIMULATOR_ID) or "",
        simulation_id=simulation_id,
        model_id=model_id,
        keep_logs_hours=_float(labels.get(LABEL_KEEP_LOGS_HOURS, "0"), 0.0),
        state=state,
        reason=reason,
        message=message,
        exit_code=exit_code,
        created_at=_timestamp(metadata.get("creationTimestamp")),
        deleting=bool(metadata.get("deletionTimestamp")),
        queued=KUEUE_GROUP_NAME in labels,
        # Kueue's own gate only: another's gate (a webhook of someone else) is waiting like any other, with its
        # start deadline.
        gated=any(gate.get("name") == KUEUE_ADMISSION_GATE for gate in (pod.get("spec") or {}).get("schedulingGates")
                  or ()),
        stopped_by_kueue=_kueue_stop(pod),
    )
