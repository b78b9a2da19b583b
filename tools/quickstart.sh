#!/usr/bin/env bash
# The main job on a CPU: set up .venv/, make the built-in toy dataset, train the quickstart CTVIS,
# evaluate it with the YouTube-VIS metric (AP, and the identity metrics HOTA / IDF1 / ID switches)
# next to a no-tracking control, and render a demo video.
# Outputs go to work_dirs/quickstart/ (override with CTVIS_QUICKSTART_DIR).
# It aims to finish in CTVIS_QUICKSTART_MINUTES (default 20) after the setup: the training gets
# what is left of them after the other steps (TrainingTimeBudget scales the 3000-iteration
# schedule to the speed of this machine). CTVIS_QUICKSTART_MINUTES=0 trains the config's 3000
# iterations however long they take (the same model on every run of one machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MINUTES="${CTVIS_QUICKSTART_MINUTES:-20}"
# what the steps around the training loop take (start-up, the final validation, the error
# breakdown, the control, the demo): 30 s on a machine training at 0.37-0.44 s per iteration;
# 45 s leaves room for one about 1.5 times as slow (docs/benchmarks.md)
RESERVE_S=45
UNLIMITED=0
if ! [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "[quickstart] CTVIS_QUICKSTART_MINUTES must be a number of minutes (0: no limit)," \
         "got '$MINUTES'" >&2
    exit 2
elif [[ "$MINUTES" =~ ^0+([.]0+)?$ ]]; then
    UNLIMITED=1
elif (( 10#${MINUTES%%.*} < 5 )); then
    echo "[quickstart] CTVIS_QUICKSTART_MINUTES=$MINUTES is too short to train anything useful;" \
         "give it at least 5 minutes, or 0 for no limit" >&2
    exit 2
fi
bash tools/setup_env.sh
PY="$ROOT/.venv/bin/python"
CONFIG=configs/ctvis/ctvis_quickstart.py
WORK="${CTVIS_QUICKSTART_DIR:-work_dirs/quickstart}"
DATA=data/toy_vis
START=$(date +%s)

echo "[quickstart] 1/5 toy dataset -> $DATA"
"$PY" tools/misc/make_toy_vis.py "$DATA" --videos 120 --frames 20 --val-videos 12 --seed 0

BUDGET=()
if (( ! UNLIMITED )); then
    LEFT=$("$PY" -c "print(max(60, int($MINUTES * 60 - ($(date +%s) - $START) - $RESERVE_S)))")
    BUDGET=(--time-budget "${LEFT}s")
    echo "[quickstart] 2/5 training $CONFIG for about ${LEFT} s (what is left of $MINUTES min)"
else
    echo "[quickstart] 2/5 training $CONFIG (the config's 3000 iterations, no time limit)"
fi
# the training ends with the validation of its final weights: its results are the evaluation
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" "${BUDGET[@]}" \
    --cfg-options +val_evaluator.results_file="$WORK/results.json"
CHECKPOINT="$(cat "$WORK/last_checkpoint")"

echo "[quickstart] 3/5 evaluation on the toy validation videos: the AP table above (the" \
     "training's final validation); where it loses (coverage, identity switches, merged" \
     "look-alikes, AP with perfect association) and its identity metrics (HOTA, DetA, AssA," \
     "IDF1, IDSW)"
"$PY" tools/analysis_tools/vis_error_breakdown.py "$DATA/valid.json" "$WORK/results.json"

echo "[quickstart] 4/5 no-tracking control (same detector, random identities every frame)"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK/control" \
    --cfg-options model.tracker.type=RandomIdentityTracker +test_evaluator.tracking_metrics=True

echo "[quickstart] 5/5 demo video"
"$PY" demo/video_demo.py "$DATA/JPEGImages/valid_00000" "$CONFIG" "$CHECKPOINT" \
    --out "$WORK/demo.mp4" --json "$WORK/demo.json"

echo "[quickstart] done in $(( $(date +%s) - START )) s: checkpoint $CHECKPOINT, results" \
     "$WORK/results.json, demo $WORK/demo.mp4"
