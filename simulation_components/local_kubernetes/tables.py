"""Server-side printing (``meta.k8s.io/v1`` Table), so ``kubectl get`` shows the usual columns.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io``; without this it only shows NAME and
AGE. Pods get NAME, READY, STATUS, RESTARTS, AGE (computed like kubectl's pod printer); config maps
and secrets their DATA column.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .store import Stored

__all__ = ["table", "wants_table"]


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a Table (and we can serve one)."""
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    seconds = int(time.time() - datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S%z").timestamp())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _pod_status(data: dict[str, Any]) -> str:
    status = data.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            terminated = state["terminated"]
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
    if data["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _row(stored: Stored) -> list[Any]:
    data = stored.data
    age = _age(stored.metadata.get("creationTimestamp"))
    if stored.info.plural == "pods":
        statuses = (data.get("status") or {}).get("containerStatuses") or []
        containers = (data.get("spec") or {}).get("containers") or []
        ready = sum(1 for s in statuses if s.get("ready"))
        restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
        return [stored.name, f"{ready}/{len(containers)}", _pod_status(data), restarts, age]
    if stored.info.plural == "secrets":
        return [stored.name, data.get("type", "Opaque"), len(data.get("data") or {}), age]
    return [stored.name, len(data.get("data") or {}) + len(data.get("binaryData") or {}), age]


def _columns(resource: str) -> list[dict[str, Any]]:
    def column(name: str, kind: str = "string", format_: str = "") -> dict[str, Any]:
        return {"name": name, "type": kind, "format": format_, "description": name, "priority": 0}

    if resource == "pods":
        return [column("Name", format_="name"), column("Ready"), column("Status"), column("Restarts", "integer"),
                column("Age")]
    if resource == "secrets":
        return [column("Name", format_="name"), column("Type"), column("Data", "integer"), column("Age")]
    return [column("Name", format_="name"), column("Data", "integer"), column("Age")]


def table(resource: str, items: Iterable[Stored], resource_version: int | None = None) -> dict[str, Any]:
    """A Table of ``items`` with partial object metadata per row."""
    metadata: dict[str, Any] = {}
    if resource_version is not None:
        metadata["resourceVersion"] = str(resource_version)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": _columns(resource),
        "rows": [{"cells": _row(stored), "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": stored.metadata}}
            for stored in items],
    }
