"""Speed of the Kalman fitter: tracks fitted per second, batched versus one track per call, on cylinders and on
module planes.

Tracks: the truth tracks with exactly 10 hits of a simulated pile-up-200 event (no noise, no inefficiency), repeated
to ``--tracks`` tracks.  In one run the same fitter fits them (a) batched, all in one ``fit`` call, with each
``--batch-sizes`` value (tracks advanced together) on one process, and at the default batch size (4096) on
``--processes`` worker processes that each fit an equal share (the shares are handed to the workers once, when they
start, as a job's workers read their own events; the timed calls carry only a share number), and (b) in a per-track
loop, one ``fit`` call per track (at the default batch size), on the first ``--loop-tracks`` tracks.  Side by side,
the same variants fit 10-hit tracks of the module simulation on the TrackML module planes (``modules:`` rows; most
of those tracks cross two overlapping modules in some layer and take the fitter's second pass), and the same again
for tracks simulated and fitted in the solenoid field (``solenoid:`` rows, docs/fitting.md "Magnetic field").
Repetitions are interleaved; medians are reported.

Usage::

    .venv/bin/python benchmarks/fitting.py [--tracks 20000] [--loop-tracks 300] [--repeat 3]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # each process on one core: keep BLAS from spreading
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from bench_common import RESULTS, run_script, start_worker_quietly, write_results

from tracking_algs.commands.arg_types import non_negative_int, output_directory, positive_int
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.geometry import trackml_detector
from tracking_algs.magnetic_field import MagneticField, SolenoidField
from tracking_algs.modules import trackml_modules
from tracking_algs.simulation import SimulationConfig, simulate_event
from tracking_algs.worker_lifetime import sigint_blocked

HITS_PER_TRACK = 10


#: what the tracks are simulated on and fitted in: the cylinders, the module planes, the module planes in the solenoid
GEOMETRIES = ("cylinders", "modules", "solenoid")


def _field(geometry: str) -> MagneticField | None:
    return SolenoidField() if geometry == "solenoid" else None


def ten_hit_tracks(n_tracks: int, seed: int, geometry: str = "cylinders") -> tuple[Spacepoints, TrackCandidates]:
    """``n_tracks`` truth tracks of 10 hits each (copies of one event's 10-hit particles), labels 0..n-1."""
    simulated_on = "cylinders" if geometry == "cylinders" else "modules"
    config = SimulationConfig(geometry=simulated_on, pileup=200.0, hit_inefficiency=0.0, noise_fraction=0.0)
    event = simulate_event(config, seed, 0, field=_field(geometry))
    particle = event.truth.particle_id
    ids, counts = np.unique(particle[particle > 0], return_counts=True)
    chosen = ids[counts == HITS_PER_TRACK]
    rows = np.flatnonzero(np.isin(particle, chosen))
    rows = rows[np.argsort(particle[rows], kind="stable")]  # grouped by particle
    copies = -(-n_tracks // len(chosen))
    all_rows = np.tile(rows, copies)[: n_tracks * HITS_PER_TRACK]
    labels = np.repeat(np.arange(n_tracks), HITS_PER_TRACK)
    return event.spacepoints.take(all_rows), TrackCandidates(labels)


#: what a worker process fits: its fitter and every share, set once by :func:`_load_shares` (like a job's worker
#: that reads its own events, so the timed calls carry no input between processes)
_WORKER: dict[str, object] = {}


def make_fitter(geometry: str, batch_size: int) -> KalmanFitter:
    """The fitter of the cylinder detector, or of the TrackML module planes (in the solenoid for
    ``"solenoid"``)."""
    modules = None if geometry == "cylinders" else trackml_modules()
    config = KalmanConfig(batch_size=batch_size)
    return KalmanFitter(trackml_detector(), config, modules=modules, field=_field(geometry))


def _load_shares(shares: list[tuple[Spacepoints, TrackCandidates]], batch_size: int, geometry: str) -> None:
    start_worker_quietly()
    _WORKER["fitter"] = make_fitter(geometry, batch_size)
    _WORKER["shares"] = shares


def _fit_share(share: int) -> float:
    """Fit share number ``share`` in a worker; returns the CPU seconds it took."""
    start = time.process_time()
    _WORKER["fitter"].fit(*_WORKER["shares"][share])
    return time.process_time() - start


def _timed(call) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _shares(spacepoints: Spacepoints, n_tracks: int, parts: int) -> list[tuple[Spacepoints, TrackCandidates]]:
    bounds = np.linspace(0, n_tracks, parts + 1).astype(int)
    shares = []
    for low, high in itertools.pairwise(bounds):
        rows = slice(low * HITS_PER_TRACK, high * HITS_PER_TRACK)
        shares.append((spacepoints.take(rows), TrackCandidates(np.repeat(np.arange(high - low), HITS_PER_TRACK))))
    return shares


def measure(n_tracks: int, loop_tracks: int, batch_sizes: list[int], processes: int, repeat: int, seed: int):
    """Median tracks/s of every variant (see the module docstring)."""
    rows = []
    for geometry in GEOMETRIES:
        rows += _measure_geometry(geometry, n_tracks, loop_tracks, batch_sizes, processes, repeat, seed)
    return rows


def _measure_geometry(geometry, n_tracks, loop_tracks, batch_sizes, processes, repeat, seed):
    spacepoints, candidates = ten_hit_tracks(n_tracks, seed, geometry)
    fitters = {size: make_fitter(geometry, size) for size in batch_sizes}
    default_size = KalmanConfig().batch_size
    default_fitter = fitters.get(default_size) or make_fitter(geometry, default_size)  # the loop's and the workers'
    loop_sp = [spacepoints.take(slice(k * HITS_PER_TRACK, (k + 1) * HITS_PER_TRACK)) for k in range(loop_tracks)]
    one_label = TrackCandidates(np.zeros(HITS_PER_TRACK, dtype=np.int64))
    shares = _shares(spacepoints, n_tracks, processes)
    times: dict[str, list[tuple[float, float]]] = {}

    def per_track_loop() -> None:
        for sp in loop_sp:
            default_fitter.fit(sp, one_label)

    default_fitter.fit(spacepoints, candidates)  # warm-up
    with ProcessPoolExecutor(processes, initializer=_load_shares, initargs=(shares, default_size, geometry)) as pool:
        with sigint_blocked():  # the workers start with the first tasks
            warm_up = pool.map(_fit_share, range(processes))
        list(warm_up)
        for _ in range(repeat):
            for size, fitter in fitters.items():
                timing = _timed(lambda fitter=fitter: fitter.fit(spacepoints, candidates))
                times.setdefault(f"batched, batch_size={size}, 1 process", []).append(timing)
            start = time.perf_counter()
            cpu = sum(pool.map(_fit_share, range(processes)))
            key = f"batched, batch_size={default_size}, {processes} processes"
            times.setdefault(key, []).append((time.perf_counter() - start, cpu))
            times.setdefault("per-track loop, 1 process", []).append(_timed(per_track_loop))
    rows = []
    prefix = "" if geometry == "cylinders" else f"{geometry}: "
    for variant, values in times.items():
        tracks = loop_tracks if variant.startswith("per-track") else n_tracks
        wall, cpu = (float(np.median(column)) for column in zip(*values, strict=True))
        rows.append({"variant": prefix + variant, "tracks": tracks, "median_s": wall, "tracks_per_s": tracks / wall,
                     "median_cpu_s": cpu, "tracks_per_cpu_s": tracks / cpu})  # fmt: skip
    return rows


def _cpu_rate(rows: list[dict[str, object]], prefix: str) -> float:
    """Tracks per CPU-second of the ``prefix`` rows' batched fit on one process: at the default batch size where
    that ran, else at the first batch size measured."""
    single = [row for row in rows if str(row["variant"]).startswith(prefix + "batched")
              and str(row["variant"]).endswith(", 1 process")]  # fmt: skip
    default = [
        row for row in single if row["variant"] == f"{prefix}batched, batch_size={KalmanConfig().batch_size}, 1 process"
    ]
    return float((default or single)[0]["tracks_per_cpu_s"])


def markdown(rows: list[dict[str, object]], load: float, cpus: int) -> str:
    """The results as a markdown section."""
    batched = max(row["tracks_per_s"] for row in rows if row["variant"].endswith("1 process")
                  and row["variant"].startswith("batched"))  # fmt: skip
    loop = next(row["tracks_per_s"] for row in rows if row["variant"].startswith("per-track"))
    on_planes, in_solenoid, on_cylinders = (_cpu_rate(rows, prefix) for prefix in ("modules: ", "solenoid: ", ""))
    lines = [
        "## Kalman fitter throughput",
        "",
        f"10-hit truth tracks (pile-up-200 simulation), multiple scattering on. "
        f"Machine: {cpus} CPUs, load average during the run {load:.1f}. "
        f"Batched is {batched / loop:.0f}× faster than the per-track loop on one process. "
        f"On module planes (rows `modules:`) a track costs {on_cylinders / on_planes:.1f}× as much CPU as on "
        f"the cylinders; in the solenoid (rows `solenoid:`) {on_planes / in_solenoid:.1f}× as much as on the "
        "module planes in the uniform field. "
        "On a shared machine the wall-clock rate depends on the load; tracks per CPU-second (the processes' own "
        "CPU time) is the rate of one busy core.",
        "",
        "| variant | tracks | median wall s | tracks/s (wall) | median CPU s | tracks per CPU-second |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['variant']} | {row['tracks']} | {row['median_s']:.3f} | {row['tracks_per_s']:,.0f} | "
        f"{row['median_cpu_s']:.3f} | {row['tracks_per_cpu_s']:,.0f} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``benchmarks/results/fitting.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=positive_int, default=20_000)
    parser.add_argument("--loop-tracks", type=positive_int, default=300)
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--processes", type=positive_int, default=2)
    parser.add_argument("--repeat", type=positive_int, default=3)
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    rows = measure(args.tracks, args.loop_tracks, args.batch_sizes, args.processes, args.repeat, args.seed)
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 0
    table = markdown(rows, load, cpus)
    print(table)
    report = {
        "cpus": cpus,
        "hits_per_track": HITS_PER_TRACK,
        "results": rows,
    }
    write_results("fitting", report, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
