#!/usr/bin/env bash
# Semi-supervised experiment: M2, ADGM and SDGM with 10 labels per class, over label seeds.
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/ssl_runs.sh [EPOCHS] [JOBS] [DATA] [SEEDS]
#
# DATA is dynamic_mnist (default; MNIST-100: 100 labels, 49,900 unlabelled images, grey levels
# binarized afresh each step) or digits (scikit-learn's 8x8 digits, offline: 100 labels, 1,100
# unlabelled). SEEDS (default "0 1 2") are label seeds; each run uses the same number as its
# initialisation and batch seed. Settings are the released ADGM code's: every network 2 hidden
# layers of 500 units (digits: 100), z and a of 100 (digits: 16), Adam lr 3e-4, 100 labelled +
# 100 unlabelled images per step, alpha = 0.1 N / N_l, one sample, no warm-up; EPOCHS passes over
# the unlabelled images (default 10; the released code runs 1000). Each run ends with the test
# error of its last checkpoint (no model selection on labels the task does not have) and of its
# best-validation checkpoint, with 100 samples of a per image. JOBS runs in parallel (default 2),
# one thread each. Output: runs/ssl/<DATA>/<model>_s<seed>/; table:
#   python benchmarks/ssl_table.py runs/ssl/<DATA>
set -euo pipefail
EPOCHS=${1:-10}
JOBS=${2:-2}
DATA=${3:-dynamic_mnist}
SEEDS=${4:-"0 1 2"}
OUT=${OUT:-runs/ssl/$DATA}
PY=${PY:-.venv/bin/python}
case $DATA in
  digits) SIZES="--z-dim 16 --a-dim 16 --hidden-dims 100,100" ;;
  *) SIZES="--z-dim 100 --a-dim 100 --hidden-dims 500,500" ;;
esac
mkdir -p "$OUT"
run() {
  local model=${1%_s*} seed=${1#*_s}
  local dir=$OUT/$1
  OMP_NUM_THREADS=1 $PY -m pyro_seq train "$model" --data "$DATA" --labels-per-class 10 \
    --label-seed "$seed" --seed "$seed" $SIZES --epochs "$EPOCHS" --lr 3e-4 --batch-size 100 \
    --labelled-batch-size 100 --eval-samples 100 --no-progress --out "$dir" --resume > "$dir.log" 2>&1
  echo "$(date +%T) done $1: $(tail -1 "$dir.log")"
}
export -f run
export OUT PY DATA EPOCHS SIZES
names=()
for seed in $SEEDS; do for model in sdgm adgm m2; do names+=("${model}_s$seed"); done; done
printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'run {}'
