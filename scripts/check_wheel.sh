#!/usr/bin/env bash
# Release check: builds the wheel, installs it (not editable) with its dependencies into a fresh
# virtual environment outside the source tree, and from a temporary folder runs `pyro-seq --help`
# and one tiny training run (an SRNN, one epoch on a few JSB pieces from the data root). Nothing
# that only the source tree has can be used: the wheel must carry everything the package reads.
# torch comes from `pip install torch==2.13.0` (the CPU wheel CI machines carry), the rest from
# the package index. PYRO_SEQ_DATA (default ../shared/data beside the checkout) is the data root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ -z "${PYRO_SEQ_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export PYRO_SEQ_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
: "${PYRO_SEQ_DATA:?set PYRO_SEQ_DATA to the data root (JSB Chorales is read from it)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
step() { echo "[wheel] $*"; }

step "building the wheel"
# from a copy of the files git tracks (or would track): nothing ignored or left over in the checkout
"$PY" - "$ROOT" "$WORK/src" <<'PY'
import shutil
import subprocess
import sys
from pathlib import Path

root, dest = map(Path, sys.argv[1:])
listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        check=True, capture_output=True).stdout.decode()
for name in filter(None, listed.split("\0")):
    if (root / name).is_file():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)
PY
"$PY" -m venv "$WORK/build-env"
"$WORK/build-env/bin/python" -m pip wheel -q "$WORK/src" --no-deps -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/pyro_seq-*.whl)"
"$PY" - "$WHEEL" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
outside = [n for n in names if not n.startswith(("pyro_seq/", "pyro_seq-"))]
print(f"[wheel] {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files")
assert not outside, f"the wheel carries files from outside pyro_seq/: {outside[:5]}"
assert any(n.endswith(".dist-info/entry_points.txt") for n in names), "no entry points (pyro-seq)"
PY

step "installing it into a fresh virtual environment"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q "torch==2.13.0" || {
  echo "[wheel] torch==2.13.0 is not available here; installing the default torch build" >&2
  "$VPY" -m pip install -q "torch>=2.0"
}
"$VPY" -m pip install -q "$WHEEL"

mkdir "$WORK/run"
cd "$WORK/run"
# the installed copy, not the checkout: PYTHONPATH cleared, and the import path checked
export PYTHONPATH=
"$VPY" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import pyro_seq

where = Path(pyro_seq.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"pyro_seq imported from the source tree: {where}"
print(f"[wheel] pyro_seq {pyro_seq.__version__} from {where.parent}")
PY
step "pyro-seq --help"
"$WORK/venv/bin/pyro-seq" --help >/dev/null
"$WORK/venv/bin/pyro-seq" train --help >/dev/null
step "one tiny training run"
OMP_NUM_THREADS=1 "$WORK/venv/bin/pyro-seq" train srnn --data jsb --data-root "$PYRO_SEQ_DATA" --out "$WORK/run/srnn" \
  --epochs 1 --batch-size 4 --d-dim 8 --z-dim 4 --a-dim 8 --hidden-dim 8 --max-train-sequences 8 \
  --max-eval-sequences 4 --max-length 20 --eval-samples 2 --no-progress --device cpu
test -s "$WORK/run/srnn/best.pt"
"$WORK/venv/bin/pyro-seq" sample "$WORK/run/srnn/best.pt" --num 1 --steps 8 --out "$WORK/run/samples" >/dev/null
step "ok"
