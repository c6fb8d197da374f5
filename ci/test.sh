#!/usr/bin/env bash
# All checks and tests: lint, type check, buf breaking on the wire messages, then the whole test suite
# (unit, property, and end to end against a real Mosquitto and a real
# Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler built by ci/build_control_plane.sh, our kubelet, a fault proxy in front).
# Prepares the environment first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || [ "${PREPARE:-auto}" = "always" ]; then
    ci/prepare_dev_env.sh
fi
ci/lint.sh
ci/type_check.sh
ci/proto_breaking.sh
.venv/bin/python -m pytest "$@"
