"""Figures. Drawn on ``matplotlib.figure.Figure`` objects (no pyplot global state), saved as PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
