"""The driver's own view of the API server: a pod watch that stamps every change.

It streams over the tooling's ``HttpClient`` (``http.client`` only), so the
driver's cost per event stays small and nothing of the daemon's Kubernetes
stack is shared with what measures it.
Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every thread
of the driver).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from simulation_components.control_plane.api import ApiError, HttpClient, decode

__all__ = ["PodWatch", "terminated_status_patch"]


def terminated_status_patch(container_name: str, exit_code: int = 0) -> dict[str, Any]:
    """The status a kubelet reports when the container ends (as ``test_watch_and_secrets.set_terminated``)."""
    return {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{"name": container_name, "ready": False, "restartCount": 0, "image": "x",
                               "imageID": "",
                               "state": {"terminated": {"exitCode": exit_code,
                                                        "reason": "Completed" if exit_code == 0 else "Error"}}}]}}


@dataclass
class PodTimes:
    """When the watch first saw each pod in each state (``time.monotonic()``)."""

    added: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)


class PodWatch:
    """A watch on a namespace's pods in a thread of its own, resumed from its resourceVersion if the stream ends."""

    def __init__(self, kube: HttpClient, namespace: str, label_selector: str = "") -> None:
        self._kube = kube
        self._namespace = namespace
        self._selector = label_selector
        self.times = PodTimes()
        self.events = 0
        self.restarts = 0
        self.error: str | None = None
        self._resource_version = ""
        self._stop = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pod-watch", daemon=True)

    def start(self, timeout: float = 10.0) -> PodWatch:
        self._thread.start()
        if not self._opened.wait(timeout):
            raise TimeoutError("the driver's pod watch did not open")
        return self

    def stop(self) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(2)
        self._thread.join(5)

    def _path(self) -> str:
        query = {"watch": "true", "timeoutSeconds": "0", "allowWatchBookmarks": "true"}
        if self._selector:
            query["labelSelector"] = self._selector
        if self._resource_version:
            query["resourceVersion"] = self._resource_version
        return f"/api/v1/namespaces/{self._namespace}/pods?{urllib.parse.urlencode(query)}"

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._stream_once()
                self.restarts += 1
        except Exception as exc:  # noqa: BLE001 (reported to whoever waits, who then fails with it)
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._opened.set()

    def _stream_once(self) -> None:
        connection = self._kube.new_connection(None)
        self._connection = connection
        try:
            connection.request("GET", self._path(), headers=self._kube.headers)
            response = connection.getresponse()
            if response.status != 200:
                raise ApiError("WATCH", self._path(), response.status, decode(response.read()))
            self._opened.set()
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    self._handle(json.loads(line), time.monotonic())
        finally:
            self._connection = None
            connection.close()

    def _handle(self, event: dict[str, Any], now: float) -> None:
        kind = event.get("type")
        pod = event.get("object") or {}
        metadata = pod.get("metadata") or {}
        if kind == "ERROR":
            raise RuntimeError(f"watch error: {pod.get('code')} {pod.get('message')}")
        if version := metadata.get("resourceVersion"):
            self._resource_version = version
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        name = metadata["name"]
        phase = (pod.get("status") or {}).get("phase")
        times = self.times
        self.events += 1
        times.added.setdefault(name, now)
        if phase == "Running":
            times.running.setdefault(name, now)
        elif phase in ("Succeeded", "Failed"):
            times.finished.setdefault(name, now)
        if kind == "DELETED":
            times.deleted.setdefault(name, now)

    def wait(self, what: str, names: Iterable[str], deadline: float, check: Callable[[], None] | None = None) -> float:
        """Wait until every pod of ``names`` was seen ``what`` (added/running/finished/deleted); the last time.

        ``check`` is called while waiting, to fail early (when the daemon died, say).
        """
        wanted = list(names)
        seen: dict[str, float] = getattr(self.times, what)
        pending = wanted
        # The times are stamped by the watch thread as events arrive; polling here costs no precision.
        while True:
            pending = [name for name in pending if name not in seen]
            if not pending:
                return max((seen[name] for name in wanted), default=time.monotonic())
            if self.error is not None:
                raise RuntimeError(f"the driver's pod watch failed: {self.error}")
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(wanted)} pods not {what} in time")
            time.sleep(0.02)
