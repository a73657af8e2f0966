"""Where records come from: a data spec in a config -> prompt/completion records with their locations.

A spec is either a path to a JSONL file of ``{"prompt", "completion"}`` records, or a mapping with a ``source``:

* ``{source: jsonl, path: FILE}``
* ``{source: synthetic, rows: N, seed: S, people: P, fillers: F}``: the built-in reading task
  (:mod:`plw.data.synthetic`), multiple choice with answers A-D.
* ``{source: race, path: FILE_OR_FOLDER, split: train|validation|test, config: all|high|middle, strict: false}``:
  RACE from JSONL rows or a folder in the original release layout; ``{source: race, hub: true, split: ...,
  config: ...}`` from the Hugging Face hub (``ehovy/race``, online only). See :mod:`plw.data.race`.

Every loader fills a :class:`~plw.data.report.LoadReport` (rows read, kept, dropped by reason with the first few
ids); ``strict: true`` turns the first dropped row into an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import race
from .jsonl import load_jsonl_records
from .report import LoadReport, SourceError
from .synthetic import LETTERS, make_synthetic_mcqa


@dataclass
class LoadedRecords:
    """Records plus what a run needs to know about them."""

    records: list[dict]
    names: list[str]
    answer_choices: list[str] | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)


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
    if source == "race":
        return _load_race(d)
    raise ValueError(f"unknown data source {source!r} (known: jsonl, synthetic, race)")


def _collect(pairs: Any, report: LoadReport, what: str) -> tuple[list[dict], list[str]]:
    names, records = [], []
    for name, record in pairs:
        names.append(name)
        records.append(record)
    if not records:
        raise SourceError(f"{what}: no records ({report.summary()})")
    return records, names


def _load_race(d: dict) -> LoadedRecords:
    config, split = race.check_choice(d.pop("config", "all"), d.pop("split", None))
    report = LoadReport(strict=bool(d.pop("strict", False)))
    if d.pop("hub", False):
        name = d.pop("name", race.HUB_NAME)
        _no_extra("race", d)
        pairs = race.iter_race_hub(report, config, split or "train", name)
        what = f"RACE {name} ({config}, {split or 'train'})"
    else:
        path = d.pop("path", None)
        if path is None:
            raise ValueError("data source 'race' needs 'path' (a JSONL file or a release folder) or 'hub: true'")
        _no_extra("race", d)
        if Path(path).is_dir():
            pairs = race.iter_race_folder(path, report, config, split)
        else:
            pairs = race.iter_race_jsonl(path, report, config, split)
        what = f"RACE {path} ({config}{', ' + split if split else ''})"
    records, names = _collect(pairs, report, what)
    return LoadedRecords(records, names, list(race.LETTERS), description=what, report=report)


def _no_extra(source: str, rest: dict) -> None:
    if rest:
        raise ValueError(f"data source {source!r} does not take {sorted(rest)}")
