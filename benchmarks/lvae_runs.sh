#!/usr/bin/env bash
# Ladder VAE experiment: VAE (bottom-up guide) vs LVAE (ladder guide), each with and
# without KL warm-up + batch norm, at depths 2 and 5, on the fixed binarized MNIST.
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/lvae_runs.sh [EPOCHS] [JOBS] [RUN ...]
#
# A run is named {vae,lvae}{2,5}_{plain,wu,bn,wu_bn}: bottom-up or ladder guide, depth 2 (z 64-32,
# blocks 512-256) or 5 (the paper's 64-32-16-8-4, 512-256-128-64-32), with neither device, KL
# warm-up only, batch norm only, or both. Default: the eight {vae,lvae}{2,5}_{plain,wu_bn} runs.
#
# Each run trains for EPOCHS epochs (default 80; the paper trains 2000) with Adam lr 2e-3,
# batch 256, Monte Carlo ELBO (Trace_ELBO; one sample); warm-up = beta linear 0 -> 1 over the first
# 20% of the steps, else beta = 1 throughout. Then it evaluates the best-valid checkpoint:
# IW-5000 and ELBO on every 10th test image (1000 images, all classes; the test split is sorted
# by class) with per-layer KL and active units, and IW-100 and ELBO on the full test set.
# JOBS runs in parallel (default 2), one thread each. Output: runs/lvae/<name>/.
# Table: python benchmarks/lvae_table.py runs/lvae
# Other data (benchmarks/lvae_omniglot.sh uses these): DATA (default binarized_mnist),
# STEPS_PER_EPOCH (default 196), EVERY (test subset for IW-5000, default 10), EVAL_BATCH
# (default 50), FULL_TEST (1: also IW-100 on the whole test split, default 1).
set -euo pipefail
EPOCHS=${1:-80}
JOBS=${2:-2}
OUT=${OUT:-runs/lvae}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-binarized_mnist}
STEPS_PER_EPOCH=${STEPS_PER_EPOCH:-196}  # ceil(50000 / 256)
EVERY=${EVERY:-10}
EVAL_BATCH=${EVAL_BATCH:-50}
FULL_TEST=${FULL_TEST:-1}
WARMUP=$((EPOCHS * STEPS_PER_EPOCH / 5))
mkdir -p "$OUT"
run() {
  local name=$1 guide dims hidden extra
  case $name in
    lvae*) guide=ladder ;; vae*) guide=bottom-up ;; *) echo "bad run name $name" >&2; return 1 ;;
  esac
  case $name in
    *5_*) dims=64,32,16,8,4; hidden=512,256,128,64,32 ;; *2_*) dims=64,32; hidden=512,256 ;;
    *) echo "bad run name $name" >&2; return 1 ;;
  esac
  case ${name#*_} in
    plain) extra="--no-batch-norm --warmup-start 1 --warmup-steps 0" ;;
    wu) extra="--no-batch-norm --warmup-start 0 --warmup-steps $WARMUP" ;;
    bn) extra="--batch-norm --warmup-start 1 --warmup-steps 0" ;;
    wu_bn) extra="--batch-norm --warmup-start 0 --warmup-steps $WARMUP" ;;
    *) echo "bad run name $name" >&2; return 1 ;;
  esac
  local dir=$OUT/$name
  OMP_NUM_THREADS=1 $PY -m pyro_seq train lvae --data "$DATA" --guide "$guide" \
    --z-dims $dims --hidden-dims $hidden $extra --elbo trace --epochs "$EPOCHS" --batch-size 256 \
    --lr 2e-3 --seed 0 --eval-samples 0 --no-progress --out "$dir" --resume > "$dir.train.log" 2>&1
  OMP_NUM_THREADS=1 $PY -m pyro_seq evaluate "$dir/best.pt" --num-samples 5000 --every "$EVERY" \
    --batch-size "$EVAL_BATCH" --latent-health --output "$dir/test_iw5000.json" > "$dir.eval.log" 2>&1
  if [ "$FULL_TEST" = 1 ]; then
    OMP_NUM_THREADS=1 $PY -m pyro_seq evaluate "$dir/best.pt" --num-samples 100 --batch-size 250 \
      --output "$dir/test_iw100_full.json" >> "$dir.eval.log" 2>&1
  fi
  echo "$(date +%T) done $name"
}
export -f run
export OUT PY EPOCHS WARMUP DATA EVERY EVAL_BATCH FULL_TEST
shift $(( $# < 2 ? $# : 2 ))
RUNS=("$@")
if [ ${#RUNS[@]} -eq 0 ]; then
  RUNS=(lvae5_wu_bn vae5_wu_bn lvae5_plain vae5_plain lvae2_wu_bn vae2_wu_bn lvae2_plain vae2_plain)
fi
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -L 1 bash -c 'run "$@"' _
