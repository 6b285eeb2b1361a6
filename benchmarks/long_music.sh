#!/usr/bin/env bash
# SRNN on the long-piece music sets with streaming (truncated backpropagation through chunks of
# 100 frames, state carried within a piece): Nottingham, MuseData, Piano-midi.de, standard splits.
#
#   PYRO_SEQ_DATA=../shared/data [EVAL_SAMPLES=K] bash benchmarks/long_music.sh [MINUTES] [SETS]
#
# Small SRNN (d 128, z 32, a 128, MLP 256, dropout 0.3), filter guide (its streamed bound is the
# whole-sequence ELBO exactly), lr 2e-3 with decay 0.9998 per step, KL warm-up 0.2 -> 1 over 1000
# steps, 16 streams per step, a training-time budget of MINUTES (default 15) per set, one thread
# per run, the sets one after another. Each run ends with the test -ELBO and -IWAE (K = EVAL_SAMPLES,
# default 100) of whole pieces from its best-validation checkpoint (test.json); then the streamed
# test ELBO in chunks of 100 (best_test_eval.json). Output: runs/long_music/<set>/.
set -euo pipefail
MINUTES=${1:-15}
EVAL_SAMPLES=${EVAL_SAMPLES:-100}
SETS=${2:-"piano nottingham musedata"}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for data in $SETS; do
  out=runs/long_music/$data
  mkdir -p "$out"
  [ -f "$out/test.json" ] || $PY -m pyro_seq train srnn --data "$data" --out "$out" --stream-length 100 --batch-size 16 \
    --d-dim 128 --z-dim 32 --a-dim 128 --hidden-dim 256 --dropout 0.3 --guide filter --no-res-q \
    --lr 2e-3 --lrd 0.9998 --warmup-start 0.2 --warmup-steps 1000 --seed 0 --epochs 1000 \
    --max-minutes "$MINUTES" --eval-samples "$EVAL_SAMPLES" --no-progress $([ -f "$out/last.pt" ] && echo --resume) > "$out.log" 2>&1
  $PY -m pyro_seq evaluate "$out/best.pt" --split test --stream-length 100 --batch-size 16 >> "$out.log" 2>&1
  echo "$(date +%T) done $data: $(grep -m1 'test bound' "$out.log" | cut -c1-200)"
done
