#!/usr/bin/env bash
# Ladder VAE experiment (issue 5): VAE (bottom-up guide) vs LVAE (ladder guide), each with and
# without KL warm-up + batch norm, at depths 2 and 5, on the fixed binarized MNIST.
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/lvae_runs.sh [EPOCHS] [JOBS]
#
# Each run trains for EPOCHS epochs (default 80; the paper trains 2000) with Adam lr 2e-3,
# batch 256, Monte Carlo ELBO (Trace_ELBO; one sample); warm-up = beta linear 0 -> 1 over the first
# 20% of the steps, else beta = 1 throughout. Then it evaluates the best-valid checkpoint:
# IW-5000 and ELBO on every 10th test image (1000 images, all classes; the test split is sorted
# by class) with per-layer KL and active units, and IW-100 and ELBO on the full test set.
# JOBS runs in parallel (default 2), one thread each. Output: runs/lvae/<name>/.
# Table: python benchmarks/lvae_table.py runs/lvae
set -euo pipefail
EPOCHS=${1:-80}
JOBS=${2:-2}
OUT=${OUT:-runs/lvae}
PY=${PY:-.venv/bin/python}
STEPS_PER_EPOCH=196  # ceil(50000 / 256)
WARMUP=$((EPOCHS * STEPS_PER_EPOCH / 5))
mkdir -p "$OUT"
run() {
  local name=$1 guide=$2 depth=$3 devices=$4
  local dims hidden extra
  if [ "$depth" = 5 ]; then dims=64,32,16,8,4; hidden=512,256,128,64,32; else dims=64,32; hidden=512,256; fi
  if [ "$devices" = on ]; then extra="--batch-norm --warmup-start 0 --warmup-steps $WARMUP"
  else extra="--no-batch-norm --warmup-start 1 --warmup-steps 0"; fi
  local dir=$OUT/$name
  OMP_NUM_THREADS=1 $PY -m pyro_seq train lvae --data binarized_mnist --guide "$guide" \
    --z-dims $dims --hidden-dims $hidden $extra --elbo trace --epochs "$EPOCHS" --batch-size 256 \
    --lr 2e-3 --seed 0 --eval-samples 0 --no-progress --out "$dir" --resume > "$dir.train.log" 2>&1
  OMP_NUM_THREADS=1 $PY -m pyro_seq evaluate "$dir/best.pt" --num-samples 5000 --every 10 --batch-size 50 \
    --latent-health --output "$dir/test_iw5000.json" > "$dir.eval.log" 2>&1
  OMP_NUM_THREADS=1 $PY -m pyro_seq evaluate "$dir/best.pt" --num-samples 100 --batch-size 250 \
    --output "$dir/test_iw100_full.json" >> "$dir.eval.log" 2>&1
  echo "$(date +%T) done $name"
}
export -f run
export OUT PY EPOCHS WARMUP
printf '%s\n' \
  "lvae5_wu_bn ladder 5 on" "vae5_wu_bn bottom-up 5 on" \
  "lvae5_plain ladder 5 off" "vae5_plain bottom-up 5 off" \
  "lvae2_wu_bn ladder 2 on" "vae2_wu_bn bottom-up 2 on" \
  "lvae2_plain ladder 2 off" "vae2_plain bottom-up 2 off" |
  xargs -P "$JOBS" -L 1 bash -c 'run "$@"' _
