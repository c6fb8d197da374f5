"""The API server's own ceiling: the same pods created by a plain concurrent client, no orchestrator.

Run against a fresh API server instance, with the very pod bodies the daemon
would send (``pod_specs.build_pod`` with the daemon's default settings), from
a pool of threads on keep-alive connections. Measured like the daemon: from
the first request to the last pod seen by the driver's watch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api_server import api_server
from bench.kube import PodWatch
from bench.proc import sample
from bench.server_breakdown import CreationProbe
from model_services_orchestrator.pod_specs import PodSettings, build_pod, owned_pods_selector, secret_key
from model_services_orchestrator.settings import DEFAULT_SECRET_ENV_NAME_PATTERN
from model_services_orchestrator.simulation_records import record_name, values_name

__all__ = ["CeilingResult", "measure_ceiling", "pod_bodies"]

_SECRET = re.compile(DEFAULT_SECRET_ENV_NAME_PATTERN)


def pod_bodies(so: str, simulator_id: str, simulation_id: str, models: Sequence[tuple[str, Sequence[tuple[str, str]]]],
               *, image: str, keep_logs_hours: float) -> list[dict[str, Any]]:
    """The bodies the daemon builds for these models with its default settings."""
    settings = PodSettings(so=so, node_selector={"type": "worker"}, cpu_request="100m", memory_request="128Mi",
                           cpu_limit="1", memory_limit="1Gi")
    return [build_pod(settings=settings, simulator_id=simulator_id, simulation_id=simulation_id, model_id=model_id,
                      image=image, env=env, keep_logs_hours=keep_logs_hours,
                      is_secret=lambda name: bool(_SECRET.search(name)),
                      secret_for=lambda _value: values_name(record_name(so, simulation_id), 0))
            for model_id, env in models]


@dataclass(frozen=True)
class CeilingResult:
    pods: int
    threads: int
    seconds_to_last_seen: float  # first request -> the last pod seen by the watch
    seconds_to_last_response: float  # first request -> the last 201 returned
    server_cpu_seconds: float
    server: dict[str, Any] | None = None  # where kube-apiserver's time went (server_breakdown), when asked

    @property
    def pods_per_second(self) -> float:
        return self.pods / self.seconds_to_last_seen


def measure_ceiling(*, namespace: str, so: str, simulator_id: str,
                    simulations: dict[str, Sequence[tuple[str, Sequence[tuple[str, str]]]]], image: str,
                    threads: int, timeout: float, server_profile: tuple[int, Path] = (0, Path())) -> CeilingResult:
    """Create the pods of these simulations on a fresh status-only API server, as fast as ``threads`` threads can.

    ``server_profile``: (seconds, file) of kube-apiserver's CPU profile, with the server's breakdown; 0 for none.
    """
    bodies = [body for simulation_id, models in simulations.items()
              for body in pod_bodies(so, simulator_id, simulation_id, models, image=image, keep_logs_hours=0.0)]
    with api_server(profiling=server_profile[0] > 0) as server:
        probe = CreationProbe(server, *server_profile)
        client = server.driver
        for simulation_id, models in simulations.items():
            # The Secret the daemon's pods take their secret env vars from.
            secret_values = {secret_key(value): value for _, env in models for name, value in env
                             if _SECRET.search(name)}
            client.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": values_name(record_name(so, simulation_id), 0)},
                "stringData": secret_values})
        watch = PodWatch(client, namespace, owned_pods_selector(so)).start()
        pids = server.server_pids()
        server_cpu = sum(sample(pid).cpu_seconds for pid in pids)
        path = f"/api/v1/namespaces/{namespace}/pods"

        def create(body: dict[str, Any]) -> float:
            client.request("POST", path, body)
            return time.monotonic()

        probe.begin()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ceiling") as pool:
                answered = max(pool.map(create, bodies))
            last_seen = watch.wait("added", [body["metadata"]["name"] for body in bodies], started + timeout)
        finally:
            watch.stop()
        server_cpu = sum(sample(pid).cpu_seconds for pid in pids) - server_cpu
        server_breakdown = probe.end(len(bodies))
    return CeilingResult(pods=len(bodies), threads=threads, seconds_to_last_seen=last_seen - started,
                         seconds_to_last_response=answered - started, server_cpu_seconds=server_cpu,
                         server=server_breakdown)
