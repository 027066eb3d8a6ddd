#!/usr/bin/env bash
# CI stage for the real-vLLM tier (docs/real_vllm.md): install vLLM's CPU build into its own environment
# (scripts/setup_vllm.sh; a no-op when already there), then run tests/real_vllm with that environment's
# python. Any failure, including an install that cannot be had, exits non-zero: nothing is skipped.
# Extra arguments go to pytest (e.g. -k parity, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AUTELLIX_VLLM_VENV:-$HOME/.cache/autellix/vllm-venv}
bash scripts/setup_vllm.sh
echo "== real vLLM tier ($VENV/bin/python)"
# AUTELLIX_REAL_VLLM=1: the tier's conftest treats a missing vLLM as an error instead of skipping.
export AUTELLIX_REAL_VLLM=1
exec "$VENV/bin/python" -m pytest tests/real_vllm -m real_vllm --durations=5 "$@"
