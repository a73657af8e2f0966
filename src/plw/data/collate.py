"""Collators: turn encoded rows into padded tensors that keep the prompt/completion masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

MASK_KEYS = ("input_ids", "attention_mask", "prompt_mask", "completion_mask")
# Optional per-token columns, with the fill value and dtype of each: conversations carry role_ids / role_weight
# (plw.data.messages, plw.roles); weighted data carries data_weight (plw.data.weights); prompt subsampling keys its
# draw on row_index (plw.subsample).
OPTIONAL_KEYS: dict[str, tuple[float, torch.dtype]] = {
    "role_ids": (-1, torch.long),
    "role_weight": (1.0, torch.float32),
    "data_weight": (0.0, torch.float32),
    "row_index": (-1, torch.long),
    # Evaluation rows: the row's index in the validation set, so per-row outcomes can be paired across runs.
    "row_id": (-1, torch.long),
}


def optional_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The optional per-token columns a batch carries: those of its first row, which every row must then have."""
    keys = [k for k in OPTIONAL_KEYS if k in rows[0]]
    for i, r in enumerate(rows):
        if [k for k in OPTIONAL_KEYS if k in r] != keys:
            raise KeyError(f"row {i} does not carry the same optional columns {keys} as the first row of its batch")
    return keys


@dataclass
class PaddingCollator:
    """Right-pad a list of rows to the longest one (optionally to a multiple of ``pad_to_multiple_of``).

    Padding has ``attention_mask`` 0 and both segment masks 0, so it carries no weight. The optional per-token
    columns of :data:`OPTIONAL_KEYS` (``role_ids``, ``role_weight``, ``data_weight``, ``row_index``) are kept when
    the rows have them; other keys are dropped.
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        for key in MASK_KEYS:
            if key not in rows[0]:
                raise KeyError(f"rows must carry {MASK_KEYS}; missing {key!r} (encode them with plw.encode)")
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key in MASK_KEYS:
            fill = self.pad_token_id if key == "input_ids" else 0
            out = torch.full((len(rows), length), fill, dtype=torch.long)
            for i, r in enumerate(rows):
                values = r[key]
                out[i, : len(values)] = torch.as_tensor(values, dtype=torch.long)
            batch[key] = out
        for key in optional_keys(rows):
            fill, dtype = OPTIONAL_KEYS[key]
            out = torch.full((len(rows), length), fill, dtype=dtype)
            for i, r in enumerate(rows):
                out[i, : len(r[key])] = torch.as_tensor(r[key], dtype=dtype)
            batch[key] = out
        return batch
