"""What the control-plane kubelet writes to the API: pure functions building Node, Binding and pod status
objects the way a real kubelet (and the scheduler, for the Unschedulable condition) writes them.

Kept free of I/O so that the rules (the pod phase, the conditions, the DeadlineExceeded and
ContainerStatusUnknown details) can be unit-tested without a server, see
``test/control_plane/test_kubelet_units.py``. Status objects are sent as JSON merge patches of
``pods/status``: lists (conditions, containerStatuses) are replaced whole, and a ``None`` value removes a
field (``reason``/``message`` of an earlier write).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .images import full_reference

__all__ = [
    "DEADLINE_MESSAGE",
    "DEADLINE_REASON",
    "DEFAULT_CAPACITY",
    "LOST_MESSAGE",
    "LOST_REASON",
    "NODE_IP",
    "NODE_LABELS",
    "NODE_NAME",
    "Obj",
    "binding",
    "condition",
    "container_status",
    "deadline_at",
    "delete_options",
    "exit_code_of",
    "image_id",
    "killed_status",
    "log_unavailable_message",
    "lost",
    "new_container_id",
    "node_labels",
    "node_manifest",
    "node_names",
    "node_selector_matches",
    "node_status",
    "parse_time",
    "pod_phase",
    "pod_status",
    "pull_backoff_message",
    "restart_backoff_message",
    "rfc3339",
    "running",
    "running_status",
    "terminated",
    "unschedulable_status",
    "waiting",
]

Obj = dict[str, Any]

DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
# What a real kubelet reports for a container of a terminal pod that never ran or whose process it lost.
LOST_REASON = "ContainerStatusUnknown"
LOST_MESSAGE = "The container could not be located when the pod was terminated"

NODE_NAME = "local-node"
#: What a node offers unless told otherwise: more than any test or benchmark asks for.
DEFAULT_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "10000", "ephemeral-storage": "1Ti"}


def node_labels(name: str) -> dict[str, str]:
    """The labels of one of the kubelet's nodes: all are workers, each its own host."""
    return {"type": "worker", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}


def node_names(count: int) -> list[str]:
    """The kubelet's nodes: ``local-node``, then ``local-node-2``, ``local-node-3``..."""
    return [NODE_NAME, *(f"{NODE_NAME}-{index}" for index in range(2, count + 1))]


NODE_LABELS = node_labels(NODE_NAME)
NODE_IP = "127.0.0.1"
_UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes "
    "are available: 1 Preemption is not helpful for scheduling."
)

_TERMINAL_PHASES = ("Succeeded", "Failed")
_SIGKILL_EXIT = 137


# ---------------------------------------------------------------------------------------------- basics

def rfc3339(seconds: float) -> str:
    """A timestamp as Kubernetes writes them (second precision, UTC, ``Z``)."""
    return _timestamp(int(seconds))


@functools.lru_cache(maxsize=64)
def _timestamp(seconds: int) -> str:  # thousands of pods a second share a handful of timestamps
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> float | None:
    """A Kubernetes timestamp (``2024-05-01T10:00:00Z``, fractions allowed) as epoch seconds; None if absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def new_container_id() -> str:
    """A containerd-style container ID (64 hex digits)."""
    return f"containerd://{os.urandom(32).hex()}"


@functools.lru_cache(maxsize=1024)
def image_id(image: str) -> str:
    """The ``imageID`` a runtime reports once the image is pulled (a stable fake digest)."""
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{full_reference(image).rsplit(':', 1)[0]}@sha256:{digest}"


def node_selector_matches(spec: Mapping[str, Any]) -> bool:
    """Whether the pod's nodeSelector and required node affinity accept ``local-node``."""
    if any(NODE_LABELS.get(key) != value for key, value in (spec.get("nodeSelector") or {}).items()):
        return False
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if not affinity:
        return True
    return any(_term_matches(term) for term in affinity.get("nodeSelectorTerms") or [])


def _term_matches(term: Mapping[str, Any]) -> bool:
    for expression in term.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        present = key in NODE_LABELS
        value = NODE_LABELS.get(str(key))
        ok = {
            "In": present and value in (expression.get("values") or []),
            "NotIn": not present or value not in (expression.get("values") or []),
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(operator), False)
        if not ok:
            return False
    return bool(term.get("matchExpressions"))


def exit_code_of(returncode: int) -> int:
    """The exit code a container runtime reports: a process killed by signal N exits 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


# ---------------------------------------------------------------------------------------------- container states

def waiting(reason: str, message: str | None = None) -> Obj:
    """A ``state`` with ``waiting``."""
    entry: Obj = {"reason": reason}
    if message:
        entry["message"] = message
    return {"waiting": entry}


def running(started_at: float) -> Obj:
    """A ``state`` with ``running``."""
    return {"running": {"startedAt": rfc3339(started_at)}}


def terminated(exit_code: int, *, started_at: float | str | None, finished_at: float, container_id: str,
               reason: str | None = None, message: str | None = None) -> Obj:
    """A ``state`` with ``terminated``; the reason defaults to ``Completed`` for 0, ``Error`` otherwise."""
    started = started_at if isinstance(started_at, str) else rfc3339(started_at) if started_at is not None else None
    entry: Obj = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}
    if message:
        entry["message"] = message
    entry["startedAt"] = started
    entry["finishedAt"] = rfc3339(finished_at)
    if container_id:
        entry["containerID"] = container_id
    return {"terminated": entry}


def lost(finished_at: float) -> Obj:
    """The state of a container in a terminal pod that never ran (or whose process is gone)."""
    return {"terminated": {"exitCode": _SIGKILL_EXIT, "reason": LOST_REASON, "message": LOST_MESSAGE,
                           "startedAt": None, "finishedAt": rfc3339(finished_at)}}


def container_status(*, name: str, image: str, state: Obj, last_state: Obj | None = None, restart_count: int = 0,
                     pulled: bool = True, container_id: str = "") -> Obj:
    """One ``containerStatuses`` entry (no probes: a running container is ready and started)."""
    is_running = "running" in state
    entry: Obj = {
        "name": name,
        "state": state,
        "lastState": last_state or {},
        "ready": is_running,
        "restartCount": restart_count,
        "image": _reported_image(image) if pulled else image,
        "imageID": image_id(image) if pulled else "",
        "started": is_running,
    }
    if container_id:
        entry["containerID"] = container_id
    return entry


@functools.lru_cache(maxsize=1024)
def _reported_image(image: str) -> str:
    """The image as containerd reports a pulled one: the full reference (``docker.io/library/x:tag``)."""
    return image if "@" in image else full_reference(image)


# ---------------------------------------------------------------------------------------------- pod phase and status

def pod_phase(restart_policy: str, statuses: Sequence[Mapping[str, Any]], *, terminal: bool) -> str:
    """The phase from the container statuses, as the kubelet's ``getPhase`` computes it (no init containers).

    ``terminal``: the kubelet has stopped the pod for good (deleted, deadline): containers will not restart.
    """
    states = [(entry.get("state") or {}, entry.get("lastState") or {}) for entry in statuses]
    running_count = sum(1 for state, _ in states if "running" in state)
    ended = [state["terminated"] for state, _ in states if "terminated" in state]
    restarting = sum(1 for state, last in states if "waiting" in state and "terminated" in last)
    waiting_count = len(states) - running_count - len(ended) - restarting
    stopped = len(ended) + restarting  # a container waiting to restart counts as stopped, as in getPhase
    succeeded = sum(1 for entry in ended if entry.get("exitCode") == 0)
    if waiting_count:
        return "Pending"
    if running_count:
        return "Running"
    if not stopped:
        return "Pending"
    if terminal:
        return "Succeeded" if stopped == succeeded else "Failed"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"  # OnFailure: the failed ones restart


def condition(old_conditions: Iterable[Mapping[str, Any]], kind: str, status: str, *, now: float,
              reason: str | None = None, message: str | None = None, generation: int | None = None) -> Obj:
    """A pod condition; ``lastTransitionTime`` is kept from the old one of that type if the status is the same."""
    previous = next((c for c in old_conditions if c.get("type") == kind), None)
    transition = (previous.get("lastTransitionTime") if previous and previous.get("status") == status else None) \
        or rfc3339(now)
    entry: Obj = {"type": kind, "status": status}
    if generation is not None:
        entry["observedGeneration"] = generation
    entry["lastProbeTime"] = None
    entry["lastTransitionTime"] = transition
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    return entry


def _readiness(statuses: Sequence[Mapping[str, Any]], phase: str) -> tuple[str, str | None, str | None]:
    if phase in _TERMINAL_PHASES:
        return "False", "PodCompleted", None
    unready = [str(s.get("name")) for s in statuses if not s.get("ready")]
    if not unready:
        return "True", None, None
    return "False", "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"


def pod_status(*, old_conditions: Iterable[Mapping[str, Any]], statuses: list[Obj], restart_policy: str,
               start_time: float, now: float, generation: int | None = None, terminal: bool = False,
               reason: str | None = None, message: str | None = None) -> Obj:
    """The whole status of a bound pod as the kubelet writes it.

    ``reason``/``message`` (``DeadlineExceeded``) force the phase to Failed. ``reason`` and ``message`` are
    always present (``None`` removes an earlier value under a merge patch).
    """
    old = list(old_conditions)
    phase = "Failed" if reason == DEADLINE_REASON else pod_phase(restart_policy, statuses, terminal=terminal)
    ready, ready_reason, ready_message = _readiness(statuses, phase)
    done = phase in _TERMINAL_PHASES

    def make(kind: str, value: str, why: str | None = None, text: str | None = None) -> Obj:
        return condition(old, kind, value, now=now, reason=why, message=text, generation=generation)

    scheduled = next((c for c in old if c.get("type") == "PodScheduled"), None)
    status: Obj = {
        "phase": phase,
        "conditions": [
            make("PodReadyToStartContainers", "False" if done else "True"),
            make("Initialized", "True"),
            make("Ready", ready, ready_reason, ready_message),
            make("ContainersReady", ready, ready_reason, ready_message),
            dict(scheduled) if scheduled and scheduled.get("status") == "True" else make("PodScheduled", "True"),
        ],
        "reason": reason,
        "message": message,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": NODE_IP,
        "podIPs": [{"ip": NODE_IP}],
        "startTime": rfc3339(start_time),
        "containerStatuses": statuses,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def running_status(pod: Mapping[str, Any], *, now: float) -> Obj:
    """Status-only mode: the pod as if every container had started at once (one write after the binding)."""
    spec = pod.get("spec") or {}
    statuses = [container_status(name=str(c["name"]), image=str(c["image"]), state=running(now),
                                 container_id=new_container_id()) for c in spec.get("containers") or []]
    generation = (pod.get("metadata") or {}).get("generation")
    return pod_status(old_conditions=(pod.get("status") or {}).get("conditions") or [], statuses=statuses,
                      restart_policy=str(spec.get("restartPolicy", "Always")), start_time=now, now=now,
                      generation=generation if isinstance(generation, int) else None)


def killed_status(pod: Mapping[str, Any], *, now: float, exit_code: int, reason: str | None = None,
                  message: str | None = None) -> Obj | None:
    """Status-only mode: the pod's current status with its running containers ended by ``exit_code`` (and the
    pod terminal); ``None`` when it is terminal already, nothing to write."""
    status = pod.get("status") or {}
    if status.get("phase") in _TERMINAL_PHASES:
        return None
    spec = pod.get("spec") or {}
    entries: list[Obj] = []
    for entry in status.get("containerStatuses") or []:
        state = entry.get("state") or {}
        if "running" in state:
            state = terminated(exit_code, started_at=state["running"].get("startedAt"), finished_at=now,
                               container_id=str(entry.get("containerID", "")))
        elif "waiting" in state:
            state = lost(now)
        entries.append({**entry, "state": state, "ready": False, "started": False})
    start = parse_time(status.get("startTime"))
    generation = (pod.get("metadata") or {}).get("generation")
    return pod_status(old_conditions=status.get("conditions") or [], statuses=entries,
                      restart_policy=str(spec.get("restartPolicy", "Always")),
                      start_time=start if start is not None else now, now=now, terminal=True,
                      generation=generation if isinstance(generation, int) else None, reason=reason, message=message)


def unschedulable_status(old_conditions: Iterable[Mapping[str, Any]], *, now: float) -> Obj:
    """What the scheduler writes for a pod no node accepts (a merge patch of ``status``)."""
    condition_entry = condition(old_conditions, "PodScheduled", "False", now=now, reason="Unschedulable",
                                message=_UNSCHEDULABLE_MESSAGE)
    others = [dict(c) for c in old_conditions if c.get("type") != "PodScheduled"]
    return {"phase": "Pending", "conditions": [*others, condition_entry]}


def deadline_at(spec: Mapping[str, Any], start_time: float | None) -> float | None:
    """When ``activeDeadlineSeconds`` runs out (epoch seconds), counted from the pod's start time."""
    seconds = spec.get("activeDeadlineSeconds")
    if start_time is None or not isinstance(seconds, int) or isinstance(seconds, bool):
        return None
    return start_time + seconds


# ---------------------------------------------------------------------------------------------- messages

def pull_backoff_message(image: str, error: str) -> str:
    """The ImagePullBackOff waiting message (kubelet >= 1.30 appends the last pull error)."""
    return f'Back-off pulling image "{image}": ErrImagePull: {error}'


def restart_backoff_message(delay: float, container: str, pod: str, namespace: str, uid: str) -> str:
    """The CrashLoopBackOff waiting message."""
    return f"back-off {int(delay)}s restarting failed container={container} pod={pod}_{namespace}({uid})"


def log_unavailable_message(container: str, pod: str, state: Mapping[str, Any]) -> str:
    """The kubelet's answer to a log request for a container that has not started."""
    reason = str((state.get("waiting") or {}).get("reason", "ContainerCreating"))
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        reason = "trying and failing to pull image"
    return f'container "{container}" in pod "{pod}" is waiting to start: {reason}'


# ---------------------------------------------------------------------------------------------- objects

def binding(name: str, uid: str, node: str = NODE_NAME) -> Obj:
    """The ``pods/binding`` body; the uid makes it a precondition (a recreated pod is not bound by mistake)."""
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}


def delete_options(uid: str) -> Obj:
    """The kubelet's final delete: no grace left, only if it is still the same pod."""
    return {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}


def node_status(*, port: int, now: float, kubelet_version: str, ready_since: float | None = None,
                name: str = NODE_NAME, capacity: Mapping[str, str] | None = None) -> Obj:
    """The Node's status: Ready, addresses, the kubelet endpoint the API server fetches logs from, capacity
    (``DEFAULT_CAPACITY`` with ``capacity`` over it; all of it allocatable)."""
    resources = {**DEFAULT_CAPACITY, **(capacity or {})}

    def node_condition(kind: str, value: str, reason: str, message: str) -> Obj:
        since = ready_since if ready_since is not None and kind == "Ready" else now
        return {"type": kind, "status": value, "lastHeartbeatTime": rfc3339(now),
                "lastTransitionTime": rfc3339(since), "reason": reason, "message": message}

    return {
        "conditions": [
            node_condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory "
                                                                                     "available"),
            node_condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            node_condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            node_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "local processes",
            "containerRuntimeVersion": "local://0", "kubeletVersion": kubelet_version, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }


def node_manifest(*, port: int, now: float, kubelet_version: str, name: str = NODE_NAME,
                  capacity: Mapping[str, str] | None = None) -> Obj:
    """The Node object the kubelet registers (status included: nodes keep it on create)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels(name),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": node_status(port=port, now=now, kubelet_version=kubelet_version, name=name, capacity=capacity),
    }
