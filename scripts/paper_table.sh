#!/usr/bin/env bash
# Our Table 1 at the paper's budget (docs/alignment_table.md): 100 rounds x 16 trajectories per method
# and reward (1,600 trajectories), one update of 16 trajectories per round (micro-batches of 4,
# accumulated 4: the paper's batching), 64 held-out samples (8 prompts x 8 seeds), learning rates
# from the sweep on the tuning seeds (docs/alignment_tuning.md).
#
#   bash scripts/paper_table.sh OUT SEED REWARD     e.g.  bash scripts/paper_table.sh out/table1 0 palette
#
# METHODS="base ddpo draft" runs a subset (base is always measured: FD needs it); the learning rates
# come from REFL_LR DRAFT_LR DDPO_LR NABLA_LR.
#
# One folder per training seed and reward (OUT/seed<S>/<reward>), so two can run at once, one per
# core; each is resumable (evaluate_alignment.py reuses finished methods and continues checkpoints).
set -euo pipefail
out=${1:?usage: paper_table.sh OUT SEED REWARD}
seed=${2:?seed}
reward=${3:?reward}
here=$(cd "$(dirname "$0")/.." && pwd)
methods=(${METHODS:-base nabla refl ddpo draft})
declare -A lr=([nabla]=${NABLA_LR:-5e-3} [refl]=${REFL_LR:-5e-4} [draft]=${DRAFT_LR:-5e-4} [ddpo]=${DDPO_LR:-5e-3})
args=()
for m in "${methods[@]}"; do
  [[ $m == base ]] && continue
  args+=(--lr "$m=${lr[$m]}" --set "$m.micro_batch=4" --set "$m.accumulate=4")
  [[ $m == nabla ]] && args+=(--set nabla.intermediate_detail=0.5)
done
PYTHONPATH="$here" "$here/.venv/bin/python" "$here/scripts/evaluate_alignment.py" \
  --out "$out/seed$seed/$reward" --rewards "$reward" --methods "${methods[@]}" \
  --rounds 100 --trajectories 16 --eval-seeds 8 --seed "$seed" "${args[@]}"
