"""The two windows a SIGKILL can still fall into, measured: ``python -m bench.windows [--models N] [--samples K]``.

docs/guarantees.md promises that a ReadyForProcessing is lost to a kill
only within the moment between its arrival and the record that holds it, and
that a lifecycle message is published again after a kill only within the
moment between the broker releasing it and the record that says so. This
measures both against the real control plane:

- ready: from publishing a model's ReadyForProcessing to the record's part
  ConfigMap holding it as ready;
- delivered: from the SO hearing a model's ModelHasTerminated to the record
  holding it as delivered.

The part is read over one keep-alive connection in a tight loop, so each
figure is an upper bound by one read (a few milliseconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.kube import terminated_status_patch
from bench.runner import percentile
from bench.stack import NAMESPACE, running_stack
from model_services_orchestrator.simulation_records import PART_KEY, part_name, record_name
from simulation_components.control_plane.api import HttpClient
from simulation_components.kit import ready, wait_for

__all__ = ["main", "measure"]

SO = "dots-so"
IMAGE = "fake_model:0.0.1"
_READY, _REPORTED = 2, 4


def _flags(client: HttpClient, part: str, model: str) -> int:
    data = client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{part}")["data"][PART_KEY]
    for model_id, flags, _ in json.loads(data):
        if model_id == model:
            return int(flags)
    return 0


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the record never said so")
    return time.monotonic()


def measure(*, models: int, samples: int) -> dict[str, Any]:
    """Both windows, ``samples`` of each, in a simulation of ``models`` models."""
    simulation = "sim-windows"
    names = [f"model-{index:05d}" for index in range(models)]
    with running_stack() as stack:
        server, so = stack.server, stack.so
        so.deploy(simulation, [(name, IMAGE, []) for name in names], keep_logs_hours=1)
        client = server.driver
        def running() -> dict[str, str]:
            found = {pod["metadata"]["annotations"]["dots.mso/model-id"]: pod["metadata"]["name"]
                     for pod in client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
                     if (pod.get("status") or {}).get("phase") == "Running"}
            return found if len(found) == models else {}

        by_model = wait_for(running, timeout=120, what="every pod running")
        part = part_name(record_name(SO, simulation), 0)
        def recorded(name: str, flag: int) -> Callable[[], bool]:
            return lambda: bool(_flags(client, part, name) & flag)

        ready_ms: list[float] = []
        for name in names[:samples]:
            started = time.monotonic()
            ready(so, simulation, name)
            ready_ms.append((_until(recorded(name, _READY)) - started) * 1000)
            time.sleep(0.05)
        delivered_ms: list[float] = []
        for name in names[:samples]:
            client.request("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{by_model[name]}/status",
                           terminated_status_patch(by_model[name]),
                           content_type="application/strategic-merge-patch+json")
            wait_for(lambda: name in so.terminations(simulation), interval=0.0005,  # noqa: B023 (waited for here)
                     what=f"{name}'s ModelHasTerminated")
            heard = time.monotonic()
            delivered_ms.append((_until(recorded(name, _REPORTED)) - heard) * 1000)
            time.sleep(0.05)
    return {"api_server": server.version, "models": models, "samples": samples,
            "ready_ms": _summary(ready_ms), "delivered_ms": _summary(delivered_ms)}


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "p99": round(percentile(values, 0.99), 1),
            "max": round(max(values), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=30)
    arguments = parser.parse_args(argv)
    print(json.dumps(measure(models=arguments.models, samples=arguments.samples), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
