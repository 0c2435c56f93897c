#!/usr/bin/env bash
# Train from a YAML experiment file on every visible GPU (torchrun, DDP) or in one CPU process.
#
#   bash train.sh [CONFIG] [NGPUS] [--set key=value ...] [--resume [auto|PATH]] [--overwrite] [--stop-at ITER]
#
# CONFIG defaults to configs/demo.yaml; NGPUS to the number of visible GPUs. Without a GPU the
# run is one CPU process whatever NGPUS says (a one-line note says so); NGPUS above the number of
# visible GPUs is an error. The interpreter is found like test.sh does: $PYTHON when set, else
# ./.venv/bin/python when no virtualenv is active and it exists (make setup / make demo), else python.
# Several machines: call torchrun yourself with its own rendezvous flags, on every node:
#   torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \
#            --rdzv_endpoint HOST:29500 --rdzv_id myrun train.py --config CONFIG
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
  else
    PYTHON=python
  fi
fi

CONFIG=configs/demo.yaml
if [[ $# -gt 0 && "$1" != --* ]]; then
  CONFIG="$1"
  shift
fi
if ! VISIBLE="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null)"; then
  echo "train.sh: $PYTHON cannot import torch; run 'make setup' (creates .venv) or set PYTHON=/path/to/python" >&2
  exit 2
fi
NGPUS="$VISIBLE"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  NGPUS="$1"
  shift
  if [[ "$VISIBLE" -eq 0 && "$NGPUS" -gt 0 ]]; then
    echo "train.sh: no GPU visible, so one CPU process (NGPUS=$NGPUS ignored; CPU DDP: call torchrun yourself)" >&2
    NGPUS=0
  elif [[ "$NGPUS" -gt "$VISIBLE" ]]; then
    echo "train.sh: NGPUS=$NGPUS but only $VISIBLE GPU(s) visible" >&2
    exit 2
  fi
fi

if [[ "$NGPUS" -gt 0 ]]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPUS" train.py --config "$CONFIG" "$@"
else
  exec "$PYTHON" train.py --config "$CONFIG" "$@"
fi
