"""The kill test as a soak run: ``python -m bench.kill_soak [--kills 500] [--seed N]``.

Runs ``test/integration/test_kills.py`` (the daemon SIGSTOPped then SIGKILLed at seeded random instants of
creates, readies and bursts of terminations, against a real Mosquitto and the real control plane) with many
more kills than CI's 40, and prints the outcome, the seed and the time taken: what docs/guarantees.md quotes.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kill_soak", description=__doc__)
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 32))
    options = parser.parse_args()
    env = {**os.environ, "MSO_KILLS": str(options.kills), "MSO_KILL_SEED": str(options.seed)}
    started = time.monotonic()
    outcome = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0", "-s",
         "test/integration/test_kills.py"], cwd=ROOT, env=env, check=False)
    minutes = (time.monotonic() - started) / 60
    verdict = "passed" if outcome.returncode == 0 else "FAILED"
    print(f"kill soak: {options.kills} kills, seed {options.seed}: {verdict} in {minutes:.1f} min")
    sys.exit(outcome.returncode)


if __name__ == "__main__":
    main()
