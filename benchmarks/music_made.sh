#!/usr/bin/env bash
# SRNN with the MADE frame emission (autoregressive over the 88 keys of a frame) on the four music
# sets, standard splits; one thread per run, the runs one after another, each resumable.
#
#   PYRO_SEQ_DATA=../shared/data bash benchmarks/music_made.sh [RUNS]
#
# RUNS (default "jsb_s0 jsb_s1 jsb_s2 nottingham musedata piano"): jsb_sN is JSB with seed N;
# nottingham, musedata and piano use seed 0, and nottingham_sN (musedata_sN, piano_sN) seed N;
# the long-piece sets train by streaming (chunks of 100 frames, state carried within a piece,
# filter guide). A run that was killed (e.g. at the end of a sitting) continues from its last
# checkpoint when the script is run again; a finished run (test.json written) is skipped.
# Small SRNN (d 128, z 32, a 128, MLP 256), dropout 0.3, KL warm-up 0.2 -> 1 over 1000 steps,
# early stopping after 30 epochs without a better validation bound. Each run ends with the test
# -ELBO and -IWAE (K = 100) of its best-validation checkpoint in runs/music_made/<run>/test.json.
#
# MAX_MINUTES=M gives each run a training budget of M minutes in all (time before a resume counts):
# the run stops after the epoch that reaches it and is tested there. To train such a run further,
# run the script again with a larger MAX_MINUTES and CONTINUE=1 (it then resumes a run that has a
# test.json, retests it at its new stop, and keeps the earlier result as test.<date-time>.json).
set -euo pipefail
RUNS=${1:-"jsb_s0 jsb_s1 jsb_s2 nottingham musedata piano"}
PY=${PY:-python}
OUT=${OUT:-runs/music_made}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(--d-dim 128 --z-dim 32 --a-dim 128 --hidden-dim 256 --dropout 0.3 --emission made
        --warmup-start 0.2 --warmup-steps 1000 --lrd 0.9998 --epochs 1000 --patience 30
        --eval-samples 100 --no-progress)
for run in $RUNS; do
  out=$OUT/$run
  if [ -f "$out/test.json" ]; then
    [ "${CONTINUE:-0}" = 1 ] || { echo "done already: $out"; continue; }
    mv "$out/test.json" "$out/test.$(date +%Y%m%dT%H%M%S).json"
  fi
  mkdir -p "$out"
  resume=(); [ -f "$out/config.json" ] && resume=(--resume)  # a started run continues
  case $run in
    jsb_s*) args=(--data jsb --seed "${run#jsb_s}" --lr 1e-3) ;;
    nottingham|musedata|piano|nottingham_s*|musedata_s*|piano_s*)
      seed=0; [ "${run%_s*}" != "$run" ] && seed=${run##*_s}
      args=(--data "${run%_s*}" --seed "$seed" --lr 2e-3 --stream-length 100 --guide filter --no-res-q) ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  budget=(); [ -n "${MAX_MINUTES:-}" ] && budget=(--max-minutes "$MAX_MINUTES")
  echo "$(date +%T) start $run"
  $PY -m pyro_seq train srnn "${args[@]}" "${common[@]}" "${resume[@]}" "${budget[@]}" --out "$out" >> "$out.log" 2>&1
  echo "$(date +%T) done $run: $(grep -A3 'test bound of' "$out.log" | tail -2 | tr -s ' ' | tr '\n' ';')"
done
