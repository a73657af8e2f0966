"""Print a seeded uniform sample of mutmut's mutant names for some modules, one per line.

A full mutation run takes hours on 2 cores (the 300 sampled mutants of plw.metrics and plw.chunked_loss took 15
minutes); a uniform random sample gives an estimate of a module's score with a known sample size
(docs/mutation-testing.md reports it with a Wilson interval). mutmut must have
generated the mutants first (any ``mutmut run`` does, before it runs them):

    .venv/bin/mutmut run --max-children 2 $(.venv/bin/python scripts/mutant_sample.py plw.metrics plw.chunked_loss)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def mutant_names(module: str, root: Path = Path("mutants")) -> list[str]:
    """Every mutant name mutmut generated for ``module`` (``plw.data.packing``), sorted."""
    meta = root / "src" / (module.replace(".", "/") + ".py.meta")
    if not meta.is_file():
        raise SystemExit(f"{meta} not found: run mutmut once first so that it generates the mutants of {module}")
    return sorted(json.loads(meta.read_text())["exit_code_by_key"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+", help="dotted module names, e.g. plw.metrics")
    parser.add_argument("--size", type=int, default=150, help="mutants per module (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    args = parser.parse_args(argv)
    for module in args.modules:
        names = mutant_names(module)
        sample = random.Random(args.seed).sample(names, min(args.size, len(names)))
        print(f"{module}: {len(sample)} of {len(names)} mutants", file=sys.stderr)
        print("\n".join(sample))


if __name__ == "__main__":
    main()
