"""Rows from local files and Hugging Face datasets, and the mapping of a row to a record.

Readers yield ``(where, row)`` pairs lazily: ``where`` names the row in reports (``file:line`` for JSONL,
``file[i]`` for other formats). JSONL is read line by line by our own reader, so a malformed line is reported with
its file and line number; JSON arrays, CSV and Parquet go through ``datasets`` (Arrow, memory-mapped from its
cache, so large files are not held in memory).

:class:`RowMapper` turns a row into a record of one of three formats, detected from the fields of the first row
unless given:

* ``prompt_completion``: ``{"prompt", "completion"[, "system"]}``, taken from ``prompt_field``/``completion_field``
  (default ``prompt``/``completion``) or built with ``prompt_template``/``completion_template``, ``str.format``
  strings with ``{field}`` placeholders (e.g. Alpaca: ``"{instruction}\\n\\n{input}"``). A templated text is
  stripped, so an empty optional field leaves no blank tail. Rows with ``instruction`` and ``output`` but no
  ``prompt`` get that Alpaca template automatically.
* ``messages``: ``{"messages": [{"role", "content"}, ...]}`` (see :mod:`plw.data.messages`).
* ``race``: RACE rows (``article``, ``question``, ``options``, ``answer``), see :mod:`plw.data.race`.

In every format a row's ``weight`` field (``weight_field`` renames it) becomes the record's ``weight``, and the
``weight`` of each message stays on the message (:mod:`plw.data.weights`); a weight that is not a finite number
>= 0 is an error naming the row, whatever ``strict`` says.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .jsonl import iter_jsonl_rows, row_name
from .report import LoadReport, SourceError

FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
RECORD_FORMATS = ("prompt_completion", "messages", "race")
ALPACA_PROMPT = "{instruction}\n\n{input}"
RACE_FIELDS = ("article", "question", "options", "answer")


def file_format(path: str | Path, given: str | None = None) -> str:
    """``jsonl``, ``json``, ``csv`` or ``parquet``: ``given``, else from the extension."""
    if given:
        if given not in set(FILE_FORMATS.values()):
            raise ValueError(f"file_format must be one of {sorted(set(FILE_FORMATS.values()))}, got {given!r}")
        return given
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(
            f"{path}: cannot tell the file format from {suffix!r}; give file_format (jsonl, json, csv, parquet)"
        )
    return FILE_FORMATS[suffix]


def _first_char(path: Path) -> str:
    with path.open(encoding="utf-8") as fh:
        while chunk := fh.read(4096):
            if chunk.strip():
                return chunk.strip()[0]
    return ""


def iter_dataset_rows(ds: Any, name: str, report: LoadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a ``datasets.Dataset`` (or an iterable dataset) as ``(f"{name}[i]", row)``."""
    for i, row in enumerate(ds):
        report.read += 1
        yield f"{name}[{i}]", dict(row)


def iter_file_rows(
    path: str | Path, report: LoadReport, given_format: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of one local file (JSONL by our reader; JSON arrays, CSV and Parquet through ``datasets``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    fmt = file_format(path, given_format)
    if fmt == "json" and _first_char(path) != "[":
        fmt = "jsonl"  # a .json file of one object per line
    if fmt == "jsonl":
        yield from iter_jsonl_rows(path, report)
        return
    import datasets

    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as err:  # pyarrow/pandas parse errors: name the file
        raise SourceError(f"{path}: cannot read as {fmt}: {err}") from err
    yield from iter_dataset_rows(ds, str(path), report)


def data_files_in(folder: str | Path) -> list[Path]:
    """The data files (by extension) directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FILE_FORMATS)


def _text(value: Any) -> str | None:
    """A field value as text for a template: None -> "", numbers -> str, anything else (lists...) -> None.

    Only templates convert: a field used directly as the prompt or completion must already be a string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _placeholders(template: str) -> list[str]:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if any(not n or not n.isidentifier() for n in names):
        raise ValueError(f"template {template!r}: use named placeholders like {{instruction}}")
    return names


def detect_format(row: dict[str, Any]) -> str | None:
    """The record format a row's fields suggest, or None."""
    if "messages" in row:
        return "messages"
    if all(k in row for k in RACE_FIELDS):
        return "race"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "instruction" in row and "output" in row:
        return "prompt_completion"
    return None


class RowMapper:
    """Turn rows into records of one format, counting every row that cannot become one in a :class:`LoadReport`.

    Args:
        format: ``prompt_completion``, ``messages``, ``race`` or None to detect from the first row's fields.
        prompt_field, completion_field, system_field: where the texts are (prompt/completion format).
        prompt_template, completion_template: ``{field}`` templates instead of the fields.
        messages_field: where the turns are (messages format).
        weight_field: the record weight's field (default ``weight``, optional in a row); when given, every row must
            have it.
    """

    def __init__(
        self,
        format: str | None = None,
        prompt_field: str | None = None,
        completion_field: str | None = None,
        prompt_template: str | None = None,
        completion_template: str | None = None,
        system_field: str | None = None,
        messages_field: str = "messages",
        weight_field: str | None = None,
    ):
        if format is not None and format not in RECORD_FORMATS:
            raise ValueError(f"format must be one of {RECORD_FORMATS}, got {format!r}")
        if prompt_field and prompt_template:
            raise ValueError("give prompt_field or prompt_template, not both")
        if completion_field and completion_template:
            raise ValueError("give completion_field or completion_template, not both")
        mapped = prompt_field or completion_field or prompt_template or completion_template or system_field
        if mapped and format not in (None, "prompt_completion"):
            raise ValueError(f"field mapping options apply to the prompt_completion format, not {format!r}")
        self.format = "prompt_completion" if mapped else format
        self.prompt_field, self.completion_field = prompt_field, completion_field
        self.prompt_template, self.completion_template = prompt_template, completion_template
        for template in (prompt_template, completion_template):
            if template is not None:
                _placeholders(template)
        self.system_field = system_field
        self.messages_field = messages_field
        self.weight_field = weight_field

    def _detect(self, row: dict[str, Any], where: str) -> None:
        fmt = detect_format(row)
        if fmt is None:
            raise SourceError(
                f"{where}: cannot tell the record format from the fields {sorted(row)}; give format "
                f"({', '.join(RECORD_FORMATS)}) or prompt_field/completion_field or prompt_template"
            )
        self.format = fmt
        if fmt == "prompt_completion" and "prompt" not in row:
            self.prompt_template, self.completion_template = ALPACA_PROMPT, "{output}"

    def __call__(self, row: dict[str, Any], where: str, report: LoadReport) -> dict | None:
        """The record of ``row`` with its weights checked, or None after counting why there is none."""
        record = self._record(row, where, report)
        if record is not None:
            self._weights(row, record, where)
        return record

    def _weights(self, row: dict[str, Any], record: dict, where: str) -> None:
        from .weights import check_message_weights, check_weight

        field = self.weight_field or "weight"
        if field in row:
            record["weight"] = check_weight(row[field], where, field)
        elif self.weight_field is not None:
            raise SourceError(f"{where}: missing weight field {field!r} (weight_field)")
        check_message_weights(record.get("messages"), where)

    def _record(self, row: dict[str, Any], where: str, report: LoadReport) -> dict | None:
        if self.format is None:
            self._detect(row, where)
        if self.format == "race":
            from .race import race_record

            return race_record(row, where, report)
        if self.format == "messages":
            from .messages import messages_problem

            messages = row.get(self.messages_field)
            problem = (
                messages_problem(messages) if self.messages_field in row else f"missing field {self.messages_field!r}"
            )
            if problem:
                report.drop(problem, row_name(row, where), where=where)
                return None
            report.kept += 1
            return {"messages": messages, "id": row_name(row, where)}
        return self._prompt_completion(row, where, report)

    def _fill(
        self, row: dict[str, Any], field: str | None, template: str | None, default: str
    ) -> tuple[str | None, str]:
        """(text, "") or (None, reason)."""
        if template is not None:
            values = {}
            for name in _placeholders(template):
                if name not in row:
                    return None, f"missing field {name!r}"
                values[name] = _text(row[name])
                if values[name] is None:
                    return None, f"field {name!r} is not text or a number"
            return template.format(**values).strip(), ""
        key = field or default
        if key not in row or row[key] is None:
            return None, f"missing field {key!r}"
        if not isinstance(row[key], str):
            return None, f"field {key!r} must be a string"
        return row[key], ""

    def _prompt_completion(self, row: dict[str, Any], where: str, report: LoadReport) -> dict | None:
        name = row_name(row, where)
        prompt, reason = self._fill(row, self.prompt_field, self.prompt_template, "prompt")
        if prompt is None:
            report.drop(reason, name, where=where)
            return None
        completion, reason = self._fill(row, self.completion_field, self.completion_template, "completion")
        if completion is None:
            report.drop(reason, name, where=where)
            return None
        if not completion.strip():
            report.drop("empty completion", name, where=where)
            return None
        record = {"prompt": prompt, "completion": completion, "id": name}
        system = row.get(self.system_field or "system")
        if self.system_field and system is None:
            report.drop(f"missing field {self.system_field!r}", name, where=where)
            return None
        if isinstance(system, str) and system.strip():
            record["system"] = system
        report.kept += 1
        return record
