#!/usr/bin/env bash
# The benchmark suite: the daemon through whole simulation lifecycles against a real Mosquitto and the
# local Kubernetes API server (status-only kubelet). Prints a table with PASS/MISS per target and writes
# bench/results/<date>-<scenario>.json. See docs/benchmarks.md.
#
# Usage: ci/bench.sh [--scenario 1000|10000|50x40|all]... [--profile] [--idle-seconds S] [...]
#        (ci/bench.sh --help lists every option)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    ci/prepare_dev_env.sh
fi
for argument in "$@"; do
    if [ "$argument" = "--profile" ] && [ ! -x .venv/bin/py-spy ] && ! command -v py-spy >/dev/null 2>&1; then
        echo "Installing py-spy for --profile..."
        .venv/bin/python -m pip install -q py-spy
    fi
done
exec .venv/bin/python -m bench "$@"
