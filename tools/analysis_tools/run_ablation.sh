#!/usr/bin/env bash
# The consistent-training ablation of issue 12 in one command (see tools/analysis_tools/ablation.py):
# CTVIS memory negatives with/without noise, the released prev_queries recipe, MinVIS and the
# no-tracking control, 3 seeds, on the toy and the association sets; AP, AP50, HOTA, AssA, IDF1,
# IDSW, mean +- std. Two jobs at a time, one thread each. Resumable: rerun the same command after
# an interruption and it continues.
#
#   tools/analysis_tools/run_ablation.sh             # full: work_dirs/ablation/, docs/ablation.md
#   tools/analysis_tools/run_ablation.sh --quick     # plumbing check in minutes, docs untouched
#
# Environment: CTVIS_ABLATION_DIR (output folder, default work_dirs/ablation; work_dirs/ablation_quick
# with --quick), CTVIS_ABLATION_SEEDS (default 0,1,2; 0 with --quick). Other arguments go to the
# driver (--rows, --datasets, --iters, --jobs, --docs; see its --help). Uses .venv/bin/python
# (made by tools/setup_env.sh); sets up nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "run_ablation.sh: $PY not found; run tools/setup_env.sh first" >&2
    exit 1
fi
QUICK=0
for arg in "$@"; do
    [[ "$arg" == "--quick" ]] && QUICK=1
done
ARGS=()
if [[ $QUICK == 1 ]]; then
    ARGS+=(--out-dir "${CTVIS_ABLATION_DIR:-work_dirs/ablation_quick}")
else
    ARGS+=(--out-dir "${CTVIS_ABLATION_DIR:-work_dirs/ablation}" --docs docs/ablation.md)
fi
if [[ -n "${CTVIS_ABLATION_SEEDS:-}" ]]; then
    ARGS+=(--seeds "$CTVIS_ABLATION_SEEDS")
fi
exec "$PY" tools/analysis_tools/ablation.py "${ARGS[@]}" "$@"
