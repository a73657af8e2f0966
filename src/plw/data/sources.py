"""Where records come from: a data spec in a config -> prompt/completion records with their locations.

A spec is either a path to a JSONL file of ``{"prompt", "completion"}`` records, or a mapping with a ``source``:

* ``{source: jsonl, path: FILE}``
* ``{source: synthetic, rows: N, seed: S, people: P, fillers: F}``: the built-in reading task
  (:mod:`plw.data.synthetic`), multiple choice with answers A-D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import load_jsonl_records
from .synthetic import LETTERS, make_synthetic_mcqa


@dataclass
class LoadedRecords:
    """Records plus what a run needs to know about them."""

    records: list[dict]
    names: list[str]
    answer_choices: list[str] | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _spec_dict(spec: Any) -> dict:
    if isinstance(spec, (str, Path)):
        return {"source": "jsonl", "path": str(spec)}
    if isinstance(spec, dict) and "source" in spec:
        return dict(spec)
    raise ValueError(f"a data spec is a file path or a mapping with 'source', got {spec!r}")


def load_records(spec: Any) -> LoadedRecords:
    """Resolve a data spec (see the module docstring) into records."""
    d = _spec_dict(spec)
    source = d.pop("source")
    if source == "jsonl":
        path = d.pop("path", None)
        if path is None:
            raise ValueError("data spec with source 'jsonl' needs 'path'")
        _no_extra(source, d)
        records, names = load_jsonl_records(path)
        return LoadedRecords(records, names, description=str(path))
    if source == "synthetic":
        kwargs = {"n": int(d.pop("rows", 200)), "seed": int(d.pop("seed", 0))}
        for key in ("people", "fillers"):
            if key in d:
                kwargs[key] = int(d.pop(key))
        _no_extra(source, d)
        records = make_synthetic_mcqa(**kwargs)
        names = [f"synthetic[seed={kwargs['seed']}]:{i}" for i in range(len(records))]
        return LoadedRecords(records, names, list(LETTERS), description=f"synthetic reading task {kwargs}")
    raise ValueError(f"unknown data source {source!r} (known: jsonl, synthetic)")


def _no_extra(source: str, rest: dict) -> None:
    if rest:
        raise ValueError(f"data source {source!r} does not take {sorted(rest)}")
