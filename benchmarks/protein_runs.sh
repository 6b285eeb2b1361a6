#!/usr/bin/env bash
# Protein runs of BENCHMARKS.md ("Protein sequence models"), CPU-sized (one thread each):
#   loc_det / loc_bll: ProteinLocalizer under --protocol deeploc (train: the DeepLoc validation file,
#     test: the DeepLoc 1.0 test split and setHARD), deterministic (+ MC dropout at test) and with a
#     Bayesian last layer;
#   ss_det / ss_bll: SecondaryStructureBLSTM on CB513 fold 0 of 5 (train 3 folds, select on 1, test on 1).
#   loc_cv0: the deterministic localiser under --protocol cv, fold 0 of 5 (an 18-minute training budget).
#   ss_det_f1..f4: the other CB513 folds (FOLDS="1 2" picks some).
# Usage: PYRO_SEQ_DATA=../shared/data bash benchmarks/protein_runs.sh [loc|loc_cv|ss|ss_cv|all] [OUT=runs/protein]
set -euo pipefail
what="${1:-all}"
out="${2:-runs/protein}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
py="${PYTHON:-python}"
loc=(--protocol deeploc --max-length 500 --filters 20 --hidden 32 --dense 32 --dropout 0.25 --epochs 15 --patience 5 --batch-size 32 --no-progress)
ss=(--num-folds 5 --filters 16 --hidden 32 --dense 32 --dropout 0.25 --epochs 20 --patience 5 --batch-size 16 --no-progress)
if [[ "$what" == loc || "$what" == all ]]; then
  "$py" -m pyro_seq train localizer "${loc[@]}" --out "$out/loc_det"
  "$py" -m pyro_seq train localizer "${loc[@]}" --bayesian-last-layer --out "$out/loc_bll"
fi
if [[ "$what" == loc_cv || "$what" == all ]]; then  # cross-validation fold 0 of 5 over both DeepLoc files
  "$py" -m pyro_seq train localizer "${loc[@]/deeploc/cv}" --fold 0 --num-folds 5 --max-minutes 18 --out "$out/loc_cv0"
fi
if [[ "$what" == ss_cv || "$what" == all ]]; then  # the other four CB513 folds, deterministic (+ MC dropout)
  for fold in ${FOLDS:-1 2 3 4}; do
    "$py" -m pyro_seq train secondary-structure "${ss[@]}" --fold "$fold" --out "$out/ss_det_f$fold"
  done
fi
if [[ "$what" == ss || "$what" == all ]]; then
  "$py" -m pyro_seq train secondary-structure "${ss[@]}" --fold 0 --out "$out/ss_det"
  "$py" -m pyro_seq train secondary-structure "${ss[@]}" --fold 0 --bayesian-last-layer --out "$out/ss_bll"
fi
