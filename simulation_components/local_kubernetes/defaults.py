"""What kube-apiserver (and its default admission plugins) fills into an object on create.

Clients see these fields on a real cluster (``restartPolicy``, ``imagePullPolicy``, tolerations,
``qosClass``, ...), so code that reads pods must cope with them here too.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import bad_request

__all__ = ["default_config_map", "default_pod", "default_secret", "now_rfc3339", "rfc3339"]


def rfc3339(seconds: float) -> str:
    """A timestamp the way Kubernetes writes them (second precision, UTC, ``Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    """The current time as a Kubernetes timestamp."""
    return rfc3339(time.time())


def _default_pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_container(container: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(container)
    result.setdefault("imagePullPolicy", _default_pull_policy(str(result.get("image", ""))))
    result.setdefault("terminationMessagePath", "/dev/termination-log")
    result.setdefault("terminationMessagePolicy", "File")
    result.setdefault("resources", {})
    if isinstance(result.get("ports"), list):
        result["ports"] = [{"protocol": "TCP", **port} for port in result["ports"]]
    if isinstance(result.get("env"), list):
        env = []
        for variable in result["env"]:
            source = variable.get("valueFrom") if isinstance(variable, Mapping) else None
            if isinstance(source, Mapping) and isinstance(source.get("fieldRef"), Mapping):
                env.append({**variable, "valueFrom": {**source, "fieldRef": {"apiVersion": "v1",
                                                                             **source["fieldRef"]}}})
            else:
                env.append(variable)
        result["env"] = env
    return result


def _qos_class(containers: list[Mapping[str, Any]]) -> str:
    requests_seen = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if requests or limits:
            requests_seen = True
        for resource in ("cpu", "memory"):
            limit = limits.get(resource)
            if limit is None or requests.get(resource, limit) != limit:
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """Fill in the defaults of a pod being created; the metadata is handled by the store."""
    spec = dict(pod.get("spec") or {})
    spec["containers"] = [_default_container(c) for c in spec.get("containers") or []]
    if spec.get("initContainers"):
        spec["initContainers"] = [_default_container(c) for c in spec["initContainers"]]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = list(spec.get("tolerations") or [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations if isinstance(t, Mapping)):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    spec["tolerations"] = tolerations
    result = dict(pod)
    result["spec"] = spec
    result["status"] = {"phase": "Pending", "qosClass": _qos_class(spec["containers"])}
    return result


def default_config_map(config_map: dict[str, Any]) -> dict[str, Any]:
    """Config maps get no defaults; kept for symmetry with the other resources."""
    return config_map


def _check_base64(data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if not isinstance(value, str):
            continue
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data "
                              f"at key {key!r}: {error}") from error


def default_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """Fold ``stringData`` into base64 ``data`` and default ``type`` to Opaque, as the server does."""
    result = dict(secret)
    data = dict(result.get("data") or {})
    _check_base64(data)
    string_data = result.pop("stringData", None)
    if isinstance(string_data, Mapping):
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    if data or "data" in result:
        result["data"] = data
    result.setdefault("type", "Opaque")
    return result
