#!/usr/bin/env bash
# Pins the dependencies: requirements.txt from requirements.in (the daemon's), then
# requirements-dev.txt from requirements-dev.in (tools, tests, simulation components),
# constrained by the runtime pins. Run after editing either .in file; commit all four.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
common=(--no-emit-find-links --no-emit-index-url --strip-extras --quiet)
"$PY" -m piptools compile "${common[@]}" --output-file=requirements.txt requirements.in
"$PY" -m piptools compile "${common[@]}" --output-file=requirements-dev.txt requirements-dev.in
