"""Simulated events on the TrackML modules side by side with real TrackML events: the statistics a detector
simulation must reproduce for a finder trained on it to hold on real data.

    .venv/bin/python benchmarks/detector_comparison.py [--events 3] [--real DIR]

Simulation: pile-up 200, ``simulation.geometry = "modules"``, held-out seed 1 005 000. Real: the directory given by
``--real`` (default ``../shared/trackml`` beside the repository) with ``full/`` (complete pile-up-200 events, hits
only) and ``sample/`` (one event sub-sampled to a few hundred particles, with truth and cells). Figures that need
truth come from the sample, the others from the full events. Writes ``benchmarks/results/detector_comparison.*``
and ``docs/plots/detector/hits_per_layer.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import write_results  # noqa: E402

from tracking_algs.event import Event  # noqa: E402
from tracking_algs.io.csv_table import read_table  # noqa: E402
from tracking_algs.io.trackml import find_event_file, list_events, read_event  # noqa: E402
from tracking_algs.simulation import SimulationConfig, simulate_event  # noqa: E402

SEED = 1_005_000
BARREL_VOLUMES = (8, 13, 17)


def layer_keys(event: Event) -> np.ndarray:
    """One integer per hit naming its (volume, layer)."""
    return event.spacepoints.volume_id.astype(np.int64) * 100 + event.spacepoints.layer_id


def hits_per_layer(events: list[Event]) -> dict[int, float]:
    """Mean hits per event in each (volume, layer) key."""
    keys = np.concatenate([layer_keys(event) for event in events])
    unique, counts = np.unique(keys, return_counts=True)
    return {int(key): count / len(events) for key, count in zip(unique, counts, strict=True)}


def truth_figures(events: list[Event]) -> dict[str, float]:
    """Hits per particle, the fraction of (particle, layer) pairs with two or more hits, and the noise fraction."""
    per_particle, pairs, doubles, noise, hits = [], 0, 0, 0, 0
    for event in events:
        particle = event.truth.particle_id
        real = particle != 0
        noise += int((~real).sum())
        hits += len(particle)
        _, counts = np.unique(particle[real], return_counts=True)
        per_particle.append(counts)
        _, pair_counts = np.unique(np.stack((particle[real], layer_keys(event)[real])), axis=1, return_counts=True)
        pairs += len(pair_counts)
        doubles += int((pair_counts >= 2).sum())
    return {
        "hits_per_particle": float(np.mean(np.concatenate(per_particle))),
        "double_hit_layer_fraction": doubles / pairs,
        "noise_fraction": noise / hits,
    }


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


def cells_per_hit(directory: Path, event_id: int) -> tuple[float, float] | None:
    """Median and mean cells per hit of a real event with a cells file (None without one)."""
    path = find_event_file(directory, event_id, "cells")
    if path is None:
        return None
    cells = read_table(path, {"hit_id": "int64"})
    _, counts = np.unique(cells["hit_id"], return_counts=True)
    return float(np.median(counts)), float(np.mean(counts))


def plot(simulated: dict[int, float], real: dict[int, float], path: Path) -> None:
    """Bar chart of the mean hits per event in each layer, simulated against real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(set(simulated) | set(real))
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(x - 0.2, [simulated.get(k, 0) for k in keys], 0.4, label="simulated (modules, pile-up 200)")
    ax.bar(x + 0.2, [real.get(k, 0) for k in keys], 0.4, label="real TrackML (full events)")
    ax.set_xticks(x, [f"{k // 100}/{k % 100}" for k in keys], rotation=90, fontsize=7)
    ax.set_xlabel("volume/layer")
    ax.set_ylabel("hits per event")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Simulate, read the real events, print and save the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3, help="simulated pile-up-200 events")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "trackml", help="real TrackML data")
    args = parser.parse_args(argv)
    config = SimulationConfig(pileup=200.0, geometry="modules")
    simulated = [simulate_event(config, SEED, event_id) for event_id in range(args.events)]
    full = [read_event(args.real / "full", event_id) for event_id in list_events(args.real / "full")]
    sample_id = list_events(args.real / "sample")[0]
    sample = [read_event(args.real / "sample", sample_id)]

    layers_sim, layers_real = hits_per_layer(simulated), hits_per_layer(full)
    truth_sim, truth_real = truth_figures(simulated), truth_figures(sample)
    spread_sim, spread_real = radius_spread(simulated), radius_spread(full)
    cells = cells_per_hit(args.real / "sample", sample_id)

    def ratio(simulated_value: float, real_value: float) -> str:
        return f"{simulated_value / real_value:.2f}" if real_value else "–"

    hits_sim = sum(layers_sim.values())
    hits_real = sum(layers_real.values())
    rows = [
        ("hits per event", f"{hits_sim:.0f}", f"{hits_real:.0f}", ratio(hits_sim, hits_real)),
        *(
            (f"hits per event, volume {volume}", f"{s:.0f}", f"{r:.0f}", ratio(s, r))
            for volume in sorted({k // 100 for k in layers_real})
            for s, r in [
                (
                    sum(v for k, v in layers_sim.items() if k // 100 == volume),
                    sum(v for k, v in layers_real.items() if k // 100 == volume),
                )
            ]
        ),
        *(
            (
                name.replace("_", " "),
                f"{truth_sim[name]:.3f}",
                f"{truth_real[name]:.3f}",
                ratio(truth_sim[name], truth_real[name]),
            )
            for name in truth_sim
        ),
        *(
            (
                f"barrel {key // 100}/{key % 100} hit radius, 1st–99th percentile (mm)",
                "{:.1f}–{:.1f}".format(*spread_sim[key]) if key in spread_sim else "–",
                "{:.1f}–{:.1f}".format(*spread_real[key]),
                ratio(_width(spread_sim.get(key)), _width(spread_real[key])),
            )
            for key in sorted(spread_real)
        ),
        (
            "cells per pixel hit (median / mean)",
            "not simulated",
            f"{cells[0]:.0f} / {cells[1]:.1f}" if cells else "–",
            "–",
        ),
    ]
    table = "\n".join(
        [
            "## Simulated detector against real TrackML events",
            "",
            f"Simulation: {args.events} pile-up-200 events on the modules (seed {SEED}). Real: {len(full)} full "
            "pile-up-200 events (hit counts, radii) and the truth sample (figures that need truth). Ratio = "
            "simulated / real (for the radius: of the 1st–99th percentile widths).",
            "",
            "| figure | simulated | real | ratio |",
            "|---|---|---|---|",
            *(f"| {name} | {sim} | {real} | {r} |" for name, sim, real, r in rows),
            "",
        ]
    )
    print(table)
    report = {
        "seed": SEED,
        "events": args.events,
        "hits_per_layer": {"simulated": layers_sim, "real": layers_real},
        "truth": {"simulated": truth_sim, "real_sample": truth_real},
        "barrel_radius_1_99": {"simulated": spread_sim, "real": spread_real},
        "cells_per_pixel_hit_real": cells,
    }
    write_results("detector_comparison", report, table)
    plot(layers_sim, layers_real, ROOT / "docs" / "plots" / "detector" / "hits_per_layer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
