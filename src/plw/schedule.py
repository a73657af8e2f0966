"""PLW schedules: a prompt-loss-weight that moves from one value to another during training.

Wherever a PLW is accepted (``prompt_loss_weight`` in a config, ``plw_values``, ``plw sweep --plw``) it may be

* a number in [0, 1]: a constant weight;
* a short string ``"START->END"`` or ``"START->END:SHAPE"`` (SHAPE ``linear``, the default, ``cosine`` or ``step``):
  from START at the first optimizer step to END at the end of training, e.g. ``"1->0:linear"``;
* a mapping with every setting::

    {start: 1, end: 0, shape: cosine, unit: epochs, length: 1.5, warmup: 0.25, stairs: 2}

  ``unit`` (``steps`` or ``epochs``, default ``steps``) is what ``length`` and ``warmup`` count. The weight stays at
  ``start`` for ``warmup``, then changes over ``length`` (default: the rest of training) and stays at ``end``.
  ``step`` drops in ``stairs`` equal drops (default 1) at equal intervals, reaching ``end`` at the end of ``length``.

At optimizer step ``s`` (0 for the first step) with ``x`` its position in the unit (``s``, or the fractional epoch
at the start of the step), ``p = clip((x - warmup) / length, 0, 1)`` and

* linear: ``start + (end - start) * p``
* cosine: ``end + (start - end) * (1 + cos(pi * p)) / 2``
* step:   ``start + (end - start) * floor(p * stairs) / stairs``

The value is a pure function of the step, so a resumed run continues on the same curve.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .loss import check_plw

SHAPES = ("constant", "linear", "cosine", "step")
UNITS = ("steps", "epochs")
_KEYS = ("start", "end", "shape", "unit", "length", "warmup", "stairs")
_SHORT = re.compile(r"^\s*([0-9.eE+-]+)\s*->\s*([0-9.eE+-]+)\s*(?::\s*([a-z]+)\s*)?$")


class ScheduleError(ValueError):
    """A PLW or PLW schedule that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class PLWSchedule:
    """A prompt-loss-weight as a function of training progress (a constant is ``shape="constant"``)."""

    start: float
    end: float
    shape: str = "linear"
    unit: str = "steps"
    length: float | None = None
    warmup: float = 0.0
    stairs: int = 1

    @property
    def is_constant(self) -> bool:
        return self.shape == "constant" or self.start == self.end

    def value(
        self, step: int, epoch: float = 0.0, total_steps: int | None = None, total_epochs: float | None = None
    ) -> float:
        """The weight used at optimizer step ``step`` (0-based), ``epoch`` being the fractional epoch at its start.

        ``total_steps`` / ``total_epochs`` (the training's length in the schedule's unit) are needed only when
        ``length`` is not set.
        """
        if self.is_constant:
            return self.start
        x = float(step) if self.unit == "steps" else float(epoch)
        length = self.length
        if length is None:
            total = total_steps if self.unit == "steps" else total_epochs
            if total is None:
                raise ScheduleError(f"schedule {self.label()}: the length of training is needed (length not set)")
            length = float(total) - self.warmup
        if x <= self.warmup:
            return self.start
        p = 1.0 if length <= 0 else min(max((x - self.warmup) / length, 0.0), 1.0)
        if self.shape == "linear":
            frac = p
        elif self.shape == "cosine":
            frac = (1.0 - math.cos(math.pi * p)) / 2.0
        else:  # step
            frac = math.floor(p * self.stairs + 1e-9) / self.stairs
        return self.start + (self.end - self.start) * frac

    def label(self) -> str:
        """Short human label: ``"0.1"`` for a constant, ``"1→0 linear"`` for a schedule (plus non-default options)."""
        if self.is_constant:
            return f"{self.start:g}"
        text = f"{self.start:g}→{self.end:g} {self.shape}"
        extras = []
        if self.shape == "step" and self.stairs != 1:
            extras.append(f"{self.stairs} stairs")
        if self.warmup:
            extras.append(f"warm-up {self.warmup:g} {self.unit}")
        if self.length is not None:
            extras.append(f"over {self.length:g} {self.unit}")
        return text + (f" ({', '.join(extras)})" if extras else "")

    def slug(self) -> str:
        """A folder-name-safe form, e.g. ``1to0-linear`` (constants: ``0.1``)."""
        if self.is_constant:
            return f"{self.start:g}"
        parts = [f"{self.start:g}to{self.end:g}", self.shape]
        if self.shape == "step" and self.stairs != 1:
            parts.append(f"{self.stairs}stairs")
        if self.warmup:
            parts.append(f"warmup{self.warmup:g}{self.unit[0]}")
        if self.length is not None:
            parts.append(f"over{self.length:g}{self.unit[0]}")
        return "-".join(parts)

    def to_config(self) -> float | str | dict[str, Any]:
        """The plainest config form that parses back to this schedule."""
        if self.shape == "constant":
            return self.start
        if (self.unit, self.length, self.warmup, self.stairs) == ("steps", None, 0.0, 1):
            return f"{self.start:g}->{self.end:g}:{self.shape}"
        out: dict[str, Any] = {"start": self.start, "end": self.end, "shape": self.shape, "unit": self.unit}
        if self.length is not None:
            out["length"] = self.length
        if self.warmup:
            out["warmup"] = self.warmup
        if self.shape == "step":
            out["stairs"] = self.stairs
        return out


def _number(value: Any, what: str) -> float:
    try:
        return check_plw(value, what)
    except ValueError as err:
        raise ScheduleError(str(err)) from None


def parse_plw(value: Any, name: str = "prompt_loss_weight") -> PLWSchedule:
    """A number, ``"START->END[:SHAPE]"`` string or mapping -> :class:`PLWSchedule`; :class:`ScheduleError` if bad."""
    if isinstance(value, PLWSchedule):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _SHORT.match(text)
        if match is None:
            try:
                number = float(text)
            except ValueError:
                raise ScheduleError(
                    f"{name}: {value!r} is not a number in [0, 1] or a schedule such as '1->0:linear'"
                ) from None
            return parse_plw(number, name)
        start, end, shape = match.groups()
        return parse_plw({"start": _float(start, name), "end": _float(end, name), "shape": shape or "linear"}, name)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in _KEYS]
        if unknown:
            raise ScheduleError(f"{name}: unknown schedule key(s) {unknown}; known: {', '.join(_KEYS)}")
        if "start" not in value or "end" not in value:
            raise ScheduleError(f"{name}: a schedule needs start and end, got {value!r}")
        shape = value.get("shape", "linear")
        if shape not in SHAPES:
            raise ScheduleError(f"{name}.shape: expected one of {', '.join(SHAPES)}, got {shape!r}")
        unit = value.get("unit", "steps")
        if unit not in UNITS:
            raise ScheduleError(f"{name}.unit: expected steps or epochs, got {unit!r}")
        length = value.get("length")
        if length is not None and not (_finite(length) and length > 0):
            raise ScheduleError(f"{name}.length: a positive number of {unit} or null, got {length!r}")
        warmup = value.get("warmup", 0) or 0
        if not (_finite(warmup) and warmup >= 0):
            raise ScheduleError(f"{name}.warmup: a number of {unit} >= 0, got {warmup!r}")
        stairs = value.get("stairs", 1)
        if isinstance(stairs, bool) or not isinstance(stairs, int) or stairs < 1:
            raise ScheduleError(f"{name}.stairs: a positive integer, got {stairs!r}")
        if "stairs" in value and shape != "step":
            raise ScheduleError(f"{name}.stairs: only for shape step")
        start = _number(value["start"], f"{name}.start")
        end = _number(value["end"], f"{name}.end")
        return PLWSchedule(
            start, end, shape, unit, None if length is None else float(length), float(warmup), int(stairs)
        )
    return PLWSchedule(_number(value, name), _number(value, name), "constant")


def _finite(value: Any) -> bool:
    """A real, finite number (bools, strings, NaN and infinities are not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _float(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ScheduleError(f"{name}: {text!r} is not a number") from None


def plw_values(values: list, name: str, shown: Any = None) -> list:
    """Each PLW of a sweep checked and in its config form; the same value (or schedule) twice is an error naming
    ``shown`` (default: ``values``)."""
    schedules = [parse_plw(v, name) for v in values]
    slugs = [s.slug() for s in schedules]
    if len(set(slugs)) != len(slugs):
        raise ScheduleError(f"{name}: repeated values in {values if shown is None else shown!r}")
    return [s.to_config() for s in schedules]


def plw_label(value: Any) -> str:
    """Label of a PLW config value (number, schedule string or mapping); the value itself if it does not parse."""
    try:
        return parse_plw(value).label()
    except ScheduleError:
        return str(value)
