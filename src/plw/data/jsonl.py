"""Read prompt/completion JSONL files, naming the file and line of every bad record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .encode import RecordError, validate_record


def read_jsonl(path: str | Path, validate: bool = True) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, record)`` for every non-blank line; ``where`` is ``"file:line"``.

    A malformed JSON line, or (with ``validate``) a record without string ``prompt``/``completion`` or with an
    empty completion, raises :class:`RecordError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            if validate:
                validate_record(record, where)
            yield where, record


def load_jsonl_records(path: str | Path) -> tuple[list[dict], list[str]]:
    """Read and validate a whole JSONL file; return the records and their locations."""
    names, records = [], []
    for where, record in read_jsonl(path):
        names.append(where)
        records.append(record)
    if not records:
        raise RecordError(f"{path}: no records")
    return records, names
