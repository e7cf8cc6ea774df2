#!/usr/bin/env bash
# The frontier table's queue (scripts/frontier_table.py): every tuning and paper-budget run, one at a
# time, one torch thread, skipping what is finished; rerun it to continue after a stop.
#
#   setsid nohup bash scripts/frontier_queue.sh > out/frontier/queue.log 2>&1 &     # start or resume, detached
#   .venv/bin/python scripts/frontier_table.py plan                                   # what is done, hours left
#
# A second copy exits at once while one is running (a lock file beside the results).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${FRONTIER_OUT:-$here/out/frontier}
mkdir -p "$out"
exec 9>"$out/queue.lock"
if ! flock -n 9; then
  echo "another frontier queue is running (lock $out/queue.lock held)" >&2
  exit 1
fi
echo "queue started $(date -u +%FT%TZ) by pid $$"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$here" exec "$here/.venv/bin/python" "$here/scripts/frontier_table.py" \
  queue --out "$out" --threads 1 "$@"
