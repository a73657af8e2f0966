"""Where records come from: a data spec in a config -> records with their names and a load report.

A spec is a path (a file, or a folder: RACE release layout, ``datasets.save_to_disk`` output, or a folder of data
files) or a mapping with a ``source``:

* ``{source: file, path: FILE_OR_FOLDER, file_format: jsonl|json|csv|parquet, ...mapping}``; ``source: jsonl`` is
  the same. ``file_format`` defaults to the extension.
* ``{source: hf, name: NAME, config: CONFIG, split: SPLIT, revision: REV, data_files: ..., ...mapping}``: a
  Hugging Face dataset through ``datasets.load_dataset`` (``name`` may be a builder such as ``json`` with
  ``data_files``); ``{source: hf, path: FOLDER}`` reads a ``save_to_disk`` folder.
* ``{source: race, path: FILE_OR_FOLDER, split: train|validation|test, config: all|high|middle}``: RACE from JSONL
  rows or a folder in the original release layout; ``{source: race, hub: true, split: ..., config: ...}`` from the
  hub (``ehovy/race``, online only). See :mod:`plw.data.race`.
* ``{source: synthetic, rows: N, seed: S, people: P, fillers: F, facts: 3|1, answer: letter|text,
  style: bare|sentence|explanation}``: the built-in reading task (:mod:`plw.data.synthetic`), multiple choice; the
  completion is the letter (A-D) or the option's text, followed by nothing, the supporting sentence or a worked
  explanation.

``...mapping`` are the options of :class:`~plw.data.files.RowMapper`: ``format`` (``prompt_completion``,
``messages``, ``race``; detected from the first row's fields when absent), ``prompt_field``, ``completion_field``,
``prompt_template``, ``completion_template``, ``system_field``, ``messages_field``, ``weight_field`` (the field of
the record weight, default ``weight``: :mod:`plw.data.weights`).

Every source fills a :class:`~plw.data.report.LoadReport` (rows read, kept, dropped by reason with the first few
ids); with ``strict`` the first bad row is an error instead, naming its file and line (and id).
:func:`open_records` reads lazily and counts bad rows by default (for statistics over large files);
:func:`load_records` collects everything into lists for training and is strict by default, so a broken training
file stops a run before it starts. A spec's own ``strict`` key overrides either default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import race
from .files import RowMapper, data_files_in, iter_dataset_rows, iter_file_rows
from .report import LoadReport, SourceError
from .synthetic import ANSWERS, LETTERS, STYLES, make_synthetic_mcqa

MAPPING_KEYS = (
    "format",
    "prompt_field",
    "completion_field",
    "prompt_template",
    "completion_template",
    "system_field",
    "messages_field",
    "weight_field",
)


@dataclass
class LoadedRecords:
    """Records plus what a run needs to know about them."""

    records: list[dict]
    names: list[str]
    answer_choices: list[str] | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)


@dataclass
class RecordStream:
    """Records read lazily: iterate ``pairs`` (``(name, record)``); ``report`` fills as they are read.

    ``format`` and ``answer_choices`` are final once the first record has been read (the format may be detected
    from it).
    """

    pairs: Iterator[tuple[str, dict]]
    report: LoadReport
    description: str
    mapper: RowMapper | None = None
    fixed_format: str | None = None
    fixed_choices: list[str] | None = None

    @property
    def format(self) -> str | None:
        return self.mapper.format if self.mapper is not None else self.fixed_format

    @property
    def answer_choices(self) -> list[str] | None:
        if self.fixed_choices is not None:
            return list(self.fixed_choices)
        return list(race.LETTERS) if self.format == "race" else None


def _spec_dict(spec: Any) -> dict:
    if isinstance(spec, (str, Path)):
        return {"source": "file", "path": str(spec)}
    if isinstance(spec, dict) and "source" in spec:
        return dict(spec)
    raise ValueError(f"a data spec is a file path or a mapping with 'source', got {spec!r}")


def _no_extra(source: str, rest: dict) -> None:
    if rest:
        raise ValueError(f"data source {source!r} does not take {sorted(rest)}")


def _mapped(rows: Iterator[tuple[str, dict]], mapper: RowMapper, report: LoadReport) -> Iterator[tuple[str, dict]]:
    for where, row in rows:
        record = mapper(row, where, report)
        if record is not None:
            yield record.get("id", where), record


def is_race_folder(path: str | Path) -> bool:
    """True for a folder in the RACE release layout (split folders, level folders, or ``*.txt`` passages)."""
    path = Path(path)
    if any((path / d).is_dir() for d in ("train", "dev", "test", "high", "middle")):
        return True
    return path.is_dir() and any(path.glob("*.txt")) and not data_files_in(path)


def is_saved_dataset(path: str | Path) -> bool:
    """True for a folder written by ``datasets`` ``save_to_disk``."""
    return (Path(path) / "dataset_info.json").is_file() or (Path(path) / "state.json").is_file()


def _open_file(d: dict) -> RecordStream:
    path = d.pop("path", None)
    if path is None:
        raise ValueError("data source 'file' needs 'path'")
    report = LoadReport(strict=bool(d.pop("strict", False)))
    if Path(path).is_dir():
        if is_race_folder(path):
            return _open_race({"path": path, "strict": report.strict, **d})
        if is_saved_dataset(path):
            return _open_hf({"path": path, "strict": report.strict, **d})
    mapper = RowMapper(**{k: d.pop(k) for k in MAPPING_KEYS if k in d})
    given = d.pop("file_format", None)
    _no_extra("file", d)
    if Path(path).is_dir():
        files = data_files_in(path)
        if not files:
            raise FileNotFoundError(f"{path}: no data files (.jsonl, .json, .csv, .parquet) in this folder")
    elif Path(path).is_file():
        files = [Path(path)]
    else:
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    rows = (pair for f in files for pair in iter_file_rows(f, report, given))
    return RecordStream(_mapped(rows, mapper, report), report, str(path), mapper)


def _open_hf(d: dict) -> RecordStream:
    report = LoadReport(strict=bool(d.pop("strict", False)))
    mapper = RowMapper(**{k: d.pop(k) for k in MAPPING_KEYS if k in d})
    import datasets

    if "path" in d:
        path = d.pop("path")
        _no_extra("hf", d)
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"{path} holds splits {list(ds)}: point path at one split's folder")
        description = str(path)
    else:
        name = d.pop("name", None)
        if name is None:
            raise ValueError("data source 'hf' needs 'name' (a hub dataset or a builder like json) or 'path'")
        config, split = d.pop("config", None), d.pop("split", "train")
        kwargs = {k: d.pop(k) for k in ("revision", "data_files", "data_dir", "streaming") if k in d}
        _no_extra("hf", d)
        try:
            ds = datasets.load_dataset(name, config, split=split, **kwargs)
        except Exception as err:  # network, missing cache, unknown config: say what was asked and why it failed
            raise SourceError(f"could not load {name!r} (config {config!r}, split {split!r}): {err}") from err
        description = f"{name}" + (f" ({config})" if config else "") + f" [{split}]"
    rows = iter_dataset_rows(ds, description, report)
    return RecordStream(_mapped(rows, mapper, report), report, description, mapper)


def _open_race(d: dict) -> RecordStream:
    config, split = race.check_choice(d.pop("config", "all"), d.pop("split", None))
    report = LoadReport(strict=bool(d.pop("strict", False)))
    if d.get("format") == "race":
        d.pop("format")
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
    return RecordStream(pairs, report, what, fixed_format="race", fixed_choices=list(race.LETTERS))


def _open_synthetic(d: dict) -> RecordStream:
    d.pop("strict", None)  # generated records are always valid
    kwargs = {"n": int(d.pop("rows", 200)), "seed": int(d.pop("seed", 0))}
    for key in ("people", "fillers", "facts"):
        if key in d:
            kwargs[key] = int(d.pop(key))
    for key, allowed in (("answer", ANSWERS), ("style", STYLES)):
        if key in d:
            kwargs[key] = str(d.pop(key))
            if kwargs[key] not in allowed:
                raise ValueError(f"synthetic.{key}: expected one of {', '.join(allowed)}, got {kwargs[key]!r}")
    _no_extra("synthetic", d)
    report = LoadReport()

    def pairs() -> Iterator[tuple[str, dict]]:
        for i, record in enumerate(make_synthetic_mcqa(**kwargs)):
            report.read += 1
            report.kept += 1
            yield f"synthetic[seed={kwargs['seed']}]:{i}", record

    return RecordStream(
        pairs(),
        report,
        f"synthetic reading task {kwargs}",
        fixed_format="prompt_completion",
        # Letter answers are scored by answer accuracy; text answers by exact match (no choice tokens).
        fixed_choices=list(LETTERS) if kwargs.get("answer", "letter") == "letter" else None,
    )


OPENERS = {"file": _open_file, "jsonl": _open_file, "hf": _open_hf, "race": _open_race, "synthetic": _open_synthetic}


def open_records(spec: Any, strict: bool = False) -> RecordStream:
    """Resolve a data spec (see the module docstring) into a lazy :class:`RecordStream`; ``strict`` is the default
    when the spec has no ``strict`` key."""
    d = _spec_dict(spec)
    d.setdefault("strict", strict)
    source = d.pop("source")
    if source not in OPENERS:
        raise ValueError(f"unknown data source {source!r} (known: {', '.join(OPENERS)})")
    if source == "jsonl":
        d.setdefault("file_format", "jsonl")
    return OPENERS[source](d)


def load_records(spec: Any, strict: bool = True) -> LoadedRecords:
    """Read a data spec (see the module docstring) into lists of records and names, with the load report.

    ``strict`` (the default unless the spec says ``strict: false``) makes a bad row an error naming it; otherwise
    bad rows are counted in ``.report``. Raises :class:`~plw.data.report.SourceError` when no record is left.
    """
    stream = open_records(spec, strict)
    names, records = [], []
    for name, record in stream.pairs:
        names.append(name)
        records.append(record)
    if not records:
        raise SourceError(f"{stream.description}: no records ({stream.report.summary()})")
    meta = {"format": stream.format, "load_report": stream.report.as_dict()}
    return LoadedRecords(records, names, stream.answer_choices, stream.description, meta, stream.report)
