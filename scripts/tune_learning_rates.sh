#!/usr/bin/env bash
# The learning-rate sweep behind the table's rates (docs/alignment_tuning.md): every method gets the
# same tuning budget, on the tuning seeds (evaluate_alignment.py --tuning), never on the table's.
#
#   bash scripts/tune_learning_rates.sh OUT [REWARD] [low|mid|high ...]
#
# One folder per grid point (OUT/<reward>_<point>), resumable like evaluate_alignment.py itself.
# Batching as in the table: micro-batches of 4, accumulated 2 per update (one update per round).
set -euo pipefail
out=${1:?usage: tune_learning_rates.sh OUT [REWARD] [POINTS...]}
reward=${2:-palette}
shift $(( $# >= 2 ? 2 : 1 ))
points=("$@")
[ ${#points[@]} -gt 0 ] || points=(low mid high)
declare -A nabla=([low]=1.5e-3 [mid]=5e-3 [high]=1.5e-2)
declare -A refl=([low]=1.5e-4 [mid]=5e-4 [high]=1.5e-3)
declare -A ddpo=([low]=1.5e-3 [mid]=5e-3 [high]=1.5e-2)
here=$(cd "$(dirname "$0")/.." && pwd)
for p in "${points[@]}"; do
  args=()
  for m in refl ddpo draft nabla; do args+=(--set "$m.micro_batch=4" --set "$m.accumulate=2"); done
  PYTHONPATH="$here" "$here/.venv/bin/python" "$here/scripts/evaluate_alignment.py" --tuning \
    --out "$out/${reward}_$p" --rewards "$reward" --methods base refl ddpo draft nabla \
    --rounds 30 --trajectories 8 --eval-seeds 2 --seed 1 \
    --lr "nabla=${nabla[$p]}" --lr "refl=${refl[$p]}" --lr "draft=${refl[$p]}" --lr "ddpo=${ddpo[$p]}" \
    "${args[@]}" ${TUNE_EXTRA:-}
done
