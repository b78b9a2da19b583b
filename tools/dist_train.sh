#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG NPROC_PER_NODE [train.py options]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (same values on every node but NODE_RANK).
# Without CUDA train.py uses the gloo backend and a CPU DDP wrapper (ctvis/utils/distributed.py),
# so this also runs on CPUs.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG NPROC_PER_NODE [train.py options]" >&2
    exit 2
fi
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/dist_launch.sh" "$2" "$TOOLS/train.py" "$1" "${@:3}"
