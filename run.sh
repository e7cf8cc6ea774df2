#!/usr/bin/env bash
# Usage:  bash run.sh demo [args]    generate, finetune (several minutes), regenerate; into out/demo
#         bash run.sh test [args]    run the test suite (args go to pytest)
#
# Creates .venv with python3.11 on first use and (re)installs requirements.txt whenever it changes
# (a hash stamp is kept in .venv). Set NABLA_PYTHON to use another Python 3.11 interpreter.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

usage() {  # usage [exit code]: asked for (--help) prints to stdout and exits 0; a mistake, stderr and 2
    if [[ "${1:-2}" == 0 ]]; then
        sed -n '2,3s/^# \{0,1\}//p' "$0"
        exit 0
    fi
    sed -n '2,3s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
    demo | test) ;;
    -h | --help | help) usage 0 ;;
    *) echo "run.sh: unknown command '$command'" >&2; usage ;;
esac

PYTHON="${NABLA_PYTHON:-python3.11}"
VENV=.venv
STAMP="$VENV/.requirements.sha256"

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "run.sh: '$PYTHON' not found. Install Python 3.11 (the bpy 5.0 wheel needs exactly 3.11)," >&2
        echo "        or point NABLA_PYTHON at a Python 3.11 interpreter." >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
        echo "run.sh: '$PYTHON' is not a working Python 3.11 (the bpy 5.0 wheel needs exactly 3.11)." >&2
        exit 1
    fi
    echo "run.sh: creating $VENV with $PYTHON" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

want_hash="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' requirements.txt)"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want_hash" != "$have_hash" ]]; then
    echo "run.sh: installing requirements.txt into $VENV (the first time takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want_hash" >"$STAMP"
fi

case "$command" in
    demo) exec "$VENV/bin/python" -m engine demo --out out/demo "$@" ;;
    test) exec "$VENV/bin/python" -m pytest "$@" ;;
esac
