#!/usr/bin/env bash
# Copy what a table run measured (reports, logs, evaluations, tables, plots) from OUT to DEST, a
# tracked folder, leaving out what is large or only needed to resume (checkpoints, adapters,
# feature tensors, preview meshes, per-cell sheets and curves). A later session can read the figures even though out/ is not
# kept; to continue a cell it must train again.
#
#   bash scripts/keep_table_results.sh out/table1 results/table1
set -euo pipefail
src=${1:?usage: keep_table_results.sh OUT DEST}
dest=${2:?dest}
cd "$src"
find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' -o -name '*.log' \) \
  -not -path '*/previews/*' -not -path '*/adapter/*' -not -name before_after.png -not -name before.png -not -name after.png -not -name reward_curve.png -print0 |
  while IFS= read -r -d '' f; do
    mkdir -p "$OLDPWD/$dest/$(dirname "$f")"
    cp "$f" "$OLDPWD/$dest/$f"
  done
