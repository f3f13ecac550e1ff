"""PNG plots of the binned performance (matplotlib Agg, mplhep style)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tracking_algs.performance.histograms import (
    BinnedRatio,
    efficiency_vs_eta,
    efficiency_vs_pt,
    fake_rate_vs_eta,
)
from tracking_algs.performance.matching import MatchResult


def single_panel() -> tuple[Figure, Axes]:
    """An 8 × 6 inch figure of one panel, for the mplhep ROOT style (make it inside that style's context). Its margins
    are set, not computed by a layout engine, which would draw the figure once more to measure its labels and so take
    most of the time of a plot."""
    figure = Figure(figsize=(8, 6))
    figure.subplots_adjust(left=0.15, right=0.96, bottom=0.15, top=0.95)
    return figure, figure.add_subplot()


def plot_binned_ratio(
    ratio: BinnedRatio, path: str | Path, *, xlabel: str, ylabel: str, log_x: bool = False, label: str | None = None
) -> Path:
    """Draw one binned ratio with its Clopper-Pearson error bars and write it as PNG to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.style.context(mplhep.style.ROOT):
        figure, axes = single_panel()
        centers = 0.5 * (ratio.edges[1:] + ratio.edges[:-1])
        low, high = ratio.interval()
        values = ratio.ratio
        axes.errorbar(
            centers,
            values,
            xerr=0.5 * np.diff(ratio.edges),
            yerr=np.nan_to_num(np.vstack((values - low, high - values))),
            fmt="o",
            label=label,
        )
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if log_x:
            axes.set_xscale("log")
        if label:
            axes.legend()
        figure.savefig(path, dpi=100)
    return path


def plot_performance(result: MatchResult, directory: str | Path, label: str | None = None) -> list[Path]:
    """Efficiency vs pT and eta and fake rate vs eta as ``efficiency_vs_pt.png``, ``efficiency_vs_eta.png``
    and ``fake_rate_vs_eta.png`` in ``directory``; returns the paths."""
    directory = Path(directory)
    return [
        plot_binned_ratio(efficiency_vs_pt(result), directory / "efficiency_vs_pt.png",
                          xlabel=r"$p_T$ [GeV]", ylabel="track efficiency", log_x=True, label=label),
        plot_binned_ratio(efficiency_vs_eta(result), directory / "efficiency_vs_eta.png",
                          xlabel=r"$\eta$", ylabel="track efficiency", label=label),
        plot_binned_ratio(fake_rate_vs_eta(result), directory / "fake_rate_vs_eta.png",
                          xlabel=r"$\eta$", ylabel="fake rate", label=label),
    ]  # fmt: skip
