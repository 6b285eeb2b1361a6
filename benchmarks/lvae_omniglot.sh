#!/usr/bin/env bash
# Ladder VAE vs bottom-up VAE (5 layers, warm-up + batch norm) on the Omniglot subsets of
# pyro_seq.data.load_omniglot (3,872 / 484 / 484 images, 28x28, dynamically binarized; NOT the
# chardata.mat split of the IWAE/LVAE papers, so not comparable with their numbers).
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/lvae_omniglot.sh [EPOCHS]
#
# EPOCHS default 300 (16 steps each, batch 256; warm-up over the first 20% of the steps), the two
# runs one after the other through benchmarks/lvae_runs.sh. Evaluation of the best-valid
# checkpoint: IW-5000 and ELBO on all 484 test images, per-layer KL and active units.
# Output: runs/lvae_omniglot/<name>/. Table: python benchmarks/lvae_table.py runs/lvae_omniglot
set -euo pipefail
DATA=omniglot STEPS_PER_EPOCH=16 EVERY=1 EVAL_BATCH=44 FULL_TEST=0 OUT=${OUT:-runs/lvae_omniglot} \
  exec bash "$(dirname "$0")/lvae_runs.sh" "${1:-300}" 1 lvae5_wu_bn vae5_wu_bn
