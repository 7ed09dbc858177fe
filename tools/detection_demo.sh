#!/usr/bin/env bash
# The quickstart's main job: generate the demo COCO data, train a ResNeSt Faster
# R-CNN on it, evaluate it with the COCO evaluator, and save pictures of its
# predictions next to the ground truth and a plot of the loss and mAP curves.
#   tools/detection_demo.sh [WORK_DIR]        (default work_dirs/detection_demo)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-.venv/bin/python}"
CONFIG=configs/detection/demo/faster-rcnn_s14_fpn_1x_demo-shapes.py
WORK_DIR="${1:-work_dirs/detection_demo}"
SECONDS=0

echo "== 1/4 demo data (data/coco)"
"$PY" tools/make_demo_data.py coco data/coco
echo "== 2/4 training ($CONFIG)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
echo "== 3/4 evaluation, with painted predictions"
"$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
    --work-dir "$WORK_DIR" --show-dir predictions | tee "$WORK_DIR/test.log"
echo "== 4/4 curves"
"$PY" tools/plot_curves.py "$WORK_DIR"

echo
echo "Done in ${SECONDS}s."
grep -o 'coco/bbox_mAP: [0-9.]*  coco/bbox_mAP_50: [0-9.]*' "$WORK_DIR/test.log" | tail -1 \
    | sed 's/^/box AP on the demo val split: /'
echo "predictions next to ground truth: $(ls -d "$WORK_DIR"/*/predictions | tail -1)"
echo "loss and mAP curves: $WORK_DIR/curves.png"
