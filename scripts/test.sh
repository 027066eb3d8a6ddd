#!/usr/bin/env bash
# The whole test suite, as the README gives it: sets up what it needs, then lint, types, the main pytest
# tiers (unit, contract, integration, deploy, e2e) and the real-vLLM tier in its own environment.
# Arguments go to the main pytest run (then the real-vLLM stage is left out: a focused local run);
# AUTELLIX_SKIP_REAL_VLLM=1 leaves that stage out too. CI runs it with no arguments: everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${AUTELLIX_VENV:-.venv}
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy"
"$VENV/bin/mypy" autellix tests benchmarks deploy
echo "== pytest"
if [ $# -gt 0 ]; then
  exec "$VENV/bin/python" -m pytest "$@"
fi
"$VENV/bin/python" -m pytest --ignore=tests/real_vllm
if [ "${AUTELLIX_SKIP_REAL_VLLM:-0}" = 1 ]; then
  echo "== real vLLM tier: left out (AUTELLIX_SKIP_REAL_VLLM=1)"
else
  bash scripts/test_real_vllm.sh
fi
