"""Weights from the data: a record's ``weight`` and each message's ``weight``, as one per-token ``data_weight``.

docs/loss.md: ``w_t = (plw * role_weight(t) * prompt_t + completion_loss_weight * completion_t) * record_weight *
message_weight(t)``. This module computes the last two factors for every token of an encoded row:

* ``record_weight``: the record's ``weight`` field (renamed with ``weight_field`` in the data spec), default 1;
* ``message_weight(t)``: in ``messages`` records, the ``weight`` of the message token ``t`` belongs to (OpenAI's
  0/1 ``weight`` generalised to real numbers), default 1. A message covers the tokens its segment has in
  :func:`plw.data.messages.render_segments` (the header that opens an assistant turn belongs to the message before
  it; a preamble the template injects belongs to no message and weighs 1), so the last assistant message's weight
  multiplies the completion tokens.

Every weight is a finite number >= 0 (integers and values above 1 are fine); anything else (negative, NaN,
infinite, boolean, text, null) is a one-line :class:`WeightError` naming the record's file and line. Rows carry the
product as a ``data_weight`` column only when their data has weights; :func:`complete_data_weights` gives the other
rows of the same set a column of ones, so every batch carries the same columns.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .errors import RecordError


class WeightError(RecordError):
    """A weight in the data that cannot be used; the message names the record and the field."""


def check_weight(value: Any, where: str, what: str = "weight") -> float:
    """``value`` as a float when it is a finite number >= 0; else :class:`WeightError` naming ``where``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise WeightError(f"{where}: {what} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_message_weights(messages: Any, where: str) -> None:
    """Check the ``weight`` of every message that has one (raise :class:`WeightError` naming the message)."""
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if isinstance(message, dict) and "weight" in message:
                check_weight(message["weight"], where, f"messages[{i}].weight")


def has_weights(record: dict) -> bool:
    """True when a record sets its own weight or a message weight."""
    messages = record.get("messages")
    by_message = isinstance(messages, list) and any(isinstance(m, dict) and "weight" in m for m in messages)
    return "weight" in record or by_message


def token_data_weights(row: dict, record: dict, where: str = "record") -> list[float]:
    """``record_weight * message_weight(t)`` for every token of the encoded ``row`` of ``record``.

    Conversation rows must still carry the encoder's ``turn_ids`` (the index of each token's message, -1 for template
    text before the first message, which weighs 1) to find each token's message.
    """
    base = check_weight(record.get("weight", 1.0), where)
    n = len(row["input_ids"])
    messages = record.get("messages")
    if not isinstance(messages, list) or "turn_ids" not in row:
        return [base] * n
    per_message = [check_weight(m.get("weight", 1.0), where, f"messages[{i}].weight") for i, m in enumerate(messages)]
    return [base * (per_message[t] if t >= 0 else 1.0) for t in row["turn_ids"]]


def attach_data_weight(row: dict, record: Any, where: str = "record") -> None:
    """Give ``row`` a ``data_weight`` column when its ``record`` has a record or message weight."""
    if isinstance(record, dict) and has_weights(record):
        row["data_weight"] = token_data_weights(row, record, where)


def complete_data_weights(rows: list[dict]) -> None:
    """When some rows carry ``data_weight``, give the others a column of ones (batches need the same columns)."""
    if any("data_weight" in r for r in rows):
        for r in rows:
            r.setdefault("data_weight", [1.0] * len(r["input_ids"]))


def _distribution(values: Sequence[float]) -> dict[str, float]:
    values = sorted(values)
    n = len(values)
    if not n:
        return {"n": 0}
    q = statistics.quantiles(values, n=10, method="inclusive") if n > 1 else [values[0]] * 9
    return {
        "n": n,
        "min": values[0],
        "p10": q[0],
        "median": statistics.median(values),
        "p90": q[8],
        "max": values[-1],
        "mean": sum(values) / n,
        "zero": sum(v == 0 for v in values),
    }


def weight_report(records: Sequence[Any], rows: Sequence[dict]) -> dict[str, Any] | None:
    """For the data report: the distribution of record and message weights (over the records that were read) and
    the count of encoded rows whose every token weighs 0 (they add nothing to the loss). None without weights."""
    record_weights = [float(r.get("weight", 1.0)) for r in records if isinstance(r, dict)]
    message_weights = [
        float(m["weight"])
        for r in records
        if isinstance(r, dict) and isinstance(r.get("messages"), list)
        for m in r["messages"]
        if isinstance(m, dict) and "weight" in m
    ]
    if not any(isinstance(r, dict) and has_weights(r) for r in records):
        return None
    zero_rows = sum(1 for r in rows if "data_weight" in r and not any(r["data_weight"]))
    return {
        "record_weight": _distribution(record_weights),
        "message_weight": _distribution(message_weights),
        "rows_of_weight_zero": zero_rows,
    }
