"""Two finished run folders side by side: final held-out metrics, the paired test on the same rows, and cost.

Made for training comparisons that change one setting (``prompt_sample_rate``, say) with everything else equal:
the final evaluation of each run (a rule fixed before looking), its completion and prompt loss, its accuracy with
a 95% Wilson interval, and an exact McNemar test on the rows both runs scored (``predictions.jsonl``). Time the
runs themselves (e.g. ``/usr/bin/time``, side by side, one core each): run folders do not record wall time.

    python benchmarks/compare_runs.py docs/results/subsampling/q=1 docs/results/subsampling/q=0.1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from plw.analysis import accuracy_key, checkpoint_lines, load_run, rows_scored
from plw.uncertainty import wilson_interval
from plw.verdicts import paired_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    runs = [load_run(args.run_a), load_run(args.run_b)]
    acc = accuracy_key(runs[0].lines)
    finals = [checkpoint_lines(r, None)["final"] for r in runs]  # the pre-declared `final` rule
    if any(line is None for line in finals):
        raise SystemExit("a run has no evaluation")
    print(f"{'run':<40} {'step':>5} {'compl loss':>10} {'prompt loss':>11} {'accuracy [95% Wilson]':>26}")
    for run, line in zip(runs, finals, strict=True):
        acc_text = "-"
        if acc and acc in line:
            n = rows_scored(line, acc) or 0
            lo, hi = wilson_interval(round(line[acc] * n), n)
            acc_text = f"{line[acc]:.1%} [{lo:.1%}, {hi:.1%}]"
        print(
            f"{str(run.path):<40} {line['step']:>5} {line['eval_completion_loss']:>10.4f} "
            f"{line['eval_prompt_loss']:>11.4f} {acc_text:>26}"
        )
    if acc:
        p = paired_at(runs[0], finals[0]["step"], runs[1], finals[1]["step"], acc)
        if p is not None:
            print(
                f"paired on {p.n} rows: right only in A {p.only_a}, only in B {p.only_b}, exact McNemar p = "
                f"{p.p_value:.3g}"
            )


if __name__ == "__main__":
    main()
