#!/usr/bin/env bash
# The main job, as the README gives it: sets up what it needs, then runs `autellix demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
AUTELLIX_SKIP_APT=${AUTELLIX_SKIP_APT:-1} bash scripts/setup.sh
VENV=${AUTELLIX_VENV:-.venv}
exec "$VENV/bin/autellix" demo "$@"
