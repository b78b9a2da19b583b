#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh:
#   tools/dist_launch.sh NPROC_PER_NODE TOOL.py [tool arguments]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (same values on every node but NODE_RANK).
# Uses the project's .venv when there is one (PYTHON overrides); OMP_NUM_THREADS defaults to 1.
set -euo pipefail
NPROC=$1
TOOL=$2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python
    [[ -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"
fi

# with CUDA every process takes a GPU of its own: refuse more processes than visible GPUs here
# (mmengine would fail in rank NPROC-1 with an IndexError) rather than in the ranks
# (torchrun's own values, auto / gpu / cpu, pass unchecked); 0 or a word gave torchrun's bare
# assertion
"$PYTHON" -c 'import sys, torch
if sys.argv[1] not in ("auto", "gpu", "cpu") and not (sys.argv[1].isdigit() and int(sys.argv[1]) > 0):
    sys.exit(f"dist_launch.sh: NPROC_PER_NODE must be a whole number >= 1 (or auto, gpu, cpu), "
             f"got {sys.argv[1]!r}")
nproc = int(sys.argv[1]) if sys.argv[1].isdigit() else 0
gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
if 0 < gpus < nproc:
    sys.exit(f"dist_launch.sh: {nproc} processes per node, but {gpus} CUDA GPU(s) are visible "
             f"here: start at most {gpus}, or hide the GPUs (CUDA_VISIBLE_DEVICES=) to run "
             f"{nproc} processes on the CPU (gloo)")' "$NPROC"

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" "$TOOL" "${@:3}" --launcher pytorch
