#!/usr/bin/env bash
# mypy in strict mode over the package, the simulation components, the benchmarks and the tests.
# Each test folder is checked on its own: they are not packages, and each has its own conftest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
"$PY" -m mypy model_services_orchestrator simulation_components bench
for folder in test test/*/; do
    files=$(find "$folder" -maxdepth 1 -name '*.py')
    if [ -n "$files" ]; then
        # shellcheck disable=SC2086
        MYPYPATH=test/integration "$PY" -m mypy $files
    fi
done
