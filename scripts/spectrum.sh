#!/usr/bin/env bash
# The Rg spectrum study on the CPU: PLW 1, 0.5, 0.2, 0.1, 0.01, 0 x seeds 1, 2, 3 on data from Rg << 1 to Rg > 1
# (synthetic task in three answer styles, RACE, GSM8K); one sweep folder per dataset under docs/results/spectrum/.
# Usage: bash scripts/spectrum.sh [extra plw sweep arguments, e.g. --seeds 1]
# Runs train 2 at a time (--jobs 2: one process of cores // 2 threads each); pass --jobs N to change that.
# A stopped study continues where it stopped (finished runs are skipped). RACE and GSM8K read ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PLW=".venv/bin/plw"
for name in synthetic-bare synthetic-sentence synthetic-explanation race gsm8k; do
    "$PLW" sweep "configs/spectrum/$name.yaml" --jobs 2 --no-progress "$@"
done
