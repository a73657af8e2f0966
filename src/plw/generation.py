"""Generated-answer accuracy: greedy generation from each validation row's prompt, scored by :mod:`plw.answers`.

Teacher-forced exact match (``eval_exact_match``) asks whether every completion token is the arg-max given the
*reference* prefix; a user reads "accuracy" as what the model answers on its own. So, when enabled, every
evaluation also generates greedily from each row's prompt until a stop token (the model's stop tokens,
:mod:`plw.data.stops`, else the tokenizer's EOS) or ``max_new_tokens`` new tokens, extracts the answer by the
task's rule and compares it with the reference's (``eval_generated_accuracy``); each row's ``generated`` text and
0/1 outcome ``generated_correct`` go to ``predictions.jsonl``.

Generation uses ``transformers``' ``generate`` (left-padded batches, key/value cache). Under several processes each
takes every ``world``-th row and the results are gathered with one ``all_gather_object`` per evaluation, called on
every rank whatever its rows. Every rank's share is padded to the same number of rows, so the ranks run the same
number of ``generate`` calls; the decoding steps inside a call may still differ, so engines that gather parameters
inside each forward (DeepSpeed ZeRO-3, FSDP) are not supported here (untested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .answers import answers_match, detect_rule


@dataclass(frozen=True)
class GenerationRow:
    """One validation row to answer: its id, the prompt's token ids and the reference completion's text."""

    row_id: int
    prompt_ids: list[int]
    reference: str


def generation_rows(rows: Sequence[dict], tokenizer: Any) -> list[GenerationRow]:
    """The prompt (every token before the first completion token) and the reference completion (decoded without
    special tokens) of encoded rows; rows are named by their ``row_id`` column, else by their index."""
    out = []
    for i, row in enumerate(rows):
        mask = list(row["completion_mask"])
        if 1 not in mask:
            continue
        start = mask.index(1)
        ids = list(row["input_ids"])
        completion = [t for t, m in zip(ids, mask, strict=True) if m]
        row_id = int(row["row_id"][0]) if "row_id" in row else i
        out.append(GenerationRow(row_id, ids[:start], tokenizer.decode(completion, skip_special_tokens=True)))
    return out


def cut_at_stop(ids: Sequence[int], stop_ids: frozenset[int]) -> tuple[list[int], bool]:
    """The tokens before the first stop token, and whether one was met."""
    for k, t in enumerate(ids):
        if t in stop_ids:
            return list(ids[:k]), True
    return list(ids), False


@torch.no_grad()
def greedy_generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    stop_ids: frozenset[int],
    max_new_tokens: int,
    pad_token_id: int = 0,
    batch_size: int = 8,
) -> list[tuple[list[int], bool]]:
    """Greedy continuation of each prompt: the new tokens before the first stop token (at most ``max_new_tokens``),
    and whether generation stopped on a stop token rather than at the bound."""
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[list[int], bool]] = []
    try:
        for s in range(0, len(prompts), batch_size):
            batch = prompts[s : s + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for b, p in enumerate(batch):  # left padding: every prompt ends where generation starts
                ids[b, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
                attention[b, width - len(p) :] = 1
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=attention.to(device), generation_config=config
            )
            out += [cut_at_stop(row[width:].tolist(), stop_ids) for row in generated.cpu()]
    finally:
        model.train(was_training)
    return out


def rank_share(rows: Sequence[GenerationRow], rank: int, world: int) -> tuple[list[GenerationRow], int]:
    """This rank's rows (every ``world``-th from ``rank``) and how many are real: the share is padded by repeating a
    row to the same length on every rank, so every rank runs the same number of ``generate`` calls."""
    mine = list(rows[rank::world])
    size = -(-len(rows) // world) if rows else 0
    real = len(mine)
    return mine + [rows[0]] * (size - real), real


def _gather(items: list) -> list:
    """Every rank's ``items`` concatenated (one ``all_gather_object`` on every rank; the list itself outside)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


@dataclass
class GeneratedAccuracy:
    """What an evaluation needs to score generated answers: the rows, the decoding bounds and the answer rule.

    ``rule`` ``"auto"`` is decided once from the references (:func:`plw.answers.detect_rule`).
    """

    rows: list[GenerationRow]
    tokenizer: Any
    stop_ids: frozenset[int]
    max_new_tokens: int = 32
    rule: str = "auto"
    choices: list[str] | None = None
    batch_size: int = 8
    last: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stop_ids:
            raise ValueError("generated accuracy needs at least one stop token (the tokenizer has no EOS)")
        if self.rule == "auto":
            self.rule = detect_rule([r.reference for r in self.rows], self.choices)

    @classmethod
    def from_rows(
        cls, rows: Sequence[dict], tokenizer: Any, stop_tokens: Sequence[str | int] | None = None, **kwargs: Any
    ) -> GeneratedAccuracy:
        """From encoded validation rows; the stop tokens are ``stop_tokens`` or else the model's
        (:func:`plw.data.stops.stop_ids`), else the tokenizer's EOS."""
        from .data.stops import check_stop_tokens, stop_ids

        stops = stop_ids(tokenizer, check_stop_tokens(stop_tokens))
        if stops is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            stops = frozenset([eos] if eos is not None else [])
        return cls(generation_rows(rows, tokenizer), tokenizer, stops, **kwargs)

    def evaluate(self, model: Any, rank: int = 0, world: int = 1) -> dict[str, float]:
        """Generate for this rank's share of the rows, gather all ranks', and score them. Returns
        ``generated_accuracy`` and ``generated_rows``; the per-row table is kept in :attr:`last`, sorted by row id:
        ``id``, ``generated`` (text) and ``generated_correct`` (0/1)."""
        mine, real = rank_share(self.rows, rank, world)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        results = greedy_generate(
            model,
            [r.prompt_ids for r in mine],
            self.stop_ids,
            self.max_new_tokens,
            pad_token_id=pad if pad is not None else min(self.stop_ids),
            batch_size=self.batch_size,
        )
        scored = []
        for row, (ids, _) in zip(mine[:real], results[:real], strict=True):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            scored.append((row.row_id, text, int(answers_match(text, row.reference, self.rule, self.choices))))
        scored = sorted(_gather(scored))
        self.last = {
            "id": [s[0] for s in scored],
            "generated": [s[1] for s in scored],
            "generated_correct": [s[2] for s in scored],
        }
        if not scored:
            return {}
        return {"generated_accuracy": sum(s[2] for s in scored) / len(scored), "generated_rows": float(len(scored))}


def merge_row_tables(base: dict[str, list] | None, extra: dict[str, list]) -> dict[str, list]:
    """``base``'s per-row columns with ``extra``'s added, aligned on ``id`` (a row missing from one side gets None
    there); either may be empty."""
    if not base or not base.get("id"):
        return dict(extra)
    if not extra.get("id"):
        return dict(base)
    ids = sorted(set(base["id"]) | set(extra["id"]))
    out: dict[str, list] = {"id": ids}
    for table in (base, extra):
        where = {row_id: k for k, row_id in enumerate(table["id"])}
        for key, values in table.items():
            if key != "id":
                out[key] = [values[where[i]] if i in where else None for i in ids]
    return out
