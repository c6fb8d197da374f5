"""The resources this server serves and how each is named in URLs, lists, events and messages.

One table, so discovery, routing, list kinds and error messages all agree.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESOURCES", "ResourceInfo"]


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """Names and capabilities of one namespaced core/v1 resource."""

    plural: str
    singular: str
    kind: str
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def list_kind(self) -> str:
        """The ``kind`` of a list response, e.g. ``PodList``."""
        return f"{self.kind}List"


RESOURCES: dict[str, ResourceInfo] = {
    "pods": ResourceInfo("pods", "pod", "Pod", ("po",), ("status", "log")),
    "configmaps": ResourceInfo("configmaps", "configmap", "ConfigMap", ("cm",)),
    "secrets": ResourceInfo("secrets", "secret", "Secret"),
}

KINDS_SERVED = frozenset(info.kind for info in RESOURCES.values())
