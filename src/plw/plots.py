"""Figures. Drawn on ``matplotlib.figure.Figure`` objects (no pyplot global state), saved as PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plot_rg_histograms(
    rg_by_dataset: Mapping[str, np.ndarray], path: str | Path, unit: str = "tokens", bins: int = 40
) -> Path:
    """One column per dataset: a histogram of its Rg values on a linear axis (top row) and a log axis (bottom).

    The linear axis stops at the 99th percentile (the few larger values are counted in the last bar, so heavy
    tails do not squash the rest); the log axis shows the full range on log-spaced bins. Dashed line: arithmetic
    mean; dotted: geometric mean; grey: Rg = 1.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(rg_by_dataset)
    if not names:
        raise ValueError("no datasets to plot")
    fig = Figure(figsize=(max(3.2 * len(names), 4.0), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(names), squeeze=False)
    for col, name in enumerate(names):
        rg = np.asarray(rg_by_dataset[name], dtype=np.float64)
        rg = rg[np.isfinite(rg) & (rg > 0)]
        top, bottom = axes[0, col], axes[1, col]
        top.set_title(f"{name}\n(n={len(rg):,})", fontsize=9)
        if len(rg) == 0:
            for ax in (top, bottom):
                ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
            continue
        mean, geomean = rg.mean(), float(np.exp(np.log(rg).mean()))
        hi = float(np.percentile(rg, 99)) or float(rg.max())
        top.hist(np.clip(rg, 0, hi), bins=bins, range=(0, hi), color="tab:blue", alpha=0.85)
        lo_log, hi_log = np.log10(rg.min()), np.log10(rg.max())
        if hi_log - lo_log < 1e-9:
            lo_log, hi_log = lo_log - 0.5, hi_log + 0.5
        bottom.hist(rg, bins=np.logspace(lo_log, hi_log, bins + 1), color="tab:orange", alpha=0.85)
        bottom.set_xscale("log")
        # Ticks at 1, 2, 5 x 10^k written as plain numbers: readable on narrow ranges, thinned on wide ones.
        bottom.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
        bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.xaxis.set_minor_formatter(NullFormatter())
        for ax, limit in ((top, hi), (bottom, rg.max())):
            ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3g}")
            ax.axvline(geomean, color="black", linestyle=":", linewidth=1, label=f"geomean {geomean:.3g}")
            if 1 <= limit:
                ax.axvline(1.0, color="grey", linewidth=1)
            ax.tick_params(labelsize=7)
        top.legend(fontsize=7, frameon=False)
        top.set_xlabel(f"Rg (linear, clipped at p99 = {hi:.3g})", fontsize=8)
        bottom.set_xlabel("Rg (log)", fontsize=8)
    axes[0, 0].set_ylabel("rows", fontsize=8)
    axes[1, 0].set_ylabel("rows", fontsize=8)
    fig.suptitle(f"Generation ratio Rg = completion / prompt ({unit})", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ---- training curves and PLW sweeps --------------------------------------------------------------------------------

LOSS_STYLES = (
    ("eval_prompt_loss", "prompt loss", "tab:blue"),
    ("eval_completion_loss", "completion loss", "tab:red"),
    ("eval_full_loss", "full loss", "tab:purple"),
)
ACCURACY_COLOUR = "tab:green"


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    import io

    from .runio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_run(run, path: str | Path) -> Path:
    """The per-run figure: prompt, completion and full validation loss against epochs (left axis), accuracy on a
    second axis in its own colour, and dashed lines at the minima of completion loss and of full loss, each
    annotated with the accuracy there (what stopping at that minimum would have given)."""
    from .analysis import accuracy_key, argbest, series

    fig = _figure((8.0, 4.6))
    ax = fig.subplots()
    for key, label, colour in LOSS_STYLES:
        xs, ys = series(run.lines, key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (mean NLL per token)")
    acc = accuracy_key(run.lines)
    handles, labels = ax.get_legend_handles_labels()
    if acc:
        ax2 = ax.twinx()
        xs, ys = series(run.lines, acc)
        ax2.plot(xs, ys, marker="s", markersize=3, color=ACCURACY_COLOUR, label=acc.removeprefix("eval_"))
        ax2.set_ylabel(acc.removeprefix("eval_"), color=ACCURACY_COLOUR)
        ax2.tick_params(axis="y", colors=ACCURACY_COLOUR)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    for key, colour, name in (
        ("eval_completion_loss", "tab:red", "min completion loss"),
        ("eval_full_loss", "tab:purple", "min full loss"),
    ):
        line = argbest(run.lines, key)
        if line is None:
            continue
        ax.axvline(line["epoch"], color=colour, linestyle="--", linewidth=1)
        text = f"{name}\n@ epoch {line['epoch']:.2f}"
        if acc and isinstance(line.get(acc), (int, float)):
            text += f"\n{acc.removeprefix('eval_')} {line[acc]:.3f}"
        y = 0.97 if key == "eval_completion_loss" else 0.6
        # Text on the side of the line with more room, so it never runs into the accuracy axis.
        lo, hi = ax.get_xlim()
        right_half = line["epoch"] > (lo + hi) / 2
        ax.annotate(
            text,
            xy=(line["epoch"], y),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color=colour,
            ha="right" if right_half else "left",
            va="top",
            xytext=(-3 if right_half else 3, 0),
            textcoords="offset points",
        )
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=len(labels), frameon=False)
    ax.set_title(f"{run.path.name}: validation losses and accuracy ({run.label})", fontsize=10)
    return _save(fig, path)


SCHEDULE_COLOURS = ("tab:red", "tab:orange", "tab:pink", "tab:brown", "tab:gray")


def _colours(runs: list) -> list:
    """One colour per run: constant PLWs on a fixed scale (PLW 1 dark, PLW 0 light, viridis), schedules in warm
    colours outside that scale (drawn dashed)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    numeric = sorted({float(r.plw) for r in runs if isinstance(r.plw, (int, float))}, reverse=True)
    out = []
    schedules = 0
    for r in runs:
        if isinstance(r.plw, (int, float)):
            i = numeric.index(float(r.plw))
            out.append(cmap(0.9 * i / max(len(numeric) - 1, 1)))
        else:
            out.append(SCHEDULE_COLOURS[schedules % len(SCHEDULE_COLOURS)])
            schedules += 1
    return out


def _style(run: Any) -> str:
    return "-" if isinstance(run.plw, (int, float)) else "--"


def _group_colours(groups: list) -> list:
    """One colour per PLW group, on the scale of :func:`_colours` (a group is drawn like its first run)."""
    return _colours([g[2][0] for g in groups])


def _band(group: list, acc: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Epochs, mean accuracy over seeds, and its 95% band with the evaluation row as the unit
    (:func:`plw.uncertainty.accuracy_interval`: Wilson with one seed, a row bootstrap with several); no band (a
    point) where several seeds lack per-row outcomes."""
    from .analysis import rows_scored
    from .uncertainty import accuracy_interval, row_means, wilson_interval

    by_step: dict[int, list[tuple]] = {}
    for run in group:
        for line in run.lines:
            if isinstance(line.get(acc), (int, float)):
                by_step.setdefault(int(line["step"]), []).append((run, line))
    xs, mean, lo, hi = [], [], [], []
    for step, pairs in sorted(by_step.items()):
        if len(pairs) != len(group):
            continue
        lines = [ln for _, ln in pairs]
        xs.append(sum(float(ln.get("epoch") or 0.0) for ln in lines) / len(lines))
        mean.append(sum(ln[acc] for ln in lines) / len(lines))
        outcomes = [run.outcomes(step, acc) for run, _ in pairs]
        count = rows_scored(lines[0], acc)
        if all(o is not None for o in outcomes) and row_means(outcomes):
            interval = accuracy_interval(row_means(outcomes), len(group))
        elif len(group) == 1 and count:
            interval = wilson_interval(round(lines[0][acc] * count), count)
        else:
            interval = (mean[-1], mean[-1])
        lo.append(interval[0])
        hi.append(interval[1])
    return xs, mean, lo, hi


def plot_sweep_curves(runs: list, path: str | Path) -> Path:
    """Per sweep: completion loss (left) and accuracy (right) against epochs, one line per PLW (the mean over
    seeds, each seed thin), accuracy with its 95% band over validation rows (Wilson with one seed, row bootstrap with several)."""
    from .analysis import accuracy_key, group_by_plw, series

    fig = _figure((11.0, 4.4))
    left, right = fig.subplots(1, 2)
    acc = accuracy_key([line for r in runs for line in r.lines])
    groups = group_by_plw(runs)
    for (label, _, group), colour in zip(groups, _group_colours(groups), strict=True):
        style = _style(group[0])
        for run in group:
            xs, ys = series(run.lines, "eval_completion_loss")
            left.plot(
                xs,
                ys,
                style,
                marker="o",
                markersize=2,
                linewidth=0.8,
                color=colour,
                alpha=0.8,
                label=label if run is group[0] else None,
            )
        if acc:
            xs, mean, lo, hi = _band(group, acc)
            right.plot(xs, mean, style, marker="s", markersize=3, color=colour, label=label)
            right.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)
    left.set_title("validation completion loss (one line per run)", fontsize=10)
    left.set_xlabel("epoch")
    left.set_ylabel("mean NLL per completion token")
    name = acc.removeprefix("eval_") if acc else "accuracy"
    right.set_title(f"validation {name}: mean over seeds, 95% band over rows", fontsize=10)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    left.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_sweep_best(runs: list, path: str | Path) -> Path:
    """Per sweep: accuracy at each checkpoint rule against PLW, with 95% intervals over evaluation rows (Wilson with
    one seed, a row bootstrap with several: :func:`plw.analysis.rule_accuracy`).

    The x-axis is symmetric-log with a linear region below 0.01, so 0, 0.01, 0.1 and 1 are all visible. Schedules
    have no place on that axis: each is a dashed horizontal line at its final accuracy, labelled in the legend.
    """
    from .analysis import OPTIMISTIC, RULES, accuracy_key, group_by_plw, rule_accuracy

    acc = accuracy_key([line for r in runs for line in r.lines])
    fig = _figure((6.8, 4.4))
    ax = fig.subplots()
    if acc is None:
        ax.text(0.5, 0.5, "no accuracy recorded", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    groups = group_by_plw(runs)
    numeric = [(float(plw), g) for _, plw, g in groups if isinstance(plw, (int, float))]
    numeric.sort(key=lambda t: t[0])
    markers = {"completion-loss minimum": "o", "full-loss minimum": "D", "final": "s", OPTIMISTIC: "^"}
    offsets = {rule: i for i, rule in enumerate((*RULES, OPTIMISTIC))}
    for rule in (*RULES, OPTIMISTIC):
        pts = [(x, rule_accuracy(g, acc, rule)) for x, g in numeric]
        pts = [(x, a) for x, a in pts if a is not None]
        if not pts:
            continue
        # A small horizontal shift per rule (in symlog space) keeps the error bars apart.
        shift = 1 + 0.04 * (offsets[rule] - 1.5)
        xs = [x * shift if x > 0 else 0.0005 * (offsets[rule] - 1.5) for x, _ in pts]
        ys = [a["mean"] for _, a in pts]
        err = [
            [a["mean"] - (a["lo"] if a["lo"] is not None else a["mean"]) for _, a in pts],
            [(a["hi"] if a["hi"] is not None else a["mean"]) - a["mean"] for _, a in pts],
        ]
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            marker=markers[rule],
            capsize=3,
            linestyle="-" if rule != OPTIMISTIC else ":",
            label=f"at {rule}",
            alpha=0.9 if rule != OPTIMISTIC else 0.5,
        )
    for (label, plw, group), colour in zip(groups, SCHEDULE_COLOURS * len(groups), strict=False):
        if not isinstance(plw, (int, float)):
            a = rule_accuracy(group, acc, "final")
            if a:
                ax.axhline(a["mean"], linestyle="--", color=colour, label=f"{label}: final {100 * a['mean']:.1f}%")
    ticks = sorted({x for x, _ in numeric})
    ax.set_xscale("symlog", linthresh=0.01)
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{x:g}" for x in ticks])
    ax.set_ylim(0, 1)
    ax.set_xlabel("prompt-loss-weight")
    ax.set_ylabel(f"validation {acc.removeprefix('eval_')}")
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.set_title("accuracy by checkpoint rule (mean over seeds, 95% interval over rows)", fontsize=10)
    return _save(fig, path)
