"""Memory over many simulations: ``python -m bench.memory [--simulations N]``.

A daemon runs for weeks and sees thousands of simulations, each with its own
passwords. Whatever it keeps per simulation after the simulation is cleaned
up (secrets in the redactor, encoders, timers) grows without end. This runs
N one-model simulations one after the other, each with a password of its
own, through their whole lifecycle (deploy, running, ready, ended, cleaned
up), and samples the daemon's RSS as it goes: the figure is flat or it is a
leak.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

from bench.kube import terminated_status_patch
from bench.proc import sample
from bench.stack import NAMESPACE, running_stack
from simulation_components.kit import ready, wait_for

__all__ = ["main", "measure"]

IMAGE = "fake_model:0.0.1"


def measure(*, simulations: int, every: int) -> dict[str, Any]:
    """Run the simulations; the daemon's RSS (MiB) after each ``every`` of them."""
    with running_stack() as stack:
        daemon, so, client = stack.daemon, stack.so, stack.server.driver
        rss: list[tuple[int, float]] = [(0, sample(daemon.pid).rss_mb)]
        started = time.monotonic()
        for index in range(1, simulations + 1):
            simulation = f"sim-{index:05d}"
            so.deploy(simulation, [("m", IMAGE, [("MQTT_PASSWORD", f"pw-{index}-{secrets.token_hex(12)}")])])

            def running(simulation: str = simulation) -> str:
                pods = client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                                      f"simulation_id={simulation}")["items"]
                return next((pod["metadata"]["name"] for pod in pods
                             if (pod.get("status") or {}).get("phase") == "Running"), "")

            name = wait_for(running, timeout=60, interval=0.01, what=f"{simulation}'s pod running")
            ready(so, simulation, "m")
            wait_for(lambda simulation=simulation: so.of(simulation, "ModelsReady"), interval=0.005,  # type: ignore[misc]
                     what="ModelsReady")
            client.request("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/status",
                           terminated_status_patch(name), content_type="application/strategic-merge-patch+json")
            so.wait_all_terminated(simulation)
            if index % every == 0:
                daemon.check_alive()
                rss.append((index, sample(daemon.pid).rss_mb))
        seconds = time.monotonic() - started
        wait_for(lambda: not client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector="
                                            "app.kubernetes.io/managed-by=model-services-orchestrator")["items"],
                 timeout=60, what="every record cleaned up")
        rss.append((simulations, sample(daemon.pid).rss_mb))
    server_version = stack.server.version
    first = next(value for index, value in rss if index >= every)
    return {"api_server": server_version, "simulations": simulations, "seconds": round(seconds, 1),
            "rss_mib": [[index, round(value, 1)] for index, value in rss],
            "growth_after_first_mib": round(rss[-1][1] - first, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    arguments = parser.parse_args(argv)
    result = measure(simulations=arguments.simulations, every=arguments.every)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
