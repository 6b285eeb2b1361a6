#!/usr/bin/env bash
# VAE vs VAE/GAN runs of BENCHMARKS.md ("VAE/GAN"): Olivetti faces (64x64) and MNIST (28x28), CPU-sized
# networks (--width 0.125 of the paper's channel counts), plus VAE/GAN seeds for the collapse count.
# Usage: PYRO_SEQ_DATA=../shared/data bash benchmarks/vaegan_runs.sh [faces|mnist|seeds|all] [OUT=runs/vaegan]
# (SEEDS="1 2" picks the extra seeds; two lanes in parallel on 2 cores: "faces" then SEEDS="1 2" seeds,
# and "mnist" then SEEDS="3 4" seeds. Each run is one thread: OMP_NUM_THREADS=1.)
set -euo pipefail
what="${1:-all}"
out="${2:-runs/vaegan}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
py="${PYTHON:-python}"
classifier="${CLASSIFIER:-runs/mnist_classifier.pt}"
faces=(--data faces --width 0.125 --batch-size 32 --epochs 120 --no-progress)
mnist=(--data mnist --width 0.125 --batch-size 64 --limit 20000 --epochs 10 --classifier "$classifier" --no-progress)
if [[ "$what" == faces || "$what" == all ]]; then
  "$py" -m pyro_seq train vaegan "${faces[@]}" --seed 0 --out "$out/faces_vaegan_s0"
  "$py" -m pyro_seq train vae "${faces[@]}" --scale 0.1 --seed 0 --out "$out/faces_vae_s0"
fi
if [[ "$what" == mnist || "$what" == all ]]; then
  "$py" -m pyro_seq train vaegan "${mnist[@]}" --seed 0 --out "$out/mnist_vaegan_s0"
  "$py" -m pyro_seq train vae "${mnist[@]}" --scale 0.1 --seed 0 --out "$out/mnist_vae_s0"
fi
if [[ "$what" == seeds || "$what" == all ]]; then
  for seed in ${SEEDS:-1 2 3 4}; do
    "$py" -m pyro_seq train vaegan "${faces[@]}" --seed "$seed" --out "$out/faces_vaegan_s$seed"
  done
fi
