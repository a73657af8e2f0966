#!/usr/bin/env bash
# The Rg spectrum study cut to what 2 CPU cores do in about an hour: the same configs as scripts/spectrum.sh
# (configs/spectrum/*.yaml) on three datasets from Rg << 1 to Rg > 1 -- the synthetic reading task answered bare
# (Rg ~0.03) and with its worked explanation (Rg ~0.8), and GSM8K (Rg ~1.4) -- at PLW 1, 0.1, 0 with seeds 1, 2,
# 96 training rows each, one evaluation at the end (eval_steps 0.99: the last step) (50 rows of the synthetic task, 30 of the long-completion sets),
# into docs/results/spectrum-cpu/, then the cross-dataset figure and report (plw spectrum).
# Usage: bash scripts/spectrum-cpu.sh [extra plw sweep arguments, e.g. --seeds 1]   (full grid on a GPU: scripts/gpu-study.sh)
# Runs train 2 at a time (--jobs 2: one process of cores // 2 threads each); pass --jobs N to change that.
# A stopped study continues where it stopped (finished runs are skipped). GSM8K reads ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PLW=".venv/bin/plw"
OUT=docs/results/spectrum-cpu
CPU=(--plw 1,0.1,0 --seeds 1,2 --jobs 2 --no-progress --set output_dir="$OUT" --set max_train_rows=96
     --set eval_on_start=false --set eval_steps=0.99)
"$PLW" sweep configs/spectrum/synthetic-bare.yaml "${CPU[@]}" --set max_eval_rows=50 "$@"
"$PLW" sweep configs/spectrum/synthetic-explanation.yaml "${CPU[@]}" --set max_eval_rows=30 "$@"
"$PLW" sweep configs/spectrum/gsm8k.yaml "${CPU[@]}" --set max_eval_rows=30 "$@"
"$PLW" spectrum "$OUT/synthetic-bare" "$OUT/synthetic-explanation" "$OUT/gsm8k" --out "$OUT"
