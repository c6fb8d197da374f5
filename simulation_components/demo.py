"""The quickstart on one machine, no cluster needed: what ``ci/demo.sh`` runs.

Starts a local Mosquitto, the local Kubernetes API server (its kubelet runs
each fake model as a real process), the orchestrator as its own process,
and the fake SO's quickstart; prints the lifecycle as it happens and exits
with the fake SO's code (0 at AllModelsHaveTerminated).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulation_components.local_daemon import REPO_ROOT, LocalDaemon, daemon_environment
from simulation_components.local_kubernetes.launcher import LocalKubernetes
from simulation_components.local_mosquitto import LocalMosquitto


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--model-run-seconds", type=float, default=3.0)
    parser.add_argument("--show-daemon-log", action="store_true", help="print the daemon's log afterwards")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mso-demo-") as scratch, \
            LocalMosquitto(password=secrets.token_hex(8)) as broker, \
            LocalKubernetes(kubelet="process", token=secrets.token_hex(16)) as kube:
        # The daemon's env (which the fake SO inherits too, for its broker settings).
        env = daemon_environment(broker, kube, {"LOG_FORMAT": "console", "HTTP_PORT": 0,
                                                   # one daemon, and the stand-in serves no Leases
                                                   "LEADER_ELECTION": "false"}, inherit=True)
        print(f"local Mosquitto on {broker.port}, local Kubernetes API on {kube.url}", flush=True)
        daemon = LocalDaemon(env=env, log_path=Path(scratch) / "daemon.log").start()
        try:
            # The daemon's first session exists at the broker only once it has subscribed.
            deadline = time.monotonic() + 60
            while "mqtt subscribed" not in daemon.log_text():
                if not daemon.alive or time.monotonic() > deadline:
                    print(daemon.log_text())
                    print("the orchestrator did not come up")
                    return 1
                time.sleep(0.1)
            result = subprocess.run(
                [sys.executable, "-m", "simulation_components.fake_simulator", "--models", str(args.models),
                 "--model-run-seconds", str(args.model_run_seconds), "--timeout", "120"],
                cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, check=False)
        finally:
            daemon.stop()
        if args.show_daemon_log or result.returncode != 0:
            print("--- daemon log ---")
            print(daemon.log_text())
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
