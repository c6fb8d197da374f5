#!/usr/bin/env bash
# Makes a development environment from nothing: the Kubernetes control plane
# and Kueue (built once with Go into caches outside the repository), Mosquitto (the
# tests start their own brokers) and Prometheus (its promtool checks the alert
# rules; the tests start their own servers) through apt-get when they are missing, and a
# virtualenv with the pinned dependencies and the package installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"

# First, before anything is installed: a machine that cannot build the control plane hears it at once.
ci/build_control_plane.sh --check
ci/build_kueue.sh --check

# From Debian's packages, what is missing: Mosquitto (the tests start their own brokers) and Prometheus
# with promtool (the monitoring tests start their own). Where systemd runs, the packages start a broker on
# 1883 and a Prometheus on 9090; the tests do not use them.
packages=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    packages+=(mosquitto mosquitto-clients)
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "Installing ${packages[*]} with apt-get..."
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "Creating the virtualenv .venv with the pinned dependencies..."
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "Control plane: $(ci/build_control_plane.sh)"
echo "Kueue (the tests of KUEUE_QUEUE_NAME): $(ci/build_kueue.sh)"
echo "Development environment ready: . .venv/bin/activate"
