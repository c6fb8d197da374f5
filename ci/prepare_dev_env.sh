#!/usr/bin/env bash
# Makes a development environment from nothing: a virtualenv with the pinned
# dependencies, the package installed editable, and Mosquitto (the tests start
# their own brokers) installed through apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "Installing Mosquitto..."
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
    # The package starts a broker on 1883 where systemd runs; the tests do not need it.
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "Control plane for the tests (etcd, kube-apiserver, kube-controller-manager; built once with Go, then cached) in:" && ci/build_control_plane.sh
echo "Development environment ready: . .venv/bin/activate"
