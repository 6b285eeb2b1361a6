#!/usr/bin/env bash
# SRNN on JSB with each guide: the filter, the smoother without Res_q,
# and the smoother with Res_q (the "warmup" run of benchmarks/zforcing_claim.py), all with the
# settings of that experiment; then the test bounds: ELBO and IWAE with K = 100 and 1000, and
# FIVO with 100 and 1000 particles (and the same for the best Z-Forcing run of the claim experiment).
#   bash benchmarks/srnn_guides.sh            # runs/guides/jsb/{filter,smoother}, runs/claim/jsb/srnn_warmup
set -euo pipefail
OUT="${OUT:-runs/guides/jsb}"
COMMON=(--data jsb --epochs 100 --batch-size 16 --dropout 0.3 --lr 2e-3 --lrd 0.9998 --seed 0
        --eval-samples 100 --no-progress --d-dim 128 --z-dim 32 --a-dim 128 --hidden-dim 256
        --warmup-start 0.2 --warmup-steps 1000)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
train() {  # name, extra args
  local dir="$OUT/$1"; shift
  [ -f "$dir/test.json" ] || pyro-seq train srnn "${COMMON[@]}" --out "$dir" "$@" $([ -f "$dir/last.pt" ] && echo --resume)
}
train filter --guide filter --no-res-q &
train smoother --guide smoother --no-res-q &
wait
evaluate() {  # checkpoint: test bounds with K = 100 and 1000 (IWAE samples and FIVO particles)
  local dir; dir="$(dirname "$1")"
  for k in 100 1000; do
    [ -f "$dir/test_k$k.json" ] || pyro-seq evaluate "$1" --split test --num-samples "$k" --fivo-particles "$k" --batch-size 16 --output "$dir/test_k$k.json"
  done
}
for ckpt in "$OUT/filter/best.pt" "$OUT/smoother/best.pt" runs/claim/jsb/srnn_warmup/best.pt runs/claim/jsb/zforcing_warmup/best.pt; do
  evaluate "$ckpt" &
done
wait
python benchmarks/guide_table.py | tee runs/guides/jsb/table.md
