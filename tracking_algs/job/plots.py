"""The job's fit-quality and timing plots (PNG, matplotlib Agg with the mplhep style)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

from tracking_algs.performance.plots import single_panel

_PULL_LABELS = ("d0", "z0", r"$\phi$", r"$\theta$", "q/p")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def plot_pulls(pulls: np.ndarray, pvalues: np.ndarray, path: Path, title: str = "") -> Path:
    """Pull distributions of the five perigee parameters with a unit Gaussian, and the p-value histogram
    (empty histograms when there are no tracks)."""
    with matplotlib.style.context(mplhep.style.ROOT):
        figure = Figure(figsize=(15, 9))
        figure.subplots_adjust(left=0.05, right=0.98, bottom=0.09, top=0.93 if title else 0.97, wspace=0.2, hspace=0.3)
        axes = figure.subplots(2, 3).ravel()
        bins = np.linspace(-5, 5, 51)
        for k, label in enumerate(_PULL_LABELS):
            values = pulls[:, k]
            text = f"mean {values.mean():.3f}\nstd {values.std():.3f}" if len(values) else "no tracks"
            axes[k].hist(values, bins=bins, histtype="step", density=bool(len(values)), label=text)
            axes[k].plot(bins, norm.pdf(bins), label="N(0, 1)")
            axes[k].set_xlabel(f"pull {label}")
            axes[k].legend(fontsize="small")
        axes[5].hist(pvalues, bins=np.linspace(0, 1, 21), histtype="step")
        axes[5].set_xlabel("fit p-value")
        if title:
            figure.suptitle(title)
        return _save(figure, path)


def plot_resolutions(resolution_vs_pt: dict, path: Path) -> Path:
    """Resolution (central-68 % width of the residuals) of d0, z0 and q/pT per true-pT bin (log scale; a panel
    without a positive value, e.g. from an event without fitted tracks, is drawn linear and says so)."""
    edges = np.asarray(resolution_vs_pt["pt_bins"])
    centers = np.sqrt(edges[1:] * edges[:-1])
    names = [name for name in resolution_vs_pt if name != "pt_bins"]
    with matplotlib.style.context(mplhep.style.ROOT):
        figure = Figure(figsize=(15, 5))
        figure.subplots_adjust(left=0.11, right=0.98, bottom=0.17, top=0.95, wspace=0.55)
        for axes, name in zip(figure.subplots(1, len(names)), names, strict=True):
            values = np.array([np.nan if value is None else value for value in resolution_vs_pt[name]], dtype=float)
            axes.errorbar(centers, values, xerr=(centers - edges[:-1], edges[1:] - centers), fmt="o")
            axes.set_xscale("log")
            axes.set_xlim(edges[0], edges[-1])
            if (values[np.isfinite(values)] > 0).any():  # a log axis needs a positive value (no bin may have one)
                axes.set_yscale("log")
            else:
                axes.text(0.5, 0.5, "no tracks", transform=axes.transAxes, ha="center", va="center")
            axes.set_xlabel(r"true $p_T$ [GeV]")
            axes.set_ylabel(f"resolution {name}")
        return _save(figure, path)


def plot_timing(timing_ms: dict[str, dict[str, float]], path: Path) -> Path:
    """Mean time per event of each stage (error bar: standard deviation over events)."""
    stages = [stage for stage in timing_ms if stage != "total"]
    with matplotlib.style.context(mplhep.style.ROOT):
        figure, axes = single_panel()
        means = [timing_ms[stage]["mean"] for stage in stages]
        spreads = [timing_ms[stage]["std"] for stage in stages]
        axes.bar(stages, means, yerr=spreads)
        axes.set_ylabel("ms / event")
        return _save(figure, path)
