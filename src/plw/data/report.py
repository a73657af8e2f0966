"""What loading and encoding did to the data: rows read, kept, dropped by reason, truncated, given an EOS, so nothing
changes or disappears silently. One class for both steps (a loader fills ``read/kept/skipped/dropped``; the encoder
fills ``read/kept/dropped`` and the encoding counters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RecordError

EXAMPLES_PER_REASON = 5


class SourceError(RecordError):
    """A data source cannot be read at all (a hub dataset offline, no records left, ...)."""


@dataclass
class LoadReport:
    """Counts of one load: ``read`` rows seen, ``kept`` records produced, ``dropped[reason]`` rows left out.

    ``skipped`` counts rows of another subset than the one asked for (e.g. ``level: middle`` rows when
    ``config: high``): they are not bad rows. With one row per record, ``read == kept + skipped +
    sum(dropped.values())``; under ``multi_turn: expand`` an encoder's ``kept`` and ``dropped`` count rows (one per
    assistant turn), so their sum can exceed ``read`` (records).

    The encoder counts ``truncated`` rows (prompt cut on the left), rows whose completion got an ``eos_appended``
    (the template ended it with no stop token), rows with a ``tail_cut`` (text the template wrote after the stop
    token, e.g. a next header, left out) and rows rendered by a template that rewrites history
    (``history_rewritten``: earlier turns render differently once later turns exist).

    ``examples[reason]`` keeps the first few ids (or ``file:line`` locations) of the dropped rows. With
    ``strict`` the first dropped row raises :class:`RecordError` instead of being counted.
    """

    read: int = 0
    kept: int = 0
    skipped: int = 0
    truncated: int = 0
    eos_appended: int = 0
    tail_cut: int = 0
    history_rewritten: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    strict: bool = False

    def drop(self, reason: str, name: str, detail: str = "", where: str | None = None) -> None:
        """Count one dropped row named ``name`` (its id or location). Under ``strict``, raise instead, naming the
        location ``where`` (file and line) as well when it differs from ``name``."""
        if self.strict:
            extra = f" ({detail})" if detail else ""
            label = name if where is None or where == name else f"{where} (id {name})"
            raise RecordError(f"{label}: {reason}{extra}")
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if len(self.examples.setdefault(reason, [])) < EXAMPLES_PER_REASON:
            self.examples[reason].append(name)

    def count(
        self,
        truncated: bool = False,
        eos_appended: bool = False,
        tail_cut: bool = False,
        history_rewritten: bool = False,
    ) -> None:
        """Count one encoded row that is kept, with what encoding did to it."""
        self.kept += 1
        self.truncated += int(truncated)
        self.eos_appended += int(eos_appended)
        self.tail_cut += int(tail_cut)
        self.history_rewritten += int(history_rewritten)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "skipped": self.skipped,
            "truncated": self.truncated,
            "eos_appended": self.eos_appended,
            "tail_cut": self.tail_cut,
            "history_rewritten": self.history_rewritten,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        """One line, e.g. ``"12 read, 10 kept, dropped: 2 missing field 'answer' (e.g. f.jsonl:3, f.jsonl:7)"``."""
        parts = [
            f"{n} {reason} (e.g. {', '.join(self.examples.get(reason, []))})" for reason, n in self.dropped.items()
        ]
        notes = [
            f"{self.skipped} skipped (other subset)" if self.skipped else "",
            f"{self.truncated} truncated (prompt cut on the left)" if self.truncated else "",
            f"EOS appended to {self.eos_appended} rows" if self.eos_appended else "",
            f"text after the stop token cut from {self.tail_cut} rows" if self.tail_cut else "",
            f"{self.history_rewritten} rows by a history-rewriting template" if self.history_rewritten else "",
        ]
        extra = "".join(f", {n}" for n in notes if n)
        return f"{self.read} read, {self.kept} kept{extra}, dropped: {'; '.join(parts) or 'none'}"
