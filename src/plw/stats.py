"""Generation-ratio statistics: how long completions are relative to prompts, per dataset.

For a record, ``Rg = completion_tokens / prompt_tokens`` (docs/reference.md, "Generation ratio"). With a tokenizer the counts are those of the
rows training would use: every record goes through :func:`plw.data.encode.encode_record`, the one encoder behind
``plw.encode`` and training (chat template with its options, stop token or EOS appended, BOS as the tokenizer adds
it), and the prompt and completion masks are summed. Without a tokenizer they are whitespace words of the raw
prompt and completion text.

A dataset is summarised by the arithmetic mean of Rg (dominated by the few rows with long completions), the
geometric mean (the typical ratio on a log scale; always <= the arithmetic mean), the median, the 5th and 95th
percentiles (numpy's linear interpolation) and the share of rows with Rg < 1. Rows with an empty prompt or an empty
completion have no meaningful ratio: they are counted (``rows_empty_prompt``, ``rows_empty_completion``) and left
out of every statistic, as are the rows the loader dropped (``rows_dropped``, with reasons).

Counting streams: records are read lazily, written by ``datasets`` to Arrow files in a temporary folder and
counted with ``Dataset.map(batched=True, num_proc=...)``, so no dataset is held in memory.

After the table, ``plw stats`` quotes what the Rg spectrum study (``plw spectrum``) found on the measured dataset of
nearest Rg on a log scale, from the packaged ``spectrum_findings.json``, and prints ``Suggested prompt_loss_weight:``
per dataset (:func:`suggest_plw`): the PLWs the study's row-level test put above PLW 1 there (on accuracy; on the
per-row completion loss where no run answers right), with what they rest on, or "no measured basis" when nothing
within a factor of 3 of that Rg was measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.chat import ChatOptions
from .data.encode import encode_record
from .data.files import FILE_FORMATS
from .data.sources import open_records
from .runio import atomic_write_json, atomic_write_text

STATS_KEYS = (
    "dataset",
    "rows",
    "prompt_tokens_mean",
    "completion_tokens_mean",
    "rg_mean",
    "rg_geomean",
    "rg_median",
    "rg_p5",
    "rg_p95",
    "rg_lt1_share",
)
EXTRA_KEYS = (
    "prompt_tokens_median",
    "completion_tokens_median",
    "rows_read",
    "rows_dropped",
    "rows_empty_prompt",
    "rows_empty_completion",
    "rows_eos_appended",
    "unit",
    "format",
    "source",
)
GENERIC_STEMS = {"train", "validation", "valid", "dev", "test", "data", "raw", "all"}
_TEXT_COLUMNS = ("prompt", "completion", "system", "messages")


def summarize(prompt_counts: Sequence[float], completion_counts: Sequence[float]) -> dict[str, float]:
    """The statistics of one dataset from per-row counts (rows with a zero count are the caller's to exclude).

    >>> summarize([10, 100], [10, 1])["rg_mean"], summarize([10, 100], [10, 1])["rg_geomean"]
    (0.505, 0.1)
    """
    p = np.asarray(prompt_counts, dtype=np.float64)
    c = np.asarray(completion_counts, dtype=np.float64)
    if p.shape != c.shape:
        raise ValueError("prompt and completion counts differ in length")
    if len(p) == 0:
        nan = float("nan")
        keys = ["prompt_tokens_mean", "prompt_tokens_median", "completion_tokens_mean", "completion_tokens_median"]
        keys += ["rg_mean", "rg_geomean", "rg_median", "rg_p5", "rg_p95", "rg_lt1_share"]
        return {"rows": 0, **dict.fromkeys(keys, nan)}
    if (p <= 0).any() or (c <= 0).any():
        raise ValueError("counts must be positive; leave rows with an empty prompt or completion out")
    rg = c / p
    p5, p95 = np.percentile(rg, [5, 95])
    return {
        "rows": int(len(rg)),
        "prompt_tokens_mean": float(p.mean()),
        "prompt_tokens_median": float(np.median(p)),
        "completion_tokens_mean": float(c.mean()),
        "completion_tokens_median": float(np.median(c)),
        "rg_mean": float(rg.mean()),
        "rg_geomean": float(np.exp(np.log(rg).mean())),
        "rg_median": float(np.median(rg)),
        "rg_p5": float(p5),
        "rg_p95": float(p95),
        "rg_lt1_share": float((rg < 1).mean()),
    }


def _words(text: str) -> int:
    return len(text.split())


def _raw_texts(row: dict[str, Any]) -> tuple[str, str, list | None]:
    """(raw prompt, raw completion, messages or None) of a normalised row."""
    if row["messages"]:
        messages = json.loads(row["messages"])
        last = max(i for i, t in enumerate(messages) if t["role"] == "assistant")
        return " ".join(t["content"] for t in messages[:last]), messages[last]["content"], messages
    return row["prompt"], row["completion"], None


def count_batch(
    batch: dict[str, list], tokenizer: Any = None, template: str = "auto", options: ChatOptions | None = None
) -> dict[str, list]:
    """``Dataset.map(batched=True)`` function: prompt/completion counts of a batch of normalised rows (a
    conversation under ``multi_turn: expand`` gives one count per assistant turn)."""
    n = len(batch["prompt"])
    rows = [{k: batch[k][i] for k in _TEXT_COLUMNS} for i in range(n)]
    raw = [_raw_texts(r) for r in rows]
    if tokenizer is None:
        return {
            "n_prompt": [_words(p) for p, _, _ in raw],
            "n_completion": [_words(c) for _, c, _ in raw],
            "empty_prompt": [not p.strip() for p, _, _ in raw],
            "empty": [not p.strip() or not c.strip() for p, c, _ in raw],
            "eos_appended": [False] * n,
        }
    out: dict[str, list] = {"n_prompt": [], "n_completion": [], "empty_prompt": [], "empty": [], "eos_appended": []}
    for row, (p, c, messages) in zip(rows, raw, strict=True):
        if not p.strip() or not c.strip():  # no meaningful ratio: counted as empty, not encoded
            for key, value in zip(out, (0, 0, not p.strip(), True, False), strict=True):
                out[key].append(value)
            continue
        if messages is not None:
            record: dict[str, Any] = {"messages": messages}
        else:
            record = {"prompt": row["prompt"], "completion": row["completion"], "system": row["system"]}
        for encoded, flags in encode_record(tokenizer, record, template=template, options=options):
            if encoded is None:
                continue
            n_c = sum(encoded["completion_mask"])
            n_p = len(encoded["input_ids"]) - n_c
            out["n_prompt"].append(n_p)
            out["n_completion"].append(n_c)
            out["empty_prompt"].append(False)
            out["empty"].append(n_p == 0 or n_c == 0)
            out["eos_appended"].append(bool(flags.get("eos_appended")))
    return out


def _normalised(pairs: Iterator[tuple[str, dict]]) -> Iterator[dict[str, str | None]]:
    for _, record in pairs:
        if "messages" in record:
            yield {"prompt": "", "completion": "", "system": None, "messages": json.dumps(record["messages"])}
        else:
            system = record.get("system")
            yield {"prompt": record["prompt"], "completion": record["completion"], "system": system, "messages": ""}


def dataset_counts(
    spec: Any,
    tokenizer: Any = None,
    template: str = "auto",
    num_proc: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
    options: ChatOptions | None = None,
) -> dict[str, Any]:
    """Per-row counts of one dataset: ``{"n_prompt", "n_completion"}`` (numpy, empty rows removed) plus the
    ``report`` of the loader, ``rows_empty_prompt``, ``rows_empty_completion``, ``format`` and ``description``."""
    import datasets

    stream = open_records(spec)
    features = datasets.Features({k: datasets.Value("string") for k in _TEXT_COLUMNS})
    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if progress else datasets.disable_progress_bars)()
    try:
        with tempfile.TemporaryDirectory(prefix="plw-stats-") as tmp:
            try:
                ds = datasets.Dataset.from_generator(
                    _normalised,
                    features=features,
                    cache_dir=tmp,
                    gen_kwargs={"pairs": stream.pairs},
                    fingerprint=uuid.uuid4().hex,
                )
            except datasets.exceptions.DatasetGenerationError as err:  # our own error inside the generator
                if isinstance(err.__cause__, (ValueError, OSError)):
                    raise err.__cause__ from None
                raise
            total = len(ds)
            counted = ds.map(
                count_batch,
                batched=True,
                batch_size=batch_size,
                num_proc=num_proc if num_proc and num_proc > 1 and total >= 2 * batch_size else None,
                remove_columns=list(_TEXT_COLUMNS),
                fn_kwargs={"tokenizer": tokenizer, "template": template, "options": options},
                new_fingerprint=uuid.uuid4().hex,
                desc=f"counting {stream.description}",
            ).with_format("numpy")
            cols = counted[:] if total else {k: np.zeros(0, dtype=np.int64) for k in ("n_prompt", "n_completion")}
            empty = np.asarray(cols.get("empty", np.zeros(0)), dtype=bool)
            empty_prompt = np.asarray(cols.get("empty_prompt", np.zeros(0)), dtype=bool)
            result = {
                "n_prompt": np.asarray(cols["n_prompt"])[~empty],
                "n_completion": np.asarray(cols["n_completion"])[~empty],
                "rows_empty_prompt": int(empty_prompt.sum()),
                "rows_empty_completion": int((empty & ~empty_prompt).sum()),
                "rows_eos_appended": int(np.asarray(cols.get("eos_appended", np.zeros(0)), dtype=bool).sum()),
            }
            del ds, counted
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()
    # The loaders drop rows with an empty completion (nothing to learn); report them as empty here.
    result["rows_empty_completion"] += stream.report.dropped.pop("empty completion", 0)
    stream.report.examples.pop("empty completion", None)
    result.update(report=stream.report, format=stream.format, description=stream.description)
    return result


def dataset_spec(arg: str, format: str | None = None, split: str | None = None, **mapping: Any) -> dict[str, Any]:
    """A ``plw stats`` DATASET argument -> a data spec: an existing file or folder, the built-in task
    ``synthetic[:KEY=VALUE,...]`` (e.g. ``synthetic:rows=400,answer=text,style=explanation``), else a hub name
    ``NAME[:CONFIG]`` (split from ``split``, default ``train``)."""
    from .data.sources import is_race_folder

    if arg == "synthetic" or arg.startswith("synthetic:"):
        return synthetic_spec(arg)

    mapping = {k: v for k, v in mapping.items() if v is not None}
    if format:
        mapping["format"] = format
    path = Path(arg)
    if path.exists():
        spec: dict[str, Any] = {"source": "file", "path": str(path), **mapping}
        if path.is_dir() and is_race_folder(path):
            spec = {"source": "race", "path": str(path), "split": split}
        return spec
    if path.suffix.lower() in FILE_FORMATS or arg.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"{arg}: no such file or folder")
    name, _, config = arg.partition(":")
    return {"source": "hf", "name": name, "config": config or None, "split": split or "train", **mapping}


def synthetic_spec(arg: str) -> dict[str, Any]:
    """``synthetic:rows=400,answer=text`` -> ``{source: synthetic, rows: 400, answer: text}`` (values as YAML)."""
    import yaml

    spec: dict[str, Any] = {"source": "synthetic"}
    for item in filter(None, arg.partition(":")[2].split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{arg}: expected synthetic:KEY=VALUE,..., got {item!r}")
        spec[key.strip()] = yaml.safe_load(value)
    return spec


def dataset_label(arg: str, split: str | None = None) -> str:
    """A short name for tables and figures: the file stem, with its folder when the stem alone says little."""
    path = Path(arg)
    if not path.exists():
        return arg + (f"[{split}]" if split else "")
    stem = path.stem if path.is_file() else path.name
    if stem.lower() in GENERIC_STEMS and path.resolve().parent.name:
        stem = f"{path.resolve().parent.name}/{stem}"
    return stem + (f"[{split}]" if split and path.is_dir() else "")


def compute_stats(
    datasets_args: Sequence[str],
    tokenizer: Any = None,
    template: str = "auto",
    format: str | None = None,
    split: str | None = None,
    num_proc: int | None = None,
    strict: bool = False,
    progress: bool = True,
    options: ChatOptions | None = None,
    **mapping: Any,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """One statistics row per dataset (keys :data:`STATS_KEYS` + :data:`EXTRA_KEYS`) and each dataset's Rg values."""
    rows, rgs, seen = [], {}, set()
    for arg in datasets_args:
        label = dataset_label(arg, split)
        base, k = label, 2
        while label in seen:
            label, k = f"{base}#{k}", k + 1
        seen.add(label)
        spec = dataset_spec(arg, format, split, **mapping)
        spec["strict"] = strict
        counts = dataset_counts(spec, tokenizer, template, num_proc, progress=progress, options=options)
        stats = summarize(counts["n_prompt"], counts["n_completion"])
        report = counts["report"]
        row = {
            "dataset": label,
            **stats,
            "rows_read": report.read,
            "rows_dropped": report.n_dropped,
            "rows_empty_prompt": counts["rows_empty_prompt"],
            "rows_empty_completion": counts["rows_empty_completion"],
            "rows_eos_appended": counts["rows_eos_appended"],
            "unit": "tokens" if tokenizer is not None else "words",
            "format": counts["format"],
            "source": counts["description"],
            "dropped": dict(report.dropped),
            "dropped_examples": {k: list(v) for k, v in report.examples.items()},
        }
        rows.append({k: row[k] for k in STATS_KEYS + EXTRA_KEYS} | {k: row[k] for k in row if k not in STATS_KEYS})
        rgs[label] = counts["n_completion"] / counts["n_prompt"] if len(counts["n_prompt"]) else np.zeros(0)
    return rows, rgs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


TABLE_COLUMNS = (
    ("dataset", "dataset"),
    ("rows", "rows"),
    ("prompt_tokens_mean", "prompt mean"),
    ("prompt_tokens_median", "prompt med"),
    ("completion_tokens_mean", "compl mean"),
    ("completion_tokens_median", "compl med"),
    ("rg_mean", "Rg mean"),
    ("rg_geomean", "Rg geomean"),
    ("rg_median", "Rg median"),
    ("rg_p5", "Rg p5"),
    ("rg_p95", "Rg p95"),
    ("rg_lt1_share", "Rg<1"),
)


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The statistics as an aligned text table (or a Markdown table)."""
    header = [title for _, title in TABLE_COLUMNS]
    body = [[_fmt(r[key]) for key, _ in TABLE_COLUMNS] for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header)] + [line(r) for r in body])


def write_stats(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``stats.json`` (a list of objects) and ``stats.csv`` (the scalar columns) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # NaN (a dataset with no usable row) is not JSON: write null.
    clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
    atomic_write_json(out / "stats.json", clean)
    columns = [k for k in rows[0] if not isinstance(rows[0][k], dict)] if rows else list(STATS_KEYS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(clean)
    atomic_write_text(out / "stats.csv", buffer.getvalue())
    return out / "stats.json", out / "stats.csv"


def report_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per dataset that lost rows: dropped (by reason, with the first ids) and empty rows."""
    lines = []
    for r in rows:
        parts = [
            f"{n} {reason} (e.g. {', '.join(r['dropped_examples'].get(reason, []))})"
            for reason, n in r["dropped"].items()
        ]
        if r["rows_empty_prompt"]:
            parts.append(f"{r['rows_empty_prompt']} empty prompt")
        if r["rows_empty_completion"]:
            parts.append(f"{r['rows_empty_completion']} empty completion")
        if r.get("rows_eos_appended"):
            lines.append(
                f"{r['dataset']}: EOS appended to {r['rows_eos_appended']} rows (the template ends them with no stop token)"
            )
        if parts:
            lines.append(f"{r['dataset']}: {r['rows_read']} read, {r['rows']} counted; left out: {'; '.join(parts)}")
    return lines


def run_stats(
    datasets_args: Sequence[str],
    tokenizer_name: str | None = None,
    template: str | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    chat_template: str | None = None,
    add_eos: str = "auto",
    multi_turn: str = "last",
    spectrum_findings: str | Path | None = None,
    stop_tokens: list[str | int] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """``plw stats``: compute, print the table, the rows left out and what the Rg spectrum study measured nearest to
    each dataset's Rg (:func:`spectrum_guidance`; ``spectrum_findings`` defaults to the packaged findings), and with
    ``out_dir`` write ``stats.json``, ``stats.csv`` and ``rg_hist.png``. ``chat_template``, ``add_eos``,
    ``multi_turn`` and ``stop_tokens`` (overriding the model's generation config) render records as training does;
    ``options`` go to :func:`compute_stats`."""
    from .data.chat import chat_options

    options["options"] = chat_options(chat_template, None, add_eos, multi_turn, stop_tokens)
    tokenizer = None
    if tokenizer_name:
        from .data.stops import stop_ids
        from .models import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_name)
        stop_ids(tokenizer, options["options"].stop_tokens)  # a stop token the tokenizer lacks fails here
    elif template:
        raise ValueError("--template needs --tokenizer (without one, Rg counts whitespace words)")
    rows, rgs = compute_stats(datasets_args, tokenizer, template or "auto", progress=progress, **options)
    unit = "tokens" if tokenizer is not None else "whitespace words"
    print(
        f"Rg = completion / prompt, in {unit}"
        + (f" ({tokenizer_name}, template {template or 'auto'})" if tokenizer else "")
    )
    print(format_table(rows))
    for line in report_lines(rows):
        print(line)
    findings = read_spectrum_findings(spectrum_findings)
    for line in spectrum_guidance(rows, findings, unit):
        print(line)
    for row in rows:  # one line per dataset, named when there are several
        if isinstance(row.get("rg_mean"), (int, float)) and row["rg_mean"] > 0:
            line = suggest_plw(row["rg_mean"], findings)
            print(line if len(rows) == 1 else f"{row['dataset']}: {line}")
    if out_dir is not None:
        from .plots import plot_rg_histograms

        json_path, csv_path = write_stats(rows, out_dir)
        png = plot_rg_histograms(rgs, Path(out_dir) / "rg_hist.png", unit=unit)
        print(f"wrote {json_path}, {csv_path}, {png}")
    return rows


# ---- what the Rg spectrum study measured nearest to a dataset's Rg ----------------------------------------------

# The packaged copy of the study's findings.json (written by `plw spectrum ... --findings`; plw.spectrum documents it).
SPECTRUM_FINDINGS = Path(__file__).with_name("spectrum_findings.json")


def read_spectrum_findings(path: str | Path | None = None) -> dict[str, Any]:
    """The Rg spectrum study's findings (default: :data:`SPECTRUM_FINDINGS`); ``{}`` when the file is absent or
    blank — the study may not have run yet. A file that is not JSON is an error naming it."""
    path = Path(path) if path is not None else SPECTRUM_FINDINGS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a findings file ({err})") from None


def nearest_finding(rg: float, findings: dict[str, Any]) -> dict[str, Any] | None:
    """The measured dataset (with a positive Rg and a finding) whose Rg is nearest to ``rg`` on a log scale,
    ``|log Rg - log Rg'|``: Rg spans orders of magnitude and ratios say how alike two datasets are (0.3 is nearer
    1 than 0.01). None when ``rg`` is not positive or nothing was measured.

    >>> nearest_finding(0.3, {"datasets": [{"name": "a", "rg": 0.01, "finding": "x"}, {"name": "b", "rg": 1.0,
    ...                                                                                  "finding": "y"}]})["name"]
    'b'
    """
    if not (isinstance(rg, (int, float)) and math.isfinite(rg) and rg > 0):
        return None
    measured = [
        d
        for d in findings.get("datasets") or []
        if isinstance(d.get("rg"), (int, float)) and math.isfinite(d["rg"]) and d["rg"] > 0 and d.get("finding")
    ]
    return min(measured, key=lambda d: abs(math.log(rg) - math.log(d["rg"])), default=None)


def spectrum_guidance(rows: Sequence[dict[str, Any]], findings: dict[str, Any], unit: str = "tokens") -> list[str]:
    """Per dataset row, the spectrum study's finding on the dataset of nearest Rg, in the findings' own words, and
    what it was measured with; nothing when there are no findings."""
    report = findings.get("report") or "its report.md"
    lines = []
    for row in rows:
        nearest = nearest_finding(row["rg_mean"], findings)
        if nearest is None:
            continue
        lines.append(
            f"Nearest measured Rg to {row['dataset']} (Rg mean {row['rg_mean']:.3g}): {nearest['name']} "
            f"(Rg {nearest['rg']:.2g}) in the spectrum study ({report}):"
        )
        lines.append(f"  {nearest['finding']}.")
        if nearest.get("scope"):
            lines.append(f"  Measured with {nearest['scope']}: a small study; read its intervals before acting on it.")
    if lines and unit != "tokens":
        lines.insert(
            0, f"(The spectrum study counts tokens as trained, chat template included; these counts are {unit}.)"
        )
    return lines


# ---- the suggested prompt-loss-weight, worded by the study's row-level tests -------------------------------------

NEAR_FACTOR = 3.0  # a measured dataset speaks for data whose Rg is within this factor of its own (log scale)


def _plw_text(value: float) -> str:
    return f"{float(value):g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _accuracy_text(paired: dict[str, Any], plw: float, against: float) -> str:
    """``PLW 0.1 47.0% [36.0%, 58.0%] vs PLW 1 24.0% [13.0%, 36.0%] on 50 rows x 2 seeds, row-level p = 0.0013``."""
    lo, hi = paired["interval"]
    rlo, rhi = paired["reference_interval"]
    seeds = f"{paired['seeds']} seeds" if paired["seeds"] > 1 else "one seed"
    per_seed = paired.get("right_per_seed") or []
    per_seed_text = (
        f" (right per seed: {', '.join(f'{a:g} vs {b:g}' for a, b in per_seed)})" if len(per_seed) > 1 else ""
    )
    return (
        f"PLW {_plw_text(plw)} {_pct(paired['mean'])} [{_pct(lo)}, {_pct(hi)}] vs PLW {_plw_text(against)} "
        f"{_pct(paired['reference_mean'])} [{_pct(rlo)}, {_pct(rhi)}] on {paired['rows']} rows x {seeds}"
        f"{per_seed_text}, row-level p = {paired['p_value']:.2g}"
    )


def _loss_text(loss: dict[str, Any], plw: float, against: float) -> str:
    """``PLW 0 0.9726 [0.93, 1.01] vs PLW 1 1.0386 [..] mean completion loss on 40 rows x 3 seeds, row-level p =
    0.0001``; a Monte Carlo p at its floor reads ``p <= 1e-05`` (below what the draws resolve)."""
    from .uncertainty import p_text

    lo, hi = loss["interval"]
    rlo, rhi = loss["reference_interval"]
    seeds = f"{loss['seeds']} seeds" if loss["seeds"] > 1 else "one seed"
    return (
        f"PLW {_plw_text(plw)} {loss['mean']:.4g} [{lo:.4g}, {hi:.4g}] vs PLW {_plw_text(against)} "
        f"{loss['reference_mean']:.4g} [{rlo:.4g}, {rhi:.4g}] mean completion loss on {loss['rows']} rows x {seeds}, "
        f"row-level {p_text(loss['p_value'])}"
    )


def _significant(paired: dict[str, Any] | None) -> bool:
    from .verdicts import ALPHA

    return bool(paired) and paired.get("informative", False) and paired["p_value"] < ALPHA


def _loss_significant(loss: dict[str, Any] | None) -> bool:
    from .verdicts import ALPHA

    return bool(loss) and loss.get("rows", 0) > 0 and loss["p_value"] < ALPHA


# How each measure picks the values it puts above PLW 1: the comparison's field, "is this pair told apart", "is A
# better", the score to maximise, and the words for one comparison.
_MEASURES = {
    "accuracy": (
        "paired",
        _significant,
        lambda m: m["difference"] > 0,
        lambda m: m["mean"],
        _accuracy_text,
    ),
    "completion loss": (
        "paired_loss",
        _loss_significant,
        lambda m: m["difference"] < 0,
        lambda m: -m["mean"],
        _loss_text,
    ),
}


def _suggestion(nearest: dict[str, Any], measure: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The values ``measure``'s row-level test put above PLW 1, the best and those the pairwise test cannot tell
    from it (the best first), with the words for each tie; empty when none is above PLW 1."""
    key, told_apart, better_than, score, text = _MEASURES[measure]
    better = [c for c in nearest.get("comparisons") or [] if c.get(key) and told_apart(c[key]) and better_than(c[key])]
    if not better:
        return [], []
    best = max(better, key=lambda c: score(c[key]))
    pairwise = {(c["plw"], c["against"]): c for c in nearest.get("pairwise") or []}
    tied, ties_text = [best], []
    for c in better:
        if c is best:
            continue
        pair = pairwise.get((c["plw"], best["plw"])) or pairwise.get((best["plw"], c["plw"]))
        if pair and pair.get(key) and not told_apart(pair[key]):
            tied.append(c)
            ties_text.append(text(pair[key], pair["plw"], pair["against"]))
    return tied, ties_text


def suggest_plw(rg: float, findings: dict[str, Any]) -> str:
    """One line, ``Suggested prompt_loss_weight: ...``, for data of mean Rg ``rg``, from the measured dataset of
    nearest Rg (:func:`nearest_finding`) when it lies within :data:`NEAR_FACTOR`; "no measured basis" otherwise.

    A value is suggested only where the study's row-level test put it above PLW 1 (p < ALPHA): on accuracy when
    the accuracy is informative; on the per-row completion loss (lower) when it is not (long completions, where
    no run answers right) and the runs recorded per-row losses. When several values are above PLW 1, those the
    pairwise test could not tell apart from the best are all named, as measured values (not a claim about the
    values between them). Every number is the study's, with its interval.
    """
    from .verdicts import ALPHA

    head = "Suggested prompt_loss_weight:"
    nearest = nearest_finding(rg, findings)
    if nearest is None:
        return f"{head} no measured basis (no study findings to compare with)"
    where = f"{nearest['name']} (Rg {nearest['rg']:.2g}) in {findings.get('report') or 'the spectrum study'}"
    if abs(math.log(rg) - math.log(nearest["rg"])) > math.log(NEAR_FACTOR):
        return (
            f"{head} no measured basis: nothing was measured within a factor {NEAR_FACTOR:g} of Rg {rg:.3g} "
            f"(nearest: {where})"
        )
    comparisons = nearest.get("comparisons") or []
    informative = any((c.get("paired") or {}).get("informative") for c in comparisons)
    has_losses = any((c.get("paired_loss") or {}).get("rows") for c in comparisons)
    measure = "accuracy" if informative or not has_losses else "completion loss"
    tied, ties_text = _suggestion(nearest, measure)
    if not tied:
        if not comparisons:
            reason = "it has no row-level comparison with PLW 1"
        elif measure == "completion loss":
            reason = (
                "its accuracy was not informative (one value in every run), and no PLW below 1 had lower completion "
                f"loss than PLW 1 by the row-level test (p >= {ALPHA:g})"
            )
        elif not informative:
            reason = "its accuracy was not informative (one value in every run), and it has no per-row losses"
        else:
            reason = f"no PLW below 1 was more accurate than PLW 1 by the row-level test (p >= {ALPHA:g})"
        return f"{head} no measured basis at this Rg: on {where}, {reason}"
    key, text = _MEASURES[measure][0], _MEASURES[measure][4]
    values = " or ".join(_plw_text(c["plw"]) for c in sorted(tied, key=lambda c: -c["plw"]))
    if len(tied) > 1:
        values += f" (measured values the data cannot choose between: {'; '.join(ties_text)})"
    basis = "" if measure == "accuracy" else ", on completion loss (its accuracy was not informative)"
    evidence = "; ".join(text(c[key], c["plw"], c["against"]) for c in tied)
    return f"{head} {values}{basis}. It rests on {where}: {evidence}; measured with {nearest.get('scope') or '?'}"
