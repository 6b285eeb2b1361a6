#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html: Sphinx with warnings as errors, the API
# reference from the docstrings, and the tutorials run in smoke mode (their figures shown).
# Uses .venv (scripts/setup_env.sh) with the `docs` extra. Extra arguments go to sphinx-build.
# PYRO_SEQ_DOCS_TUTORIALS=0 renders the tutorials without running them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYRO_SEQ_DOCS_NO_SETUP:-}" ]; then
  # shellcheck disable=SC1091
  . "$ROOT/scripts/setup_env.sh"
  STAMP="$VENV/.pyro_seq_docs_installed"
  if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ]; then
    echo "[docs] installing the docs extra"
    pip install -q -e "$ROOT[docs]"
    touch "$STAMP"
  fi
fi
cd "$ROOT"
if [ -z "${PYRO_SEQ_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export PYRO_SEQ_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPLBACKEND=Agg
rm -rf docs/tutorials
exec python -m sphinx -E -W --keep-going -b html docs docs/_build/html "$@"
