#!/usr/bin/env bash
# The whole study on one GPU, as one command: RACE (PLW 1, 0.1, 0 x 3 seeds, full fine-tuning) and the Rg spectrum
# (every configs/spectrum/*.yaml, 6 PLWs x 3 seeds) with GPU-sized batches, into docs/results/gpu-study/.
# Usage: bash scripts/gpu-study.sh          (needs CUDA, the project's .venv and ../shared/data)
# Sized for about 10 minutes of wall time on one H200 from the RACE GPU study's measured ~28k tokens/s; it has not
# been timed on a GPU yet (no GPU was lent when it was written): check the first sweep's time before relying on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PLW=".venv/bin/plw"
OUT=docs/results/gpu-study
GPU=(--set device=cuda --set output_dir="$OUT" --set eval_batch_size=64 --set loss_chunk_tokens=4096 --no-progress)
"$PLW" sweep configs/race-smollm2-gpu.yaml "${GPU[@]}" --seeds 1,2,3 --set max_train_rows=2000 --set max_eval_rows=500 \
    --set epochs=1 --set eval_steps=0.2
for name in synthetic-bare synthetic-sentence synthetic-explanation race gsm8k; do
    "$PLW" sweep "configs/spectrum/$name.yaml" "${GPU[@]}" --set batch_size=8
done
