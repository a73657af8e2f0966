"""Sample packing: encoded rows -> bins of at most ``max_length`` tokens -> batches without an attention mask.

Three small parts, each usable on its own:

* :func:`pack_bins` assigns rows to bins: best-fit decreasing, then a seeded local search that empties bins (it
  repacks a nearly empty bin with two random others and keeps the result when it needs fewer bins or fills them
  more unevenly, which concentrates the free space until a bin empties). Deterministic for a seed.
* :class:`PackedDataset` holds the bins of a list of rows; item ``i`` is bin ``i`` with the rows laid end to end,
  their ``prompt_mask``/``completion_mask`` kept and ``position_ids`` restarting at 0 for every row. The Trainer's
  random sampler reshuffles the bin order every epoch (seeded by ``data_seed``); the bins themselves stay fixed.
* :class:`PackedCollator` concatenates the bins of a batch into one ``[1, T]`` sequence with no padding and no
  ``attention_mask`` (or, for SDPA/eager attention, puts one bin per row: see its docstring). transformers then builds a block-diagonal causal mask from the restarts of ``position_ids``
  (``masking_utils.find_packed_sequence_indices`` for eager/SDPA/flex; flash-attention varlen derives the same
  boundaries), and :func:`plw.loss.target_weights` never takes the first token of a row as a target, so a packed
  batch gives the same loss and gradient as its rows run one by one. :func:`check_packing_isolation` verifies
  this on the actual model rather than trusting it.

Rows longer than ``max_length`` are refused, never cut: :func:`plw.encode_records` has already dropped them or
shortened their prompt from the left, so a cut here could only remove the completion.

With packing, a batch size counts bins, not rows: ``per_device_train_batch_size=2`` puts two bins (about
``2 * max_length`` tokens) in each micro-batch.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .collate import OPTIONAL_KEYS, optional_keys

ROW_KEYS = ("input_ids", "prompt_mask", "completion_mask")
# Attention implementations that build the block-diagonal mask of packed rows from position_ids in transformers 5.
PACKING_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


class RowTooLongError(ValueError):
    """A row does not fit in one bin; packing never cuts rows."""


class PackingNotSupportedError(ValueError):
    """The model (or its attention implementation) lets packed rows see each other."""


# ---- assigning rows to bins ------------------------------------------------------------------------------------


def _best_fit_decreasing(lengths: Sequence[int], max_length: int, order: Sequence[int]) -> list[list[int]]:
    """Place rows (taken in ``order``, longest first) into the fullest bin that still has room for them.

    Free space takes at most ``max_length`` values, so bins are kept in buckets by free space with a sorted list of
    the non-empty bucket keys: finding the best bin is one bisection, O(n log max_length) in all.
    """
    bins: list[list[int]] = []
    buckets: dict[int, list[int]] = {}  # free space -> bins with exactly that much room
    spaces: list[int] = []  # sorted keys of the non-empty buckets
    for i in order:
        need = lengths[i]
        k = bisect.bisect_left(spaces, need)
        if k == len(spaces):
            b, free = len(bins), max_length
            bins.append([])
        else:
            free = spaces[k]
            b = buckets[free].pop()
            if not buckets[free]:
                del buckets[free]
                spaces.pop(k)
        bins[b].append(i)
        left = free - need
        if left not in buckets:
            buckets[left] = []
            bisect.insort(spaces, left)
        buckets[left].append(b)
    return bins


def _fullest_subset(sizes: Sequence[int], capacity: int) -> list[int]:
    """Indices of a subset of ``sizes`` with the largest sum <= ``capacity`` (subset sum on an int bitset).

    Among equally full subsets it prefers earlier items; callers sort sizes longest first, so long rows are used
    and short ones kept for other gaps.
    """
    full = (1 << (capacity + 1)) - 1
    reach = [1]  # reach[k]: bit s set when some subset of sizes[:k] sums to s
    for s in sizes:
        reach.append((reach[-1] | (reach[-1] << s)) & full)
    total = reach[-1].bit_length() - 1
    chosen = []
    for k in range(len(sizes) - 1, -1, -1):
        if not (reach[k] >> total) & 1:  # total needs item k
            chosen.append(k)
            total -= sizes[k]
    return chosen


def _repack(items: list[int], lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Pack a handful of rows: the longest left opens a bin, which is then filled as full as possible."""
    rest = sorted(items, key=lambda i: (-lengths[i], i))
    sizes = [lengths[i] for i in rest]
    bins = []
    while rest:
        if sum(sizes) <= max_length:
            bins.append(rest)
            break
        chosen = _fullest_subset(sizes[1:], max_length - sizes[0])
        taken = [0] + [k + 1 for k in reversed(chosen)]
        bins.append([rest[k] for k in taken])
        keep = [k for k in range(1, len(rest)) if k - 1 not in chosen]
        rest, sizes = [rest[k] for k in keep], [sizes[k] for k in keep]
    return bins


def _improve(
    bins: list[list[int]], lengths: Sequence[int], max_length: int, steps: int, rng: random.Random, floor: int
) -> list[list[int]]:
    """Local search: repack one of the emptiest bins with two random bins; keep the result when it uses fewer bins
    or the same number with a larger sum of squared fills (free space gathers in few bins until one empties)."""
    bins = [list(b) for b in bins]
    fill = [sum(lengths[i] for i in b) for b in bins]
    emptiest: list[int] = []
    for step in range(steps):
        if len(bins) <= floor or len(bins) < 2:
            break
        if step % 512 == 0:
            emptiest = sorted(range(len(bins)), key=lambda j: (fill[j], j))[:20]
        n = len(bins)
        group = list(dict.fromkeys([emptiest[rng.randrange(len(emptiest))], rng.randrange(n), rng.randrange(n)]))
        if len(group) < 2:
            continue
        new = _repack([i for j in group for i in bins[j]], lengths, max_length)
        new_fill = [sum(lengths[i] for i in b) for b in new]
        fewer = len(new) < len(group)
        if not fewer and (len(new) > len(group) or sum(f * f for f in new_fill) <= sum(fill[j] ** 2 for j in group)):
            continue
        new += [[]] * (len(group) - len(new))
        new_fill += [0] * (len(group) - len(new_fill))
        for j, b, f in zip(group, new, new_fill, strict=True):
            bins[j], fill[j] = b, f
        if fewer:
            keep = [j for j in range(len(bins)) if bins[j]]
            bins, fill = [bins[j] for j in keep], [fill[j] for j in keep]
            emptiest = sorted(range(len(bins)), key=lambda j: (fill[j], j))[:20]
    return bins


def default_improve_steps(n_rows: int, n_bins: int) -> int:
    """Local-search budget used when none is given: 20 repacks per row, at most 200,000 (seconds, not minutes).

    None when best-fit decreasing put more than 8 rows per bin on average: the short rows it places last then fill
    the gaps nearly perfectly, and each repack of many rows costs more.
    """
    return 0 if n_rows > 8 * n_bins else min(20 * n_rows, 200_000)


def pack_bins(
    lengths: Sequence[int], max_length: int, seed: int = 0, improve_steps: int | None = None
) -> list[list[int]]:
    """Assign row indices to bins holding at most ``max_length`` tokens each.

    Best-fit decreasing (rows of equal length are taken in a seeded random order), then ``improve_steps`` rounds of
    local search (default: :func:`default_improve_steps`; 0 keeps plain best-fit decreasing). The search stops early
    at the lower bound ``ceil(sum(lengths) / max_length)``. The same lengths and
    seed always give the same bins. Raises :class:`RowTooLongError` for a row longer than ``max_length``.

    >>> pack_bins([6, 3, 4, 2], max_length=8, improve_steps=0)
    [[0, 3], [2, 1]]
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    for i, n in enumerate(lengths):
        if n > max_length:
            raise RowTooLongError(
                f"row {i} has {n} tokens > max_length {max_length}; packing never cuts rows: encode with "
                f"max_length={max_length} (plw.encode_records drops such rows or truncates their prompt)"
            )
        if n < 1:
            raise ValueError(f"row {i} is empty")
    rng = random.Random(seed)
    tiebreak = list(range(len(lengths)))
    rng.shuffle(tiebreak)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], tiebreak[i]))
    bins = _best_fit_decreasing(lengths, max_length, order)
    steps = default_improve_steps(len(lengths), len(bins)) if improve_steps is None else improve_steps
    floor = math.ceil(sum(lengths) / max_length)
    if steps > 0 and len(bins) > floor:
        bins = _improve(bins, lengths, max_length, steps, rng, floor)
    return bins


# ---- statistics --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackingStats:
    """How well rows fill bins. ``fill`` = tokens / (bins * max_length): how far the bin count is above the token
    lower bound ``ceil(tokens / max_length)`` (a flat batch has no pad tokens; one bin per row pads bins to the
    longest of the batch)."""

    rows: int
    bins: int
    tokens: int
    max_length: int

    @property
    def fill(self) -> float:
        return self.tokens / (self.bins * self.max_length) if self.bins else 0.0

    @property
    def rows_per_bin(self) -> float:
        return self.rows / self.bins if self.bins else 0.0

    @property
    def lower_bound(self) -> int:
        return math.ceil(self.tokens / self.max_length)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bins": self.bins,
            "tokens": self.tokens,
            "max_length": self.max_length,
            "fill": round(self.fill, 6),
            "rows_per_bin": round(self.rows_per_bin, 4),
            "lower_bound_bins": self.lower_bound,
        }

    def summary(self) -> str:
        return (
            f"{self.rows} rows in {self.bins} bins of <= {self.max_length} tokens "
            f"({self.rows_per_bin:.2f} rows/bin, bins {100 * self.fill:.1f}% full, lower bound {self.lower_bound} "
            "bins)"
        )


def padding_share(lengths: Sequence[int], batch_size: int, sort: bool = False) -> float:
    """Share of non-pad tokens when rows are right-padded to the longest in batches of ``batch_size``.

    ``sort=True`` batches rows sorted by length (the best case of grouping by length); otherwise data order.
    """
    seq = sorted(lengths) if sort else list(lengths)
    padded = sum(max(seq[s : s + batch_size]) * len(seq[s : s + batch_size]) for s in range(0, len(seq), batch_size))
    return sum(seq) / padded if padded else 0.0


# ---- dataset and collator -----------------------------------------------------------------------------------------


def _as_rows(rows: Any) -> list[dict[str, list]]:
    """Rows as plain lists of their packed columns: the three masks plus any optional per-token columns."""
    if hasattr(rows, "column_names"):  # datasets.Dataset: read the columns once, not row by row
        missing = [k for k in ROW_KEYS if k not in rows.column_names]
        if missing:
            raise KeyError(f"rows must carry {ROW_KEYS}; missing {missing} (encode them with plw.encode)")
        keys = [*ROW_KEYS, *(k for k in OPTIONAL_KEYS if k in rows.column_names)]
        columns = {k: rows[k] for k in keys}
        return [{k: list(columns[k][i]) for k in keys} for i in range(len(rows))]
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise KeyError(f"row {i} lacks {missing}; rows must carry {ROW_KEYS} (encode them with plw.encode)")
        keys = [*ROW_KEYS, *(k for k in OPTIONAL_KEYS if k in r)]
        if len({len(r[k]) for k in keys}) != 1:
            raise ValueError(f"row {i}: input_ids and masks differ in length")
        out.append({k: list(r[k]) for k in keys})
    return out


class PackedDataset(torch.utils.data.Dataset):
    """Encoded rows packed into bins; item ``i`` is bin ``i`` as one sequence with per-row ``position_ids``.

    Args:
        rows: rows as :func:`plw.encode` returns them (a list or a ``datasets.Dataset``).
        max_length: tokens per bin at most; a longer row raises :class:`RowTooLongError`.
        seed: makes the packing deterministic (ties between equal lengths, the local search).
        improve_steps: local-search budget (see :func:`pack_bins`).

    >>> ds = PackedDataset(rows, max_length=1024, seed=42)     # doctest: +SKIP
    >>> ds.stats.summary()                                     # doctest: +SKIP
    '4867 rows in 2117 bins of <= 1024 tokens (2.30 rows/bin, bins 98.7% full, ...)'
    """

    def __init__(self, rows: Any, max_length: int, seed: int = 0, improve_steps: int | None = None):
        self.rows = _as_rows(rows)
        self.max_length = max_length
        lengths = [len(r["input_ids"]) for r in self.rows]
        self.bins = pack_bins(lengths, max_length, seed=seed, improve_steps=improve_steps)
        self.stats = PackingStats(rows=len(self.rows), bins=len(self.bins), tokens=sum(lengths), max_length=max_length)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> dict[str, list]:
        members = [self.rows[i] for i in self.bins[index]]
        keys = [*ROW_KEYS, *optional_keys(members)]
        item: dict[str, list] = {k: [] for k in (*keys, "position_ids")}
        for row in members:
            for key in keys:
                item[key].extend(row[key])
            item["position_ids"].extend(range(len(row["input_ids"])))
        return item


@dataclass
class PackedCollator:
    """Lay the items of a batch out for the model: by default end to end as one ``[1, T]`` sequence (no padding,
    no ``attention_mask``); with ``one_row_per_bin=True`` one item per row, right-padded to the longest.

    Items are bins from :class:`PackedDataset` (they carry ``position_ids``) or plain encoded rows (each becomes one
    segment whose positions start at 0), so this also serves as a padding-free collator without a packer. The
    output has ``input_ids``, ``position_ids``, ``prompt_mask``, ``completion_mask`` and ``bin_index`` (which item
    of the batch each token came from; not a model input), plus the optional per-token columns (``role_ids``,
    ``role_weight``, ``data_weight``, ``row_index``) the items carry. Run the model with ``use_cache=False`` and
    without an ``attention_mask``: transformers then isolates the rows by their ``position_ids``.

    The flat layout suits flash-attention's variable-length kernels, whose cost grows with each row's length. The
    SDPA and eager kernels instead compute attention over the whole ``[T, T]`` block-diagonal mask, so for them a
    batch of ``k`` bins as one flat row costs ``k`` times the attention of ``k`` rows; ``one_row_per_bin`` avoids
    that. Its padding has both segment masks 0 and continues the positions of the last row of its line, so it is
    never a target and no real token attends to it (attention is causal).
    """

    def __init__(self, one_row_per_bin: bool = False, pad_token_id: int = 0):
        self.one_row_per_bin = one_row_per_bin
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        for key in ROW_KEYS:
            if key not in items[0]:
                raise KeyError(f"items must carry {ROW_KEYS}; missing {key!r} (encode them with plw.encode)")
        keys = [*ROW_KEYS, *optional_keys(items)]
        lines: list[dict[str, list]] = []
        for b, item in enumerate(items):
            line: dict[str, list] = {}
            for key in keys:
                if key not in item:
                    raise KeyError(f"items must carry {ROW_KEYS}; missing {key!r} (encode them with plw.encode)")
                line[key] = list(item[key])
            n = len(item["input_ids"])
            positions = item.get("position_ids")
            if positions is None:
                positions = range(n)
            elif len(positions) != n or (n and positions[0] != 0):
                raise ValueError(f"item {b}: position_ids must have one entry per token and start at 0")
            line["position_ids"] = list(positions)
            line["bin_index"] = [b] * n
            lines.append(line)
        if not self.one_row_per_bin:
            flat = {k: [x for line in lines for x in line[k]] for k in lines[0]}
            return {k: torch.tensor([v], dtype=_dtype(k)) for k, v in flat.items()}
        width = max(len(line["input_ids"]) for line in lines)
        fills = {"input_ids": self.pad_token_id, **{k: v[0] for k, v in OPTIONAL_KEYS.items()}}
        out = {}
        for key in lines[0]:
            rows = []
            for b, line in enumerate(lines):
                pad = width - len(line[key])
                if key == "position_ids":
                    last = line[key][-1] if line[key] else -1
                    rows.append(line[key] + list(range(last + 1, last + 1 + pad)))
                else:
                    rows.append(line[key] + [b if key == "bin_index" else fills.get(key, 0)] * pad)
            out[key] = torch.tensor(rows, dtype=_dtype(key))
        return out


def _dtype(key: str) -> torch.dtype:
    return OPTIONAL_KEYS.get(key, (0, torch.long))[1]


# ---- verifying that a model isolates packed rows ------------------------------------------------------------------


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _probe_probs(model: Any, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids[None], position_ids=positions[None], use_cache=False)
    return torch.softmax(out.logits[0].float(), dim=-1)


def _total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Largest total-variation distance between the next-token distributions of two aligned sequences."""
    return float(0.5 * (p - q).abs().sum(-1).max())


@torch.no_grad()
def packing_leak(model: Any, seed: int = 0, lengths: tuple[int, int] = (7, 9)) -> tuple[float, float]:
    """Run two random rows A and B packed, B alone, and B after A without a position restart (a leaking pack).

    Returns ``(isolated, leaked)``: the largest total-variation distance between B's next-token distributions alone
    and packed after A, and the same distance when A is deliberately visible. A model that isolates packed rows has
    ``isolated`` at the level of rounding, far below ``leaked``.
    """
    vocab = model.get_input_embeddings().num_embeddings
    device = _model_device(model)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab, (lengths[0],), generator=g).to(device)
    b = torch.randint(0, vocab, (lengths[1],), generator=g).to(device)
    ar_a = torch.arange(lengths[0], device=device)
    ar_b = torch.arange(lengths[1], device=device)
    was_training = model.training
    model.eval()
    try:
        alone = _probe_probs(model, b, ar_b)
        packed = _probe_probs(model, torch.cat([a, b]), torch.cat([ar_a, ar_b]))[lengths[0] :]
        leaking = _probe_probs(model, torch.cat([a, b]), torch.arange(sum(lengths), device=device))[lengths[0] :]
    finally:
        model.train(was_training)
    return _total_variation(packed, alone), _total_variation(leaking, alone)


def check_packing_isolation(model: Any, rel_tol: float = 0.1) -> float:
    """Raise :class:`PackingNotSupportedError` unless packed rows are invisible to each other in ``model``.

    Runs :func:`packing_leak` (three forwards of at most 16 tokens) in the model's own precision; a flash-attention
    model with float32 weights runs under bf16 autocast, as flash kernels need half precision. Passes when packing a
    row after another moves its next-token distributions by at most ``rel_tol`` times what a deliberate leak moves
    them (float32 rounding gives about 1e-5 of it, bf16 a few percent; a leak gives about 1). Returns that ratio.
    """
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", None))
    device = _model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    half = impl.startswith("flash") and dtype == torch.float32 and device.type == "cuda"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=half):
            isolated, leaked = packing_leak(model)
    except TypeError as err:  # e.g. a forward without position_ids
        raise PackingNotSupportedError(
            f"{type(model).__name__} cannot run packed rows ({err}); use packing=False"
        ) from err
    if leaked == 0.0:  # the model ignores its context entirely, so nothing can leak
        return 0.0
    ratio = isolated / leaked
    if not math.isfinite(ratio) or ratio > rel_tol:
        raise PackingNotSupportedError(
            f"{type(model).__name__} with attn_implementation={impl!r} does not isolate packed rows: packing a row "
            f"after another moved its next-token distributions by {isolated:.3g} (total variation; a deliberate leak "
            f"moves them by {leaked:.3g}). Use packing=False, or an attention implementation that builds its mask "
            "from position_ids (eager, sdpa, flex_attention, flash_attention_2/3)"
        )
    return ratio


def pack_datasets(train: Any, evals: Any, max_length: Any, seed: int = 0) -> tuple[Any, Any, dict[str, PackingStats]]:
    """Pack a train set and an eval set (or a dict of them) into :class:`PackedDataset`\\ s before a trainer is built.

    Returns ``(train, evals, stats)`` where ``stats`` maps ``train``, ``eval`` (or ``eval_NAME``) to
    :class:`PackingStats`, for the data report. ``None`` stays ``None``; a set that is already a
    :class:`PackedDataset` is kept as it is.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"packing=True needs max_length, an integer >= 2, got {max_length!r}")
    stats: dict[str, PackingStats] = {}

    def pack(name: str, rows: Any) -> Any:
        if rows is None:
            return None
        if not isinstance(rows, PackedDataset):
            rows = PackedDataset(rows, max_length, seed=seed)
        stats[name] = rows.stats
        return rows

    if isinstance(evals, dict):
        evals = {k: pack(f"eval_{k}", v) for k, v in evals.items()}
    else:
        evals = pack("eval", evals)
    return pack("train", train), evals, stats
