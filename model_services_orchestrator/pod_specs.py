"""What a model's pod looks like: its name, labels and body, as plain JSON-able data.

Pure. The name and labels follow PROTOCOL.md section 6 so that tools written
for the upstream orchestrator still find the pods. Ids that Kubernetes would
reject are made valid deterministically (lower-cased, invalid characters
replaced, shortened with a hash of the original ids so two ids never collide);
the original ids are kept in annotations.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model_services_orchestrator.model_registry import Resolved, merged_env, resources

__all__ = [
    "ANNOTATION_MODEL_ID",
    "ANNOTATION_SIMULATION_ID",
    "ANNOTATION_SIMULATOR_ID",
    "ANNOTATION_SO",
    "KUEUE_ADMISSION_GATE",
    "KUEUE_GROUP_NAME",
    "KUEUE_GROUP_TOTAL_COUNT",
    "KUEUE_QUEUE_NAME",
    "KUEUE_RETRIABLE_IN_GROUP",
    "LABEL_KEEP_LOGS_HOURS",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL_ID",
    "LABEL_SIMULATION_ID",
    "LABEL_SIMULATION_KEY",
    "LABEL_SIMULATOR_ID",
    "LABEL_SO",
    "MANAGED_BY",
    "PodSettings",
    "build_pod",
    "dns_label",
    "label_value",
    "merge_env",
    "of_simulation",
    "owned_pods_selector",
    "ownership_marks",
    "ownership_tests",
    "owns",
    "pod_name",
    "restarted_pod_name",
    "secret_env_names",
    "secret_key",
    "short_hash",
    "simulation_candidates_selector",
    "simulation_key",
    "simulation_marks",
    "simulation_pods_selector",
    "unique_pod_name",
]

LABEL_SIMULATOR_ID = "simulator_id"
LABEL_SIMULATION_ID = "simulation_id"
LABEL_MODEL_ID = "model_id"
LABEL_KEEP_LOGS_HOURS = "keep_logs_hours"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SO = "dots.mso/simulator-name"
MANAGED_BY = "model-services-orchestrator"
ANNOTATION_SIMULATOR_ID = "dots.mso/simulator-id"
ANNOTATION_SIMULATION_ID = "dots.mso/simulation-id"
ANNOTATION_MODEL_ID = "dots.mso/model-id"
ANNOTATION_SO = "dots.mso/so"
# A hash of the SO and the exact simulation id: the label value ``simulation_id`` may stand in for
# several ids (``a b`` becomes ``a_b-<hash>``, itself a valid id), this one for no other simulation.
LABEL_SIMULATION_KEY = "dots.mso/simulation-key"
# Kueue's plain-pod groups (KUEUE_QUEUE_NAME): the LocalQueue, the group (one per simulation), its size,
# and "false" for retries in the group: a model is not run again in place, so a group whose pods have all
# ended is finished (and its quota free) even when some failed.
KUEUE_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_NAME = "kueue.x-k8s.io/pod-group-name"
KUEUE_ADMISSION_GATE = "kueue.x-k8s.io/admission"  # the scheduling gate Kueue's webhook puts on a pod it holds
KUEUE_GROUP_TOTAL_COUNT = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_RETRIABLE_IN_GROUP = "kueue.x-k8s.io/retriable-in-group"

_MAX_LABEL = 63
_HASH_LENGTH = 8
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def short_hash(*parts: str) -> str:
    # A separator that cannot occur in a topic level keeps ("a-b", "c") and ("a", "b-c") apart.
    digest = hashlib.sha256("/".join(parts).encode("utf-8")).hexdigest()
    return digest[:_HASH_LENGTH]


def dns_label(*parts: str) -> str:
    """The parts joined by ``-`` and lower-cased when that is a valid DNS-1123 label, else a valid one.

    The fallback keeps as much of the readable name as fits and ends with a
    hash of the original parts, so distinct ids never share a name.
    """
    plain = "-".join(parts).lower()
    if len(plain) <= _MAX_LABEL and _DNS_LABEL.match(plain):
        return plain
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", plain)).strip("-")
    suffix = short_hash(*parts)
    head = cleaned[: _MAX_LABEL - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{suffix}" if head else f"m-{suffix}"


def pod_name(simulator_id: str, simulation_id: str, model_id: str) -> str:
    """``<simulatorId>-<sim>-<model>`` lower-cased (PROTOCOL.md section 6), made valid where needed.

    Distinct ids can share it (``ModelA``/``modela``; ``x-y``/``z`` and ``x``/``y-z``): a model whose
    upstream name is taken uses ``unique_pod_name``.
    """
    return dns_label(simulator_id, simulation_id, model_id)


def unique_pod_name(simulator_id: str, simulation_id: str, model_id: str, so: str = "") -> str:
    """A pod name of these exact ids that no other ids share: readable head, hash of the exact ids.

    With ``so``, the SO is among them: two SOs sharing a namespace may run equal ids. Without it, the
    name an earlier version gave (still recognised as a model's pod).
    """
    parts = (so, simulator_id, simulation_id, model_id) if so else (simulator_id, simulation_id, model_id)
    return _hashed_name(pod_name(simulator_id, simulation_id, model_id), "u", short_hash(*parts))


def restarted_pod_name(simulator_id: str, simulation_id: str, model_id: str, so: str) -> str:
    """The name of a model's pod made again after its first one was deleted (once per model): free at
    once, while the first pod may still be terminating under its own name."""
    return _hashed_name(pod_name(simulator_id, simulation_id, model_id), "r",
                        short_hash("restarted", so, simulator_id, simulation_id, model_id))


def _hashed_name(readable: str, marker: str, suffix: str) -> str:
    """A DNS label: as much of ``readable`` as fits, then ``-<marker><suffix>``."""
    plain = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", readable))
    head = plain[: _MAX_LABEL - _HASH_LENGTH - 2].strip("-")
    return f"{head}-{marker}{suffix}" if head else f"m-{marker}{suffix}"


def label_value(value: str) -> str:
    """``value`` itself when Kubernetes accepts it as a label value, else a valid stand-in with a hash."""
    if len(value) <= _MAX_LABEL and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", value)
    head = cleaned[: _MAX_LABEL - _HASH_LENGTH - 1]
    head = re.sub(r"^[^A-Za-z0-9]+", "", head)
    head = re.sub(r"[^A-Za-z0-9]+$", "", head)
    suffix = short_hash(value)
    return f"{head}-{suffix}" if head else f"h{suffix}"


def merge_env(env: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The env vars in the order given, each name once: a later duplicate wins and takes the later place."""
    last_index = {name: index for index, (name, _) in enumerate(env)}
    return [(name, value) for index, (name, value) in enumerate(env) if last_index[name] == index]


def owned_pods_selector(so: str) -> str:
    """The label selector of every pod this daemon (for this SO) owns."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SO}={label_value(so)}"


def simulation_key(so: str, simulation_id: str) -> str:
    """The value of ``LABEL_SIMULATION_KEY``: 160 bits of a hash of the exact ids, so no two share it."""
    return "k" + hashlib.sha256(f"{so}/{simulation_id}".encode()).hexdigest()[:40]


def simulation_pods_selector(so: str, simulation_id: str) -> str:
    """The label selector of the pods (and record objects) of exactly one simulation."""
    return f"{owned_pods_selector(so)},{LABEL_SIMULATION_KEY}={simulation_key(so, simulation_id)}"


def simulation_candidates_selector(so: str, simulation_id: str) -> str:
    """Every object that may be one simulation's, those made before ``LABEL_SIMULATION_KEY`` included, and
    those of others whose ids share its ``simulation_id`` label: to be checked with ``of_simulation``."""
    return f"{owned_pods_selector(so)},{LABEL_SIMULATION_ID}={label_value(simulation_id)}"


def of_simulation(body: Mapping[str, Any], so: str, simulation_id: str) -> bool:
    """Whether an object carries the exact ids of this SO's simulation (the SO only where it says one)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return (annotations.get(ANNOTATION_SIMULATION_ID) == simulation_id
            and annotations.get(ANNOTATION_SO, so) == so)


def ownership_marks(so: str, simulator_id: str, simulation_id: str, model_id: str) -> dict[str, dict[str, str]]:
    """The labels and annotations that make a pod this daemon's pod of exactly this model."""
    return {
        "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SO: label_value(so)},
        "annotations": {ANNOTATION_SIMULATOR_ID: simulator_id, ANNOTATION_SIMULATION_ID: simulation_id,
                        ANNOTATION_MODEL_ID: model_id},
    }


def owns(pod: Mapping[str, Any], marks: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether the pod (as the API's JSON) carries every one of ``marks``: the only proof it is ours."""
    metadata = pod.get("metadata") or {}
    return all((metadata.get(field) or {}).get(key) == value
               for field, values in marks.items() for key, value in values.items())


def simulation_marks(so: str, simulation_id: str) -> dict[str, dict[str, str]]:
    """The labels and annotations every pod of this daemon's simulation carries, whichever version made it."""
    return {"labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SO: label_value(so)},
            "annotations": {ANNOTATION_SIMULATION_ID: simulation_id}}


def ownership_tests(marks: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """JSON Patch ``test`` operations that make a patch fail (422) on a pod that is not ours."""
    return [{"op": "test", "path": f"/metadata/{field}/{_pointer(key)}", "value": value}
            for field, values in marks.items() for key, value in values.items()]


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True, slots=True)
class PodSettings:
    """The deployment-wide parts of every model pod."""

    so: str
    pull_image_secret_name: str = ""
    node_selector: Mapping[str, str] = field(default_factory=lambda: {"type": "worker"})
    tolerations: tuple[Mapping[str, Any], ...] = ()
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""
    run_as_non_root: bool = False
    kueue_queue_name: str = ""  # every pod in this Kueue LocalQueue, one pod group per simulation


def secret_env_names(pattern: str) -> Callable[[str], bool]:
    """Whether an env var's name says its value is a secret (``SECRET_ENV_NAME_PATTERN``)."""
    compiled = re.compile(pattern)
    known: dict[str, bool] = {}

    def is_secret(name: str) -> bool:
        # Thousands of models share a handful of env var names: decide each name once.
        if (answer := known.get(name)) is None:
            answer = known[name] = compiled.search(name) is not None
        return answer

    return is_secret


def secret_key(value: str) -> str:
    """The key under which an env var's secret value sits in the simulation's Secret.

    Derived from the value, so a password shared by a thousand models is stored once.
    """
    return "env-" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:24]


def _env_entry(name: str, value: str, secret_name: str | None) -> dict[str, Any]:
    if secret_name is None:
        return {"name": name, "value": value}
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key(value)}}}


def _no_secret(_value: str) -> str:
    raise ValueError("a secret env var needs the Secret that holds its value (secret_for)")


def _default_resources(settings: PodSettings) -> dict[str, dict[str, str]]:
    return {kind: {key: amount for key, amount in (("cpu", cpu), ("memory", memory)) if amount}
            for kind, cpu, memory in (("requests", settings.cpu_request, settings.memory_request),
                                      ("limits", settings.cpu_limit, settings.memory_limit))}


def _keep_logs_label(keep_logs_hours: float) -> str:
    if math.isfinite(keep_logs_hours):
        return label_value(str(keep_logs_hours))
    return "inf"


def build_pod(
    *,
    settings: PodSettings,
    simulator_id: str,
    simulation_id: str,
    model_id: str,
    image: str,
    env: Sequence[tuple[str, str]],
    keep_logs_hours: float,
    name: str | None = None,
    group_size: int = 1,
    is_secret: Callable[[str], bool] = lambda _name: False,
    secret_for: Callable[[str], str] = _no_secret,
    service: Resolved | None = None,
) -> dict[str, Any]:
    """The pod body for one model, as the JSON the API server takes.

    Env vars for which ``is_secret(name)`` holds are referenced from the
    Secret ``secret_for(value)`` (under the key ``secret_key(value)``) instead
    of being written into the pod spec, where anyone who may list pods could
    read them. With ``settings.kueue_queue_name``, the pod is one of the
    simulation's Kueue pod group of ``group_size`` pods.

    ``service``: what the model's image resolved to in the model registry
    (``model_registry``): its image and default env vars (under the SO's),
    and, where it says them, the resources (per resource), nodeSelector and
    tolerations in place of the deployment-wide ``settings``.
    """
    name = name or pod_name(simulator_id, simulation_id, model_id)
    security_context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if settings.run_as_non_root:
        security_context["runAsNonRoot"] = True
    container: dict[str, Any] = {
        "name": name,
        "image": (service.image if service is not None else None) or image,
        "imagePullPolicy": "Always",
        "env": merged_env(service.env if service is not None else (), [
            _env_entry(key, value, secret_for(value) if is_secret(key) else None)
            for key, value in merge_env(env)
        ]),
        "securityContext": security_context,
    }
    if amounts := resources(_default_resources(settings), service.resources if service is not None else None):
        container["resources"] = amounts
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        # Service links would put e.g. MQTT_PORT=tcp://... from a Service named mqtt into every model's env.
        "enableServiceLinks": False,
        "containers": [container],
    }
    node_selector = settings.node_selector
    tolerations = settings.tolerations
    if service is not None:
        node_selector = settings.node_selector if service.node_selector is None else service.node_selector
        tolerations = settings.tolerations if service.tolerations is None else service.tolerations
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in tolerations]
    if settings.pull_image_secret_name:
        spec["imagePullSecrets"] = [{"name": settings.pull_image_secret_name}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                LABEL_SIMULATOR_ID: label_value(simulator_id),
                LABEL_SIMULATION_ID: label_value(simulation_id),
                LABEL_MODEL_ID: label_value(model_id),
                LABEL_KEEP_LOGS_HOURS: _keep_logs_label(keep_logs_hours),
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_SO: label_value(settings.so),
                LABEL_SIMULATION_KEY: simulation_key(settings.so, simulation_id),
            },
            "annotations": {
                ANNOTATION_SIMULATOR_ID: simulator_id,
                ANNOTATION_SIMULATION_ID: simulation_id,
                ANNOTATION_MODEL_ID: model_id,
                ANNOTATION_SO: settings.so,
            },
        },
        "spec": spec,
    }
    if settings.kueue_queue_name:
        pod["metadata"]["labels"].update({KUEUE_QUEUE_NAME: settings.kueue_queue_name,
                                          KUEUE_GROUP_NAME: simulation_key(settings.so, simulation_id)})
        pod["metadata"]["annotations"].update({KUEUE_GROUP_TOTAL_COUNT: str(group_size),
                                               KUEUE_RETRIABLE_IN_GROUP: "false"})
    return pod
