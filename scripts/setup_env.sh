#!/usr/bin/env bash
# Creates (once) a virtual environment in .venv and installs pyro_seq into it.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it only
# reinstalls when setup.cfg changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYRO_SEQ_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if ! python -c "import torch" >/dev/null 2>&1; then
  # A CPU wheel of torch 2.13.0 is what CI machines carry; installing it first
  # keeps pip from pulling several GB of CUDA wheels onto a CPU-only machine.
  echo "[setup] installing torch"
  pip install -q "torch==2.13.0" || {
    echo "[setup] torch==2.13.0 is not available here; installing the default torch build" >&2
    pip install -q "torch>=2.0"
  }
fi
STAMP="$VENV/.pyro_seq_installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ]; then
  echo "[setup] installing pyro_seq and its dependencies"
  pip install -q -e "$ROOT[test,chorales]"
  touch "$STAMP"
fi
