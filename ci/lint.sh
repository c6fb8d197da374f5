#!/usr/bin/env bash
# Style and the architecture rule: ruff, and import-linter (the pure core imports no adapter).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
"$PY" -m ruff check .
PATH="$(pwd)/.venv/bin:$PATH" lint-imports
