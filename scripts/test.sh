#!/usr/bin/env bash
# The test command: sets up .venv (first run only) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# benchmark data: ../shared/data beside the checkout unless PYRO_SEQ_DATA says otherwise
if [ -z "${PYRO_SEQ_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export PYRO_SEQ_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
exec python -m pytest "$@"
