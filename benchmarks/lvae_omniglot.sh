#!/usr/bin/env bash
# Ladder VAE vs bottom-up VAE (5 layers, warm-up + batch norm) on the Omniglot subsets of
# pyro_seq.data.load_omniglot (3,872 / 484 / 484 images, 28x28, dynamically binarized; NOT the
# chardata.mat split of the IWAE/LVAE papers, so not comparable with their numbers).
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/lvae_omniglot.sh [EPOCHS]
#
# EPOCHS default 300 (16 steps each, batch 256; warm-up over the first 20% of the steps).
# Evaluation of the best-valid checkpoint: IW-5000 and ELBO on all 484 test images, per-layer KL
# and active units. Output: runs/lvae_omniglot/<name>/. Table: python benchmarks/lvae_table.py runs/lvae_omniglot
set -euo pipefail
EPOCHS=${1:-300}
OUT=${OUT:-runs/lvae_omniglot}
PY=${PY:-.venv/bin/python}
WARMUP=$((EPOCHS * 16 / 5))
mkdir -p "$OUT"
for guide in ladder bottom-up; do
  name=$([ "$guide" = ladder ] && echo lvae5_wu_bn || echo vae5_wu_bn)
  dir=$OUT/$name
  OMP_NUM_THREADS=1 $PY -m pyro_seq train lvae --data omniglot --guide "$guide" --batch-norm \
    --warmup-start 0 --warmup-steps "$WARMUP" --elbo trace --epochs "$EPOCHS" --batch-size 256 --lr 2e-3 \
    --seed 0 --eval-samples 0 --no-progress --out "$dir" --resume > "$dir.train.log" 2>&1
  OMP_NUM_THREADS=1 $PY -m pyro_seq evaluate "$dir/best.pt" --num-samples 5000 --batch-size 44 \
    --latent-health --output "$dir/test_iw5000.json" > "$dir.eval.log" 2>&1
  echo "$(date +%T) done $name"
done
