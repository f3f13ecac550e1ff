"""Simulated events on the TrackML modules side by side with real TrackML events: the statistics a detector
simulation must reproduce for a finder trained on it to hold on real data.

    .venv/bin/python benchmarks/detector_comparison.py [--events 5] [--real DIR]

Simulation: pile-up 200, ``simulation.geometry = "modules"`` (its defaults: secondaries, cells), held-out seed
1 005 000, events 0..N−1. Real: the directory given by ``--real`` (default ``../shared/trackml`` beside the
repository) with ``full/`` (complete pile-up-200 events, hits only) and ``sample/`` (one event sub-sampled to a few
hundred particles, with truth and cells). Figures that need truth or cells come from the sample, hit counts and
radii from the full events. A secondary is a particle produced off the beam line (vertex more than 1 mm from it).
Writes ``benchmarks/results/detector_comparison.*`` and ``docs/plots/detector/{hits_per_layer,cells_per_hit,
hits_per_particle}.png``.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import add_real_trackml_argument, check_results_directory, run_script, write_results  # noqa: E402

from tracking_algs.commands.arg_types import positive_int  # noqa: E402
from tracking_algs.event import Event  # noqa: E402
from tracking_algs.io.csv_table import read_table  # noqa: E402
from tracking_algs.io.trackml import find_event_file, list_events, read_event  # noqa: E402
from tracking_algs.modules import on_supports  # noqa: E402
from tracking_algs.performance.lookup import particle_rows  # noqa: E402
from tracking_algs.simulation import SimulationConfig, simulate_event  # noqa: E402
from tracking_algs.simulation.secondaries import PARTICLE_KINDS, particle_kinds  # noqa: E402

SEED = 1_005_000
BARREL_VOLUMES = (8, 13, 17)
PIXEL_VOLUMES = (7, 8, 9)
#: the pT (GeV) above which the share of secondaries is given apart (the finder's efficiency threshold)
FAST_PT_GEV = 1.0
#: a particle produced farther than this (mm) from the beam line is a secondary
SECONDARY_RADIUS_MM = 1.0
#: a secondary that starts within this distance (mm, radially) of a passive cylinder starts in it
SUPPORT_REACH_MM = 3.0
PLOTS = ROOT / "docs" / "plots" / "detector"


def layer_keys(event: Event) -> np.ndarray:
    """One integer per hit naming its (volume, layer)."""
    return event.spacepoints.volume_id.astype(np.int64) * 100 + event.spacepoints.layer_id


def hits_per_layer(events: list[Event]) -> dict[int, float]:
    """Mean hits per event in each (volume, layer) key."""
    keys = np.concatenate([layer_keys(event) for event in events])
    unique, counts = np.unique(keys, return_counts=True)
    return {int(key): count / len(events) for key, count in zip(unique, counts, strict=True)}


def hits_per_volume(layers: dict[int, float]) -> dict[int, float]:
    """Mean hits per event in each volume, from the per-layer figures."""
    volumes: dict[int, float] = {}
    for key, value in layers.items():
        volumes[key // 100] = volumes.get(key // 100, 0.0) + value
    return volumes


def secondary_ids(event: Event) -> np.ndarray:
    """Ids of the event's particles produced off the beam line."""
    particles = event.particles
    return particles.particle_id[np.hypot(particles.vx, particles.vy) > SECONDARY_RADIUS_MM]


def simulated_electron_ids(event: Event) -> np.ndarray:
    """Ids of a simulated event's electrons and positrons: the products of photons."""
    ids = event.particles.particle_id
    return ids[particle_kinds(ids) == PARTICLE_KINDS.index("conversion")]


def real_electron_ids(directory: Path, event_id: int) -> np.ndarray:
    """Ids of a real event's electrons and positrons (``particle_type`` ±11 of its particles file)."""
    table = read_table(find_event_file(directory, event_id, "particles"), {"particle_id": "int64",
                                                                            "particle_type": "int64"})  # fmt: skip
    return table["particle_id"][np.abs(table["particle_type"]) == 11]


def truth_figures(events: list[Event], electrons: list[np.ndarray]) -> dict[str, float]:
    """Hits per particle (particles with hits), the fraction of (particle, layer) pairs with two or more hits, the
    noise fraction, the shares of secondaries among the particles with hits, among those of them above 1 GeV and
    among their hits, the share of the secondaries with hits that start in a passive cylinder (the beam pipe, the
    pixel support tube), and the share of the hits of e± (ids ``electrons[k]`` in event k)."""
    per_particle, pairs, doubles, noise, hits, secondary_hits, secondaries, electron_hits = [], 0, 0, 0, 0, 0, 0, 0
    fast, fast_secondaries, from_supports = 0, 0, 0
    for event, electron_ids in zip(events, electrons, strict=True):
        particle = event.truth.particle_id
        real = particle != 0
        noise += int((~real).sum())
        hits += len(particle)
        ids, counts = np.unique(particle[real], return_counts=True)
        per_particle.append(counts)
        _, pair_counts = np.unique(np.stack((particle[real], layer_keys(event)[real])), axis=1, return_counts=True)
        pairs += len(pair_counts)
        doubles += int((pair_counts >= 2).sum())
        secondary = np.isin(ids, secondary_ids(event))
        secondaries += int(secondary.sum())
        secondary_hits += int(counts[secondary].sum())
        rows = particle_rows(event.particles.particle_id, ids)
        above = (rows >= 0) & (event.particles.pt[np.maximum(rows, 0)] > FAST_PT_GEV)
        fast += int(above.sum())
        fast_secondaries += int((above & secondary).sum())
        start = rows[secondary & (rows >= 0)]
        particles = event.particles
        from_supports += int(
            on_supports(particles.vx[start], particles.vy[start], particles.vz[start], SUPPORT_REACH_MM).sum()
        )
        electron_hits += int(counts[np.isin(ids, electron_ids)].sum())
    counts = np.concatenate(per_particle)
    return {
        "hits_per_particle": float(np.mean(counts)),
        "double_hit_layer_fraction": doubles / pairs,
        "noise_fraction": noise / hits,
        "secondary_particle_fraction": secondaries / len(counts),
        "secondary_hit_fraction": secondary_hits / (hits - noise),
        "fast_secondary_fraction": fast_secondaries / fast,
        "support_secondary_fraction": from_supports / secondaries,
        "electron_hit_fraction": electron_hits / (hits - noise),
    }


def noise_per_volume(events: list[Event]) -> dict[int, float]:
    """The fraction of noise among the hits of each volume."""
    volume = np.concatenate([event.spacepoints.volume_id for event in events])
    noise = np.concatenate([event.truth.particle_id == 0 for event in events])
    return {int(v): float(noise[volume == v].mean()) for v in np.unique(volume)}


def cluster_sizes(events: list[Event]) -> tuple[np.ndarray, np.ndarray]:
    """Cells per hit and each hit's volume, over the hits of all events."""
    sizes, volumes = [], []
    for event in events:
        hit_ids, counts = np.unique(event.cells.hit_id, return_counts=True)
        sizes.append(counts)
        volumes.append(event.spacepoints.volume_id[np.searchsorted(event.spacepoints.hit_id, hit_ids)])
    return np.concatenate(sizes), np.concatenate(volumes)


def cell_figures(events: list[Event]) -> dict[str, object]:
    """Median and mean cells per hit (all hits, pixel hits, strip hits) and the mean per volume."""
    sizes, volumes = cluster_sizes(events)
    pixel = np.isin(volumes, PIXEL_VOLUMES)
    figures: dict[str, object] = {}
    for name, rows in (("all", np.ones(len(sizes), dtype=bool)), ("pixel", pixel), ("strip", ~pixel)):
        figures[f"{name}_median"] = float(np.median(sizes[rows]))
        figures[f"{name}_mean"] = float(np.mean(sizes[rows]))
    figures["mean_per_volume"] = {int(v): float(sizes[volumes == v].mean()) for v in np.unique(volumes)}
    return figures


def radius_spread(events: list[Event]) -> dict[int, tuple[float, float]]:
    """1st and 99th percentile of the hit radius in each barrel layer."""
    spread = {}
    for key in sorted({int(k) for event in events for k in np.unique(layer_keys(event))}):
        if key // 100 not in BARREL_VOLUMES:
            continue
        r = np.concatenate([np.hypot(e.spacepoints.x, e.spacepoints.y)[layer_keys(e) == key] for e in events])
        spread[key] = (float(np.percentile(r, 1)), float(np.percentile(r, 99)))
    return spread


def _width(interval: tuple[float, float] | None) -> float:
    return interval[1] - interval[0] if interval is not None else 0.0


def _ratio(simulated: float, real: float) -> str:
    return f"{simulated / real:.2f}" if real else "–"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(simulated: dict[int, float], real: dict[int, float], path: Path) -> None:
    """Bar chart of the mean hits per event in each layer, simulated against real."""
    plt = _pyplot()
    keys = sorted(set(simulated) | set(real))
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(x - 0.2, [simulated.get(k, 0) for k in keys], 0.4, label="simulated (modules, pile-up 200)")
    ax.bar(x + 0.2, [real.get(k, 0) for k in keys], 0.4, label="real TrackML (full events)")
    ax.set_xticks(x, [f"{k // 100}/{k % 100}" for k in keys], rotation=90, fontsize=7)
    ax.set_xlabel("volume/layer")
    ax.set_ylabel("hits per event")
    ax.legend()
    _save(plt, fig, path)


def plot_distributions(simulated: list[Event], sample: list[Event], path_cells: Path, path_hits: Path) -> None:
    """Normalised histograms: cells per hit (pixels, strips) and hits per particle, simulated against real."""
    plt = _pyplot()
    (sim_sizes, sim_volumes), (real_sizes, real_volumes) = cluster_sizes(simulated), cluster_sizes(sample)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.arange(0.5, 25.5)
    for ax, name, selected in ((axes[0], "pixel", True), (axes[1], "strip", False)):
        for sizes, volumes, label in ((sim_sizes, sim_volumes, "simulated"), (real_sizes, real_volumes, "real")):
            rows = np.isin(volumes, PIXEL_VOLUMES) == selected
            ax.hist(np.minimum(sizes[rows], 24), bins=bins, density=True, histtype="step", label=label)
        ax.set_xlabel(f"cells per {name} hit (last bin: 24 or more)")
        ax.set_ylabel("fraction of hits")
        ax.legend()
    _save(plt, fig, path_cells)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for events, label in ((simulated, "simulated"), (sample, "real (sample)")):
        nhits = np.concatenate([e.particles.nhits[e.particles.nhits > 0] for e in events])
        ax.hist(np.minimum(nhits, 25), bins=np.arange(0.5, 26.5), density=True, histtype="step", label=label)
    ax.set_xlabel("hits per particle (particles with hits; last bin: 25 or more)")
    ax.set_ylabel("fraction of particles")
    ax.legend()
    _save(plt, fig, path_hits)


def main(argv: list[str] | None = None) -> int:
    """Simulate, read the real events, print and save the side-by-side tables and plots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive_int, default=5, help="simulated pile-up-200 events")
    add_real_trackml_argument(parser, "--real", "real TrackML data")
    args = parser.parse_args(argv)
    check_results_directory(parser)
    config = SimulationConfig(pileup=200.0, geometry="modules")
    simulated = [simulate_event(config, SEED, event_id) for event_id in range(args.events)]
    full = [read_event(args.real / "full", event_id) for event_id in list_events(args.real / "full")]
    sample_id = list_events(args.real / "sample")[0]
    sample = [read_event(args.real / "sample", sample_id, cells=True)]

    layers_sim, layers_real = hits_per_layer(simulated), hits_per_layer(full)
    volumes_sim, volumes_real = hits_per_volume(layers_sim), hits_per_volume(layers_real)
    truth_sim = truth_figures(simulated, [simulated_electron_ids(event) for event in simulated])
    truth_real = truth_figures(sample, [real_electron_ids(args.real / "sample", sample_id)])
    noise_sim, noise_real = noise_per_volume(simulated), noise_per_volume(sample)
    cells_sim, cells_real = cell_figures(simulated), cell_figures(sample)
    spread_sim, spread_real = radius_spread(simulated), radius_spread(full)
    particles_sim = float(np.mean([len(event.particles) for event in simulated]))

    hits_sim, hits_real = sum(layers_sim.values()), sum(layers_real.values())
    names = {
        "hits_per_particle": "hits per particle (particles with hits)",
        "double_hit_layer_fraction": "(particle, layer) pairs with 2+ hits",
        "noise_fraction": "noise fraction",
        "secondary_particle_fraction": "secondaries among the particles with hits",
        "secondary_hit_fraction": "hits of secondaries among the particle hits",
        "fast_secondary_fraction": f"secondaries among the particles with hits above {FAST_PT_GEV:g} GeV",
        "support_secondary_fraction": f"secondaries with hits that start within {SUPPORT_REACH_MM:g} mm of the "
        "beam pipe or the pixel support tube",
        "electron_hit_fraction": "hits of e± (photon conversions) among the particle hits",
    }
    rows = [f"| hits per event | {hits_sim:.0f} | {hits_real:.0f} | {_ratio(hits_sim, hits_real)} |"]
    for key, label in names.items():
        sim, real = truth_sim[key], truth_real[key]
        rows.append(f"| {label} | {sim:.3f} | {real:.3f} | {_ratio(sim, real)} |")
    for kind in ("all", "pixel", "strip"):
        sim = f"{cells_sim[kind + '_median']:.0f} / {cells_sim[kind + '_mean']:.2f}"
        real = f"{cells_real[kind + '_median']:.0f} / {cells_real[kind + '_mean']:.2f}"
        ratio = _ratio(cells_sim[kind + "_mean"], cells_real[kind + "_mean"])
        rows.append(f"| cells per hit, {kind} hits (median / mean) | {sim} | {real} | {ratio} |")
    volume_rows = []
    for v in sorted(volumes_real):
        hits = (volumes_sim.get(v, 0.0), volumes_real[v])
        noise = (noise_sim[v], noise_real[v])
        cells = (cells_sim["mean_per_volume"][v], cells_real["mean_per_volume"][v])
        volume_rows.append(
            f"| {v} | {hits[0]:.0f} | {hits[1]:.0f} | {_ratio(*hits)} | {noise[0]:.3f} | {noise[1]:.3f} | "
            f"{_ratio(*noise)} | {cells[0]:.2f} | {cells[1]:.2f} | {_ratio(*cells)} |"
        )
    radius_rows = []
    for key in sorted(spread_real):
        sim = "{:.1f}–{:.1f}".format(*spread_sim[key]) if key in spread_sim else "–"
        real = "{:.1f}–{:.1f}".format(*spread_real[key])
        ratio = _ratio(_width(spread_sim.get(key)), _width(spread_real[key]))
        radius_rows.append(f"| {key // 100}/{key % 100} | {sim} | {real} | {ratio} |")
    table = "\n".join(
        [
            "## Simulated detector against real TrackML events",
            "",
            f"Simulation: {args.events} pile-up-200 events on the modules (seed {SEED}; {particles_sim:.0f} particles "
            f"per event, secondaries included). Real: {len(full)} full pile-up-200 events (hit counts, radii) and the "
            "truth sample (figures that need truth or cells). Ratio = simulated / real. A secondary: a particle "
            f"produced more than {SECONDARY_RADIUS_MM:g} mm from the beam line.",
            "",
            "| figure | simulated | real | ratio |",
            "|---|---|---|---|",
            *rows,
            "",
            "| volume | hits/event sim | real | ratio | noise fraction sim | real | ratio | cells/hit sim | real "
            "| ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *volume_rows,
            "",
            "| barrel layer | hit radius 1st–99th percentile (mm), sim | real | width ratio |",
            "|---|---|---|---|",
            *radius_rows,
            "",
        ]
    )
    print(table)
    report = {
        "seed": SEED,
        "events": args.events,
        "particles_per_event": particles_sim,
        "hits_per_layer": {"simulated": layers_sim, "real": layers_real},
        "truth": {"simulated": truth_sim, "real_sample": truth_real},
        "noise_fraction_per_volume": {"simulated": noise_sim, "real_sample": noise_real},
        "cells_per_hit": {"simulated": cells_sim, "real_sample": cells_real},
        "barrel_radius_1_99": {"simulated": spread_sim, "real": spread_real},
    }
    write_results("detector_comparison", report, table)
    plot_layers(layers_sim, layers_real, PLOTS / "hits_per_layer.png")
    plot_distributions(simulated, sample, PLOTS / "cells_per_hit.png", PLOTS / "hits_per_particle.png")
    return 0


if __name__ == "__main__":
    run_script(main)
