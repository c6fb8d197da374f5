"""The project's own namespace and RBAC manifests, applied to the test control plane as they are.

The point of a real API server in the tests is that the daemon runs with exactly the permissions a
deployment gives it, so the objects come from ``k8s_cluster_configuration/`` unchanged (namespace,
service accounts, Role, RoleBinding) rather than from a copy that could drift. Only the REST path of each
object is worked out here; the body sent is the parsed document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from .api import ApiError
from .binaries import REPO_ROOT

__all__ = ["CLUSTER_CONFIGURATION", "RBAC_MANIFESTS", "apply_manifests", "load_manifests", "object_path"]

CLUSTER_CONFIGURATION = REPO_ROOT / "k8s_cluster_configuration"
#: In the order they must be created: the namespace first, the RoleBinding after what it names.
RBAC_MANIFESTS = ("namespace.yaml", "service-accounts.yaml", "role.yaml", "role-binding.yaml")

# kind -> (resource, namespaced): the kinds those manifests hold; another kind is an error, not a guess.
_RESOURCES = {
    "Namespace": ("namespaces", False),
    "ServiceAccount": ("serviceaccounts", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
}

Caller = Callable[[str, str, Any], Any]


def load_manifests(names: tuple[str, ...] = RBAC_MANIFESTS, directory: Path = CLUSTER_CONFIGURATION,
                   ) -> Iterator[dict[str, Any]]:
    """Every non-empty YAML document of the files, in order."""
    for name in names:
        with (directory / name).open(encoding="utf-8") as stream:
            for document in yaml.safe_load_all(stream):
                if document:
                    yield document


def object_path(manifest: dict[str, Any]) -> tuple[str, str]:
    """The collection path (for a create) and the name of a manifest's object."""
    kind = manifest.get("kind", "")
    if kind not in _RESOURCES:
        raise ValueError(f"no REST path known for kind {kind!r}")
    resource, namespaced = _RESOURCES[kind]
    api_version = manifest["apiVersion"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    metadata = manifest["metadata"]
    if namespaced:
        prefix += f"/namespaces/{metadata.get('namespace', 'default')}"
    return f"{prefix}/{resource}", metadata["name"]


def apply_manifests(manifests: Iterator[dict[str, Any]] | list[dict[str, Any]], request: Caller) -> list[str]:
    """Create each object as given; one that already exists is replaced by the given one.

    (kube-controller-manager's service-account controller creates ``default`` in a new namespace, racing
    ``service-accounts.yaml``, which sets ``automountServiceAccountToken: false`` on it.)
    ``request(method, path, body)`` makes the call. Returns ``kind/name`` of each object.
    """
    applied = []
    for manifest in manifests:
        collection, name = object_path(manifest)
        try:
            request("POST", collection, manifest)
        except ApiError as error:
            if error.status != 409:
                raise
            existing = request("GET", f"{collection}/{name}", None)
            replacement = {**manifest, "metadata": {**manifest["metadata"],
                                                     "resourceVersion": existing["metadata"]["resourceVersion"]}}
            request("PUT", f"{collection}/{name}", replacement)
        applied.append(f"{manifest['kind']}/{name}")
    return applied
