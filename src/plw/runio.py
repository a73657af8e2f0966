"""Files of a run folder: atomic writes, append-only ``metrics.jsonl``, ``summary.json``.

Nothing plw writes can be left half-written: whole files go through a temporary file and ``os.replace``;
``metrics.jsonl`` only ever grows by complete lines (one ``write`` of a full line, then ``fsync``), and a reader
ignores a torn last line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a partial one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one complete JSON line and flush it to disk."""
    line = json.dumps(record, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl_lines(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl``; a torn (incomplete) last line from a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break
            raise
    return out


def metric_direction(name: str) -> str:
    """``"min"`` for losses, ``"max"`` for accuracies, ``""`` for counts and timings."""
    if name.endswith("loss"):
        return "min"
    if name.endswith("accuracy"):
        return "max"
    return ""


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Best value, step and epoch of every loss and accuracy metric in ``metrics.jsonl`` lines."""
    best: dict[str, Any] = {}
    for line in lines:
        for key, value in line.items():
            direction = metric_direction(key)
            if not key.startswith("eval_") or not direction or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            current = best.get(key)
            better = current is None or (value < current["value"] if direction == "min" else value > current["value"])
            if better:
                best[key] = {"value": value, "step": line.get("step"), "epoch": line.get("epoch"), "mode": direction}
    last = lines[-1] if lines else {}
    return {"evaluations": len(lines), "best": best, "last": last}


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
