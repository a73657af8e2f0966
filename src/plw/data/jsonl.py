"""JSONL rows read line by line, and how a row is named in reports.

The lowest layer of the record readers: :mod:`plw.data.files` (any file format) and :mod:`plw.data.race` (RACE
files) both read JSONL through it, so neither imports the other for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .report import LoadReport


def row_name(row: dict, where: str) -> str:
    """How a dropped row is named in reports: its ``id`` (or ``example_id``) when it has one, else ``where``."""
    for key in ("id", "example_id"):
        value = row.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return where


def iter_jsonl_rows(path: str | Path, report: LoadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` for every JSON-object line of a JSONL file; ``where`` is ``"file:line"``.

    Blank lines are skipped. A malformed line or a line that is not a JSON object is counted in ``report`` (with
    its file and line) and skipped, or raises under ``report.strict``. The file is read line by line, never whole.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            report.read += 1
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                report.drop("malformed JSON", where, f"{err.msg}, column {err.colno}")
                continue
            if not isinstance(row, dict):
                report.drop("not a JSON object", where, f"got {type(row).__name__}")
                continue
            yield where, row
