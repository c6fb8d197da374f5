"""Where the API server's time goes while pods are created: by verb and resource, in etcd, and in its code.

kube-apiserver and etcd fill both cores during a mass creation, so every
request and every byte a client adds beyond the pods shows up as lost pods
per second. This takes the same three views of the plain client's ceiling run
and of the daemon's deploy, so the two can be set side by side:

- requests and the server's seconds spent on them (``apiserver_request_total``,
  ``apiserver_request_duration_seconds_sum``) by verb and resource, per pod;
- what etcd wrote (``etcd_debugging_mvcc_total_put_size_in_bytes``,
  ``etcd_disk_wal_write_bytes_total``, ``etcd_mvcc_put_total``, the backend's
  commit time), per pod;
- a Go CPU profile of kube-apiserver (``/debug/pprof/profile``, the control
  plane started with ``--profiling``), kept as a file and summarised by
  ``go tool pprof -top``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api_server import BenchApiServer, by_request, unlabelled
from simulation_components.control_plane.api import HttpClient

__all__ = ["CpuProfile", "CreationProbe", "ServerSample", "breakdown", "sample_server"]

_ETCD = ("etcd_debugging_mvcc_total_put_size_in_bytes", "etcd_disk_wal_write_bytes_total", "etcd_mvcc_put_total",
         "etcd_disk_backend_commit_duration_seconds_sum", "etcd_mvcc_db_total_size_in_bytes")


@dataclass(frozen=True)
class ServerSample:
    """Cumulative counters at one moment: by ``"VERB resource"``, and etcd's."""

    requests: dict[str, float]
    seconds: dict[str, float]
    etcd: dict[str, float]


def _by_verb_and_resource(text: str, metric: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (verb, resource, _code), value in by_request(text, metric).items():
        if resource:  # not /healthz, /readyz, discovery
            found[f"{verb} {resource}"] = found.get(f"{verb} {resource}", 0.0) + value
    return found


def sample_server(server: BenchApiServer) -> ServerSample:
    """The API server's and etcd's counters now."""
    apiserver = server.driver.request_text("GET", "/metrics")
    etcd_client = HttpClient(server.backend.etcd_url)
    try:
        etcd = unlabelled(etcd_client.request_text("GET", "/metrics"), frozenset(_ETCD))
    finally:
        etcd_client.close()
    return ServerSample(_by_verb_and_resource(apiserver, "apiserver_request_total"),
                        _by_verb_and_resource(apiserver, "apiserver_request_duration_seconds_sum"), etcd)


def breakdown(before: ServerSample, after: ServerSample, pods: int) -> dict[str, Any]:
    """What happened between two samples, per pod created: requests and server milliseconds by verb and
    resource (largest first), and etcd's writes."""
    rows: list[dict[str, Any]] = []
    for key in sorted(after.requests):
        requests = after.requests[key] - before.requests.get(key, 0.0)
        if requests <= 0:
            continue
        seconds = after.seconds.get(key, 0.0) - before.seconds.get(key, 0.0)
        rows.append({"request": key, "count": int(requests), "per_pod": round(requests / pods, 3),
                     "server_ms_per_pod": round(seconds * 1000 / pods, 3)})
    rows.sort(key=lambda row: -row["server_ms_per_pod"])
    etcd = {name: after.etcd.get(name, 0.0) - before.etcd.get(name, 0.0) for name in _ETCD}
    return {
        "requests": rows,
        "server_ms_per_pod": round(sum(row["server_ms_per_pod"] for row in rows), 3),
        "etcd_put_bytes_per_pod": round(etcd["etcd_debugging_mvcc_total_put_size_in_bytes"] / pods),
        "etcd_wal_bytes_per_pod": round(etcd["etcd_disk_wal_write_bytes_total"] / pods),
        "etcd_puts_per_pod": round(etcd["etcd_mvcc_put_total"] / pods, 3),
        "etcd_commit_ms_per_pod": round(etcd["etcd_disk_backend_commit_duration_seconds_sum"] * 1000 / pods, 3),
        "etcd_db_bytes_after": int(after.etcd.get("etcd_mvcc_db_total_size_in_bytes", 0.0)),
    }


class CpuProfile:
    """A CPU profile of kube-apiserver over ``seconds``, taken in the background into ``path``."""

    def __init__(self, server: BenchApiServer, seconds: int, path: Path) -> None:
        self._server = server
        self.seconds = seconds
        self.path = path
        self.error: str | None = None
        self._thread = threading.Thread(target=self._take, name="bench-apiserver-profile", daemon=True)

    def start(self) -> CpuProfile:
        self._thread.start()
        return self

    def _take(self) -> None:
        client = self._server.driver
        connection = client.new_connection(self.seconds + 30)
        try:
            connection.request("GET", f"/debug/pprof/profile?seconds={self.seconds}", headers=client.headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                self.error = f"{response.status}: {payload[:200]!r}"
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(payload)
        except OSError as error:
            self.error = repr(error)
        finally:
            connection.close()

    def summary(self, lines: int = 25) -> list[str]:
        """``go tool pprof -top`` of the profile (the functions by flat CPU), once it is taken."""
        self._thread.join(self.seconds + 60)
        if self.error is not None or not self.path.exists():
            return [f"no profile: {self.error or 'not taken'}"]
        go = shutil.which("go")
        if go is None:
            return [f"the profile is {self.path}; 'go tool pprof -top' summarises it (no go on the PATH)"]
        result = subprocess.run([go, "tool", "pprof", "-top", f"-nodecount={lines}", str(self.path)],
                                capture_output=True, text=True, check=False, timeout=120)
        return (result.stdout or result.stderr).splitlines()


class CreationProbe:
    """The three views around one mass creation: ``begin()`` before the first create, ``end(pods)`` once the
    last pod is seen. With ``seconds`` 0 it does nothing and ``end`` answers ``None``."""

    def __init__(self, server: BenchApiServer, seconds: int, path: Path) -> None:
        self._server = server
        self._seconds = seconds
        self._path = path
        self._before: ServerSample | None = None
        self._profile: CpuProfile | None = None

    def begin(self) -> None:
        if self._seconds > 0:
            self._before = sample_server(self._server)
            self._profile = CpuProfile(self._server, self._seconds, self._path).start()

    def end(self, pods: int) -> dict[str, Any] | None:
        if self._before is None or self._profile is None:
            return None
        result = breakdown(self._before, sample_server(self._server), pods)
        result["cpu_profile"] = {"file": self._path.name, "seconds": self._seconds, "top": self._profile.summary()}
        return result
