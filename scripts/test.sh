#!/usr/bin/env bash
# The whole test suite, as the README gives it: sets up what it needs, then lint, types, the main pytest
# tiers (unit, contract, integration, deploy, e2e) and the real-vLLM tier in its own environment.
# Arguments go to the main pytest run (then the real-vLLM stage is left out: a focused local run);
# AUTELLIX_SKIP_REAL_VLLM=1 leaves that stage out too. CI runs it with no arguments: everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${AUTELLIX_VENV:-.venv}
# vLLM's CPU build (~2 min on a fresh machine, mostly download and unpacking) installs in the background
# while lint, types and the main tier run; its stage waits for it and fails if it failed.
vllm_setup_pid=""
vllm_setup_log=""
if [ $# -eq 0 ] && [ "${AUTELLIX_SKIP_REAL_VLLM:-0}" != 1 ]; then
  vllm_setup_log=$(mktemp)
  nice -n 5 bash scripts/setup_vllm.sh >"$vllm_setup_log" 2>&1 &
  vllm_setup_pid=$!
fi
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
  if ! wait "$vllm_setup_pid"; then
    cat "$vllm_setup_log"
    echo "== real vLLM tier: vLLM's set-up failed (above)" >&2
    exit 1
  fi
  cat "$vllm_setup_log"
  bash scripts/test_real_vllm.sh
fi
