#!/usr/bin/env bash
# RNN-SPN runs of BENCHMARKS.md ("Recurrent spatial transformers"), CPU-sized (one thread each) on the
# three-digit cluttered-MNIST set (60,000 training images; 2,000 validation images select the checkpoint;
# the 10,000 test images):
#   lane_a: rnn-spn (downsample 3), ffn-spn, then the down-sampling run at factor 1;
#   lane_b: cnn, the stochastic-attention runs (two start from lane_a's rnn_spn), then factors 2, 3, 4.
#   main:   the three models and the stochastic variant; ds: the down-sampling runs only.
# Main runs train for MINUTES (default 30) of wall-clock time each; the down-sampling runs for one epoch
# of 30,000 images (600 steps of 50) each, the same for every factor.
# GPU (the paper-length runs): MINUTES= EPOCHS=300 DEVICE=cuda bash benchmarks/spn_runs.sh main
# Usage: PYRO_SEQ_DATA=../shared/data bash benchmarks/spn_runs.sh [lane_a|lane_b|main|ds|all] [OUT=runs/spn]
set -euo pipefail
what="${1:-all}"
out="${2:-runs/spn}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
py="${PYTHON:-python}"
minutes="${MINUTES-30}"
budget=()
[[ -n "$minutes" ]] && budget=(--max-minutes "$minutes")
common=(--variant sequence3 --num-train 60000 --valid-images 2000 --batch-size 50 --epochs "${EPOCHS:-20}" --device "${DEVICE:-cpu}" --no-progress "${budget[@]}")
ds=(--variant sequence3 --num-train 30000 --valid-images 2000 --batch-size 50 --epochs 1 --device "${DEVICE:-cpu}" --no-progress)
run() { "$py" -m pyro_seq train "$@"; }
if [[ "$what" == lane_a || "$what" == main || "$what" == all ]]; then
  run rnn-spn "${common[@]}" --out "$out/rnn_spn"
  run ffn-spn "${common[@]}" --out "$out/ffn_spn"
fi
if [[ "$what" == lane_b || "$what" == main || "$what" == all ]]; then
  run cnn "${common[@]}" --out "$out/cnn"
  # stochastic attention (after lane_a's rnn_spn): the ELBO and beta = 0.01 from the trained RNN-SPN; the ELBO
  # runs were stopped by hand after one epoch (spn_figures.py tests their best checkpoints)
  run rnn-spn "${common[@]/30/15}" --stochastic-attention --kl-weight 0.01 --init-from "$out/rnn_spn/best.pt" --out "$out/rnn_spn_stochastic_beta"
  run rnn-spn "${common[@]}" --stochastic-attention --epochs 1 --init-from "$out/rnn_spn/best.pt" --out "$out/rnn_spn_stochastic"
  run rnn-spn "${common[@]}" --stochastic-attention --epochs 1 --out "$out/rnn_spn_stochastic_nowarmup"
  run rnn-spn "${common[@]}" --stochastic-attention --epochs 1 --warmup-steps 2400 --out "$out/rnn_spn_stochastic_warmup"
fi
if [[ "$what" == lane_a || "$what" == ds || "$what" == all ]]; then
  run rnn-spn "${ds[@]}" --downsample 1 --out "$out/ds1"
fi
if [[ "$what" == lane_b || "$what" == ds || "$what" == all ]]; then
  for factor in 2 3 4; do
    run rnn-spn "${ds[@]}" --downsample "$factor" --out "$out/ds$factor"
  done
fi
