#!/usr/bin/env bash
# The quickstart on this machine: the daemon, a local Mosquitto, the local Kubernetes
# API server with real fake-model processes, and the fake SO. Prints the lifecycle
# and exits 0 at AllModelsHaveTerminated.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    ci/prepare_dev_env.sh
fi
exec .venv/bin/python -m simulation_components.demo "$@"
