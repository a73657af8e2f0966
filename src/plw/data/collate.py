"""Collators: turn encoded rows into padded tensors that keep the prompt/completion masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

MASK_KEYS = ("input_ids", "attention_mask", "prompt_mask", "completion_mask")


@dataclass
class PaddingCollator:
    """Right-pad a list of rows to the longest one (optionally to a multiple of ``pad_to_multiple_of``).

    Padding has ``attention_mask`` 0 and both segment masks 0, so it carries no weight. Keys other than the four
    mask keys are dropped.
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
        return batch
