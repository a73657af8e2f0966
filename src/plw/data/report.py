"""What a loader did to its input: rows read, kept and dropped by reason, so nothing disappears silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .encode import RecordError

EXAMPLES_PER_REASON = 5


class SourceError(RecordError):
    """A data source cannot be read at all (a hub dataset offline, no records left, ...)."""


@dataclass
class LoadReport:
    """Counts of one load: ``read`` rows seen, ``kept`` records produced, ``dropped[reason]`` rows left out.

    ``skipped`` counts rows of another subset than the one asked for (e.g. ``level: middle`` rows when
    ``config: high``): they are not bad rows. ``read == kept + skipped + sum(dropped.values())``.

    ``examples[reason]`` keeps the first few ids (or ``file:line`` locations) of the dropped rows. With
    ``strict`` the first dropped row raises :class:`RecordError` instead of being counted.
    """

    read: int = 0
    kept: int = 0
    skipped: int = 0
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

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "skipped": self.skipped,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        """One line, e.g. ``"12 read, 10 kept, dropped: 2 missing field 'answer' (e.g. f.jsonl:3, f.jsonl:7)"``."""
        parts = [
            f"{n} {reason} (e.g. {', '.join(self.examples.get(reason, []))})" for reason, n in self.dropped.items()
        ]
        skipped = f", {self.skipped} skipped (other subset)" if self.skipped else ""
        return f"{self.read} read, {self.kept} kept{skipped}, dropped: {'; '.join(parts) or 'none'}"
