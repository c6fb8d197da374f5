"""The environment our kubelet gives a container process: the process basics, the ``kubernetes`` service
variables, then the container's own ``env``.

Resolution follows the kubelet: ``envFrom`` first, then ``env`` in order (a later duplicate name wins),
``$(VAR)`` references expanded against what is defined before, ``secretKeyRef``/``configMapKeyRef``
read from the Secrets and ConfigMaps fetched for the container (a missing one is
``CreateContainerConfigError`` unless optional), ``fieldRef`` for the usual downward-API fields.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ContainerConfigError", "Fetched", "process_environment", "references", "resolve_container_env",
           "service_environment"]

Obj = dict[str, Any]
#: The Secrets and ConfigMaps a container reads, by ``(resource, name)``; ``None`` for one that is missing.
Fetched = Mapping[tuple[str, str], Obj | None]

_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ContainerConfigError(Exception):
    """The container cannot be started yet (the kubelet's CreateContainerConfigError)."""


def service_environment() -> dict[str, str]:
    """The variables of the ``kubernetes`` service that every pod gets (enableServiceLinks or not)."""
    return {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
    }


def process_environment(repo_root: Path) -> dict[str, str]:
    """What every container process starts from: PATH and PYTHONPATH (the repository root first), and
    the locale and home of the kubelet itself."""
    python_path = str(repo_root)
    if os.environ.get("PYTHONPATH"):
        python_path += os.pathsep + os.environ["PYTHONPATH"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": python_path}
    for name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def references(container: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(resource, name) of every Secret and ConfigMap the container's environment reads."""
    found: set[tuple[str, str]] = set()
    for source in container.get("envFrom") or []:
        if source.get("configMapRef"):
            found.add(("configmaps", str(source["configMapRef"].get("name", ""))))
        if source.get("secretRef"):
            found.add(("secrets", str(source["secretRef"].get("name", ""))))
    for variable in container.get("env") or []:
        value_from = variable.get("valueFrom") or {}
        if value_from.get("secretKeyRef"):
            found.add(("secrets", str(value_from["secretKeyRef"].get("name", ""))))
        if value_from.get("configMapKeyRef"):
            found.add(("configmaps", str(value_from["configMapKeyRef"].get("name", ""))))
    return found


def _expand(value: str, defined: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def _key_of(fetched: Fetched, resource: str, namespace: str, reference: Mapping[str, Any]) -> str | None:
    kind = "secret" if resource == "secrets" else "configmap"
    name = str(reference.get("name", ""))
    key = str(reference.get("key", ""))
    optional = bool(reference.get("optional"))
    stored = fetched.get((resource, name))
    if stored is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind} "{name}" not found')
    data = stored.get("data") or {}
    if key in data:
        value = data[key]
        return base64.b64decode(value).decode(errors="replace") if resource == "secrets" else str(value)
    binary = stored.get("binaryData") or {}
    if resource == "configmaps" and key in binary:
        return base64.b64decode(binary[key]).decode(errors="replace")
    if optional:
        return None
    label = "Secret" if resource == "secrets" else "ConfigMap"
    raise ContainerConfigError(f"couldn't find key {key} in {label} {namespace}/{name}")


def _field(pod: Mapping[str, Any], path: str) -> str:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
    }
    if path not in simple:
        raise ContainerConfigError(f"unsupported fieldPath: {path}")
    value = simple[path]
    return "" if value is None else str(value)


def resolve_container_env(  # noqa: PLR0912 - one branch per kind of variable source
        fetched: Fetched, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's own variables, in order, with references resolved (no service variables)."""
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    result: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for field_name, resource in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            reference = source.get(field_name)
            if not reference:
                continue
            stored = fetched.get((resource, str(reference.get("name", ""))))
            if stored is None:
                if reference.get("optional"):
                    continue
                kind = "secret" if resource == "secrets" else "configmap"
                raise ContainerConfigError(f'{kind} "{reference.get("name")}" not found')
            for key, encoded in (stored.get("data") or {}).items():
                text = base64.b64decode(encoded).decode(errors="replace") if resource == "secrets" else str(encoded)
                result[prefix + key] = text
    defined = {**service_environment(), **result}
    for variable in container.get("env") or []:
        name = str(variable["name"])
        source = variable.get("valueFrom")
        value: str | None
        if source is None:
            value = _expand(str(variable.get("value", "")), defined)
        elif source.get("secretKeyRef") is not None:
            value = _key_of(fetched, "secrets", namespace, source["secretKeyRef"])
        elif source.get("configMapKeyRef") is not None:
            value = _key_of(fetched, "configmaps", namespace, source["configMapKeyRef"])
        elif source.get("fieldRef") is not None:
            value = _field(pod, str(source["fieldRef"].get("fieldPath", "")))
        else:
            value = "1"  # resourceFieldRef: no resource accounting here
        if value is None:
            continue
        result.pop(name, None)  # keep the order of the last definition
        result[name] = value
        defined[name] = value
    return result
