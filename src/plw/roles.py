"""Role weights: a prompt weight per chat role (and per turn position) for multi-turn ``messages`` records.

In a conversation the last assistant turn is the completion (weight 1) and every earlier token is prompt. With role
weights, a prompt token of role ``r`` weighs ``plw * role_weight``, so the prompt-loss-weight still scales the whole
prompt (and can follow a schedule) while the roles set the proportions inside it::

    role_weights: {system: 0, user: 0.5, assistant: 1, tool: 0}

A role's value may also be a list, read by turn position counted back from the completion: the first entry is the
role's most recent turn in the prompt, the next the one before it, and the last entry repeats for older turns. So
``assistant: [1, 0.2]`` keeps the previous assistant turn at full prompt weight and earlier ones at 0.2. Roles left
out weigh 1. Which tokens belong to which turn is decided by :func:`plw.data.messages.render_segments` (the header
that opens an assistant turn belongs to the turn before it; a preamble injected by the template is ``system``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .data.messages import ROLES


class RoleWeightsError(ValueError):
    """Role weights that cannot be used; the message names the role."""


@dataclass(frozen=True)
class RoleWeights:
    """Per-role prompt weights; ``weights[role][k]`` is the weight of the role's k-th most recent prompt turn."""

    weights: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def weight(self, role: str, back: int = 0) -> float:
        """Weight of a prompt turn of ``role`` that is the ``back``-th most recent of its role (0 = latest)."""
        values = self.weights.get(role)
        if not values:
            return 1.0
        return values[min(back, len(values) - 1)]

    def token_weights(
        self, role_ids: Sequence[int], turn_ids: Sequence[int], completion_mask: Sequence[int]
    ) -> list[float]:
        """Per-token factor for one encoded conversation: the role weight on prompt tokens, 1 on completion tokens."""
        if not len(role_ids) == len(turn_ids) == len(completion_mask):
            raise ValueError("role_ids, turn_ids and completion_mask differ in length")
        # Count, per role, the prompt turns from the end: the most recent one is 0.
        back: dict[int, int] = {}
        seen: dict[int, list[int]] = {}
        for role, turn, comp in zip(role_ids, turn_ids, completion_mask, strict=True):
            if not comp and (not seen.get(role) or seen[role][-1] != turn):
                seen.setdefault(role, []).append(turn)
        for turns in seen.values():
            for k, turn in enumerate(reversed(turns)):
                back[turn] = k
        return [
            1.0 if comp else self.weight(ROLES[role], back[turn])
            for role, turn, comp in zip(role_ids, turn_ids, completion_mask, strict=True)
        ]

    def to_config(self) -> dict[str, Any]:
        return {r: (v[0] if len(v) == 1 else list(v)) for r, v in self.weights.items()}


def parse_role_weights(value: Any, name: str = "role_weights") -> RoleWeights:
    """``{role: weight or [weights by turn position]}`` -> :class:`RoleWeights`; weights in [0, 1]."""
    if isinstance(value, RoleWeights):
        return value
    if not isinstance(value, dict) or not value:
        raise RoleWeightsError(f"{name}: expected a mapping such as {{user: 0.5, system: 0}}, got {value!r}")
    out: dict[str, tuple[float, ...]] = {}
    for role, w in value.items():
        if role not in ROLES:
            raise RoleWeightsError(f"{name}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        items = w if isinstance(w, list) else [w]
        if not items:
            raise RoleWeightsError(f"{name}.{role}: give a weight or a non-empty list of weights")
        for x in items:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or not 0 <= x <= 1:
                raise RoleWeightsError(f"{name}.{role}: weights must be numbers in [0, 1], got {x!r}")
        out[role] = tuple(float(x) for x in items)
    return RoleWeights(out)


def apply_role_weights(rows: list[dict], role_weights: Any, which: str = "train") -> None:
    """Give conversation rows their ``role_weight`` column; drop the encoder's ``turn_ids`` from every row.

    Rows without ``role_ids`` (prompt/completion records) are left as they are. Role weights on data without a
    single conversation, and data that mixes the two formats, raise :class:`RoleWeightsError` rather than being
    silently ignored; ``which`` names the data in the message (``train`` or ``eval``).
    """
    weights = parse_role_weights(role_weights) if role_weights else None
    conversations = 0
    for row in rows:
        turn_ids = row.pop("turn_ids", None)
        if "role_ids" not in row:
            continue
        conversations += 1
        if weights is not None:
            row["role_weight"] = weights.token_weights(row["role_ids"], turn_ids, row["completion_mask"])
    if weights is not None and conversations == 0:
        raise RoleWeightsError(
            f"role_weights: {which}_data has no messages records (role weights apply to conversations)"
        )
    if 0 < conversations < len(rows):
        raise RoleWeightsError(f"{which}_data: mixes messages records with prompt/completion records; use one format")
