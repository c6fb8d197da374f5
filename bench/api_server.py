"""The API server a benchmark runs against: the real control plane.

Operators run kube-apiserver; the figures are taken against it (etcd,
kube-apiserver, kube-controller-manager and our status-only kubelet, built by
``ci/build_control_plane.sh``). The benchmark needs a few things of it: where
the daemon connects (with its own, RBAC-limited credentials), an admin client
for the driver, the processes whose CPU is the server's, and how many
requests the server received.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulation_components.control_plane import ControlPlane
from simulation_components.control_plane.api import HttpClient

__all__ = ["BenchApiServer", "api_server", "by_request", "unlabelled"]

_DAEMONS_RESOURCES = frozenset({"pods", "configmaps", "secrets"})
_SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def by_request(text: str, metric: str) -> dict[tuple[str, str, str], float]:
    """``metric``'s series in kube-apiserver's ``/metrics`` text, summed by verb, resource (with its
    subresource) and code (``""`` for a metric without one)."""
    found: dict[tuple[str, str, str], float] = {}
    for match in _SERIES.finditer(text):
        if match["name"] != metric:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = (labels.get("verb", ""), resource, labels.get("code", ""))
        found[key] = found.get(key, 0.0) + float(match["value"])
    return found


def unlabelled(text: str, names: frozenset[str]) -> dict[str, float]:
    """The series of ``names`` that carry no labels (etcd's totals), from a ``/metrics`` text."""
    return {match["name"]: float(match["value"]) for match in _SERIES.finditer(text)
            if match["name"] in names and not match["labels"]}


@dataclass
class BenchApiServer:
    """One API server under test, as the benchmark sees it."""

    version: str
    backend: ControlPlane
    driver: HttpClient  # admin rights: the benchmark plays the kubelet and reads what it needs
    _baseline: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def port(self) -> int:
        return self.backend.port

    @property
    def token(self) -> str:
        """The daemon's token: only the daemon's Role."""
        return self.backend.token

    @property
    def ca_cert_path(self) -> Path:
        return self.backend.ca_cert_path

    def server_pids(self) -> list[int]:
        """The processes whose CPU is the API server's: kube-apiserver and etcd."""
        return [pid for name in ("kube-apiserver", "etcd")
                if (component := self.backend.components.get(name)) is not None and (pid := component.pid)]

    def request_counts(self) -> dict[str, Any]:
        """Requests received since the last reset: ``"VERB resource"`` counts and ``by_status``."""
        now = self._metrics()
        counts: dict[str, Any] = {}
        by_status: dict[str, int] = {}
        # A real control plane has other clients (kube-controller-manager, our kubelet's lease): what they
        # asked for is kept apart, under its own key, so the counts are the daemon's resources only.
        others: dict[str, int] = {}
        for key, value in now.items():
            verb, resource, code = key
            delta = value - self._baseline.get(key, 0)
            if delta <= 0:
                continue
            name = f"{verb} {resource}"
            if resource.split("/")[0] not in _DAEMONS_RESOURCES:
                others[name] = others.get(name, 0) + delta
                continue
            counts[name] = counts.get(name, 0) + delta
            by_status[code] = by_status.get(code, 0) + delta
        counts["by_status"] = by_status
        counts["other_clients"] = others
        return counts

    def reset_request_counts(self) -> None:
        self._baseline = self._metrics()

    def _metrics(self) -> dict[tuple[str, str, str], int]:
        """``apiserver_request_total`` by verb, resource (with its subresource) and code, from ``/metrics``."""
        text = self.driver.request_text("GET", "/metrics")
        return {key: int(value) for key, value in by_request(text, "apiserver_request_total").items()}


@contextlib.contextmanager
def api_server(*, profiling: bool = False) -> Iterator[BenchApiServer]:
    """Start the real control plane with a status-only kubelet (kube-apiserver's ``/debug/pprof`` on with
    ``profiling``)."""
    with ControlPlane(kubelet="status-only", profiling=profiling) as plane:
        driver = HttpClient(plane.url, plane.admin_token, ca_file=plane.ca_cert_path)
        yield BenchApiServer(plane.version(), plane, driver)
