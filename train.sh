#!/usr/bin/env bash
# Train from a YAML experiment file on every visible GPU (torchrun, DDP) or on one CPU process.
#
#   bash train.sh [CONFIG] [NGPUS] [--set key=value ...] [--resume [auto|PATH]] [--stop-at ITER]
#
# CONFIG defaults to configs/demo.yaml; NGPUS to the number of visible GPUs (0 without CUDA:
# a single CPU process). PYTHON selects the interpreter (default: python), e.g.
#   PYTHON=.venv/bin/python bash train.sh configs/hybrimamba_x8_celeba.yaml 4 --set train.batch_size=8
# Several machines: call torchrun yourself with its own rendezvous flags, on every node:
#   torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \
#            --rdzv_endpoint HOST:29500 --rdzv_id myrun train.py --config CONFIG
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"

CONFIG=configs/demo.yaml
if [[ $# -gt 0 && "$1" != --* ]]; then
  CONFIG="$1"
  shift
fi
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  NGPUS="$1"
  shift
else
  NGPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
fi

if [[ "$NGPUS" -gt 0 ]]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPUS" train.py --config "$CONFIG" "$@"
else
  exec "$PY" train.py --config "$CONFIG" "$@"
fi
