#!/usr/bin/env bash
# The main job on a CPU: set up .venv/, make the built-in toy dataset, train the quickstart CTVIS,
# evaluate it with the YouTube-VIS metric (AP, and the identity metrics HOTA / IDF1 / ID switches)
# next to a no-tracking control, and render a demo video.
# Outputs go to work_dirs/quickstart/ (override with CTVIS_QUICKSTART_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
PY="$ROOT/.venv/bin/python"
CONFIG=configs/ctvis/ctvis_quickstart.py
WORK="${CTVIS_QUICKSTART_DIR:-work_dirs/quickstart}"
DATA=data/toy_vis
START=$(date +%s)

echo "[quickstart] 1/5 toy dataset -> $DATA"
"$PY" tools/misc/make_toy_vis.py "$DATA" --videos 120 --frames 20 --val-videos 12 --seed 0

echo "[quickstart] 2/5 training $CONFIG"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK"
CHECKPOINT="$(cat "$WORK/last_checkpoint")"

echo "[quickstart] 3/5 evaluating on the toy validation videos"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK/eval" --out "$WORK/results.json"
echo "[quickstart] where it loses (coverage, identity switches, merged look-alikes," \
     "AP with perfect association) and its identity metrics (HOTA, DetA, AssA, IDF1, IDSW)"
"$PY" tools/analysis_tools/vis_error_breakdown.py "$DATA/valid.json" "$WORK/results.json"

echo "[quickstart] 4/5 no-tracking control (same detector, random identities every frame)"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK/control" \
    --cfg-options model.tracker.type=RandomIdentityTracker +test_evaluator.tracking_metrics=True

echo "[quickstart] 5/5 demo video"
"$PY" demo/video_demo.py "$DATA/JPEGImages/valid_00000" "$CONFIG" "$CHECKPOINT" \
    --out "$WORK/demo.mp4" --json "$WORK/demo.json"

echo "[quickstart] done in $(( $(date +%s) - START )) s: checkpoint $CHECKPOINT, results" \
     "$WORK/results.json, demo $WORK/demo.mp4"
