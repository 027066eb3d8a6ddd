#!/usr/bin/env bash
# The fuzz tier (tests/fuzz) with many more examples than CI runs: AUTELLIX_FUZZ_EXAMPLES per property
# (default here 200; CI's default is 8). Extra arguments go to pytest (e.g. -x, -k sidecar).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AUTELLIX_VENV:-.venv}
export AUTELLIX_FUZZ_EXAMPLES=${AUTELLIX_FUZZ_EXAMPLES:-200}
exec "$VENV/bin/python" -m pytest tests/fuzz -q -p no:cacheprovider --hypothesis-show-statistics "$@"
