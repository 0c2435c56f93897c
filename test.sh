#!/usr/bin/env bash
# Super-resolve a folder with a checkpoint and score it when HR is given.
#   bash test.sh CHECKPOINT LR_DIR [HR_DIR] [OUT_DIR] [--extra test.py flags ...]
# OUT_DIR defaults to results/<checkpoint file name without .pt>. PYTHON=... picks the interpreter
# (default: ./.venv/bin/python when no virtualenv is active, else python).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$HERE/.venv/bin/python" ]; then
        PYTHON=$HERE/.venv/bin/python
    else
        PYTHON=python
    fi
fi
if [ $# -gt 0 ] && [[ $1 == --* ]]; then  # flags only (test.py's own, or the authors' test.sh flags: answered there)
    exec "$PYTHON" "$HERE/test.py" "$@"
fi
if [ $# -lt 2 ]; then
    echo "usage: bash test.sh CHECKPOINT LR_DIR [HR_DIR] [OUT_DIR] [test.py flags]  (or: bash test.sh --checkpoint ... test.py flags)" >&2
    exit 2
fi
CKPT=$1
LR_DIR=$2
shift 2
HR_ARGS=()
if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    HR_ARGS=(--hr-dir "$1")
    shift
fi
OUT_DIR="results/$(basename -- "${CKPT%.*}")"
if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    OUT_DIR=$1
    shift
fi
exec "$PYTHON" "$HERE/test.py" --checkpoint "$CKPT" --lr-dir "$LR_DIR" "${HR_ARGS[@]}" --out-dir "$OUT_DIR" "$@"
