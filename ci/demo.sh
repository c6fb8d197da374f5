#!/usr/bin/env bash
# The quickstart on this machine: a local Mosquitto, a real Kubernetes control
# plane whose kubelet runs each fake model as a local process, the
# orchestrator, and an SO that deploys one simulation and follows it to its
# end. Prints what happens, then a summary; exits 0 when every model got the
# answer it should. The first run prepares the machine (ci/prepare_dev_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/build_control_plane.sh --check
if [ ! -x .venv/bin/python ]; then
    ci/prepare_dev_env.sh
else
    ci/build_control_plane.sh >/dev/null
fi
exec .venv/bin/python -m simulation_components.demo "$@"
