"""Failover time over many failovers: ``python -m bench.failover [--failovers 20]``.

Runs the kill test of ``test/integration/test_failover.py`` (two replicas on a real Mosquitto and the real
control plane, a 3 s lease; the leader SIGKILLed while models end, the killed one back as the standby) for
``--failovers`` rounds, and prints the time from each kill to the new leader's first answer: what
docs/guarantees.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--failovers", type=int, default=20)
    options = parser.parse_args()
    env = {**os.environ, "MSO_FAILOVERS": str(options.failovers)}
    outcome = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", "-k", "killed_leaders",
         "test/integration/test_failover.py"], cwd=ROOT, env=env, check=False, capture_output=True, text=True)
    found = [line for line in outcome.stdout.splitlines() if line.startswith("failover seconds:")]
    if outcome.returncode or not found:
        sys.stdout.write(outcome.stdout[-5000:])
        sys.exit(outcome.returncode or 1)
    seconds = json.loads(found[0].partition(":")[2])
    print(f"{len(seconds)} failovers (lease 3 s, renew 2 s, retry 0.5 s): kill to first answer "
          f"min {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
    print("each:", seconds)


if __name__ == "__main__":
    main()
