#!/usr/bin/env bash
# Issue 24's "how much" studies on the demo setting (configs/demo.yaml: SmolLM2-135M-Instruct, LoRA, 384 rows of the
# synthetic reading task, 48 steps of 8 padded rows, generated-answer accuracy), sized to 2 CPU cores:
#   (a) plw-grid: PLW 1, 0.5, 0.2, 0.1, 0.01, 0 x training seeds 1, 2 and 3, evaluated every 6 steps (8
#       evaluations and the shared untrained one) on the first 40 of the demo's held-out rows (seed 2);
#   (b) lr-control: PLW 1, 0.1 and 0, each at learning rates 2e-3 (the demo's), 8e-3 and 3.2e-2 (x 1, 4, 16),
#       seed 1. Each run is evaluated once, at its last step, on 40 calibration rows (seed 1000), which choose each
#       PLW's learning rate; its final adapter (best/) is then evaluated on (a)'s 40 held-out rows (heldout/), which choose nothing.
#       `plw lr-control` writes the report.
#   (c) spectrum-rg: the Rg spectrum at PLW 1, 0.1, 0.01, 0 x seeds 1, 2, 3. Its bare arm (Rg 0.036) is (a); the
#       same task answered with the supporting sentence (Rg ~0.1) on 192 training rows and with the worked
#       explanation (Rg ~0.8) on 128, and GSM8K (Rg ~1.4, configs/spectrum/gsm8k.yaml's learning rate 5e-4) on 96
#       rows in batches of 4 -- fewer rows than (a)'s 384 because their rows are longer (what fits 2 cores in about
#       an hour and a half). One evaluation at the last step, on 40 rows, with each row's completion loss; the
#       synthetic styles also generate the answer line (generated-answer accuracy), GSM8K does not (its worked
#       solutions are 130 tokens; teacher-forced exact match is reported as such). `plw spectrum` writes the report.
# Usage: bash scripts/how-much.sh [a|b ...]   (default: a b). Finished runs are skipped when rerun.
# Each trains 2 runs at a time, one torch thread each (about 2 h, 18 min and 1.5 h on the 2-core VM).
set -euo pipefail
cd "$(dirname "$0")/.."
PLW=".venv/bin/plw"
OUT=docs/results
STUDIES=("$@")
[ $# -eq 0 ] && STUDIES=(a b c)
HELDOUT='eval_data={source: synthetic, rows: 100, seed: 2, people: 4, fillers: 0, facts: 1, answer: text}'
CALIBRATION='eval_data={source: synthetic, rows: 40, seed: 1000, people: 4, fillers: 0, facts: 1, answer: text}'
for study in "${STUDIES[@]}"; do
  case "$study" in
    a)
      GRID=(--jobs 2 --no-progress --set name=plw-grid --set output_dir="$OUT" --set eval_steps=6 --set max_eval_rows=40)
      "$PLW" sweep configs/demo.yaml --plw 1,0.5,0.2,0.1,0.01,0 --seeds 1,2,3 "${GRID[@]}"
      ;;
    b)
      mkdir -p runs/how-much-logs
      # The 9 runs in two streams of one-thread runs (a sweep's runs may be split: sweep.json is merged under a lock).
      lr_sweep() {  # LEARNING_RATE PLW_VALUES
        OMP_NUM_THREADS=1 "$PLW" sweep configs/demo.yaml --plw "$2" --seeds 1 --jobs 1 --no-progress \
          --set name="lr=$1" --set output_dir="$OUT/lr-control" --set learning_rate="$1" \
          --set "$CALIBRATION" --set eval_on_start=false --set eval_steps=0.99 --set save_best=true
      }
      (lr_sweep 2e-3 1,0.1,0; lr_sweep 3.2e-2 1,0.1,0) > runs/how-much-logs/b1.log 2>&1 &
      lr_sweep 8e-3 1,0.1,0 > runs/how-much-logs/b2.log 2>&1 &
      wait
      heldout() {  # RUN_DIR: its final adapter on the held-out rows, then the adapter is removed
        [ -f "$1/heldout/predictions.jsonl" ] && return 0
        OMP_NUM_THREADS=1 "$PLW" eval "$1/config.yaml" --checkpoint "$1/best" --no-progress --out "$1/heldout" \
          --set "$HELDOUT" --set max_eval_rows=40
        rm -rf "$1/best" "$1/heldout/checkpoints"
      }
      runs=("$OUT"/lr-control/lr=*/plw=*/seed=*)
      for ((i = 0; i < ${#runs[@]}; i += 2)); do  # two at a time
        heldout "${runs[i]}" > runs/how-much-logs/heldout-a.log 2>&1 &
        [ $((i + 1)) -lt ${#runs[@]} ] && heldout "${runs[i + 1]}" > runs/how-much-logs/heldout-b.log 2>&1
        wait
      done
      "$PLW" lr-control "$OUT/lr-control" --command "bash scripts/how-much.sh b"
      ;;
    c)
      RG=(--plw 1,0.1,0.01,0 --seeds 1,2,3 --jobs 2 --no-progress --set output_dir="$OUT/spectrum-rg"
          --set eval_steps=0.99 --set max_eval_rows=40)
      synthetic() {  # STYLE ROWS
        local data="source: synthetic, people: 4, fillers: 0, facts: 1, answer: text, style: $1"
        "$PLW" sweep configs/demo.yaml "${RG[@]}" --set name="synthetic-$1" \
          --set "train_data={$data, rows: $2, seed: 1}" --set "eval_data={$data, rows: 100, seed: 2}"
      }
      synthetic sentence 192
      synthetic explanation 128
      "$PLW" sweep configs/spectrum/gsm8k.yaml "${RG[@]}" --set max_train_rows=96 --set batch_size=4 \
        --set packing=false
      ln -sfn ../plw-grid "$OUT/spectrum-rg/synthetic-bare"  # (a), named for the spectrum (a dataset is its folder)
      "$PLW" spectrum "$OUT"/spectrum-rg/{synthetic-bare,synthetic-sentence,synthetic-explanation,gsm8k} \
        --out "$OUT/spectrum-rg"
      ;;
    *) echo "unknown study: $study (a, b or c)" >&2; exit 2 ;;
  esac
done
