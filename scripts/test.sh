#!/usr/bin/env bash
# The whole test suite, as the README gives it: sets up what it needs, then lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${AUTELLIX_VENV:-.venv}
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy"
"$VENV/bin/mypy" autellix tests benchmarks
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
