"""Speed of the detector simulation and of the TrackML CSV files: seconds per event at pile-up 0, 50 and 200.

Each pile-up point simulates ``--events`` events (default config: jet-like signal on, 1 % inefficiency, 5 %
noise, multiple scattering) on one core, after one warm-up event (simulated, written and read); then the same
events on the TrackML modules (``geometry = "modules"``: module navigation, secondaries, clusters of cells),
after one warm-up event that also builds the layer tables. Each event is
then written and read back as TrackML CSV twice, side by side: with the project's CSV code (pyarrow's reader and
writer) and with the code it replaced, kept here only as the baseline (:func:`legacy_read_table`: the whole text,
then ``np.loadtxt``; :func:`legacy_write_table`: ``repr`` of each value in a Python loop). The two orders
alternate from event to event. The ``fitted_tracks.csv`` writer of the job report is timed the same way on one
synthetic row of 27 columns per particle (:func:`legacy_write_fitted`: the per-row loop it replaced). Every read
is checked to give back the event bit for bit, also across the two implementations (each reads what the other
wrote).

Usage::

    .venv/bin/python benchmarks/simulation.py [--events 5] [--pileups 0 50 200]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: keep BLAS (and pyarrow's thread pool) from spreading
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import csv
import gzip
import io
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import version
from pathlib import Path

import attrs
import numpy as np
from bench_common import RESULTS, run_script, write_results

import tracking_algs.io.trackml as trackml
from tracking_algs.commands.arg_types import non_negative_float, non_negative_int, output_directory, positive_int
from tracking_algs.errors import EventFormatError
from tracking_algs.event import Event
from tracking_algs.fitting.results import COVARIANCE_NAMES, PARAMETER_NAMES
from tracking_algs.geometry import trackml_detector
from tracking_algs.io.csv_table import TableWriter
from tracking_algs.simulation import SimulationConfig, simulate_event

FITTED_COLUMNS = ("event_id", "track_id", *PARAMETER_NAMES, *COVARIANCE_NAMES, "chi2", "ndf", "n_hits",
                  "n_outliers", "status")  # fmt: skip
FITTED_INTEGERS = {"event_id", "track_id", "ndf", "n_hits", "n_outliers", "status"}


# --- the baseline: the CSV code before pyarrow (tracking_algs/io/csv_table.py and tracking_algs/job/report.py) ----


def legacy_read_table(path: Path, columns: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """BASELINE ONLY: the former reader (the whole text, then ``np.loadtxt``, then a field count of every line)."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            text = stream.read()
    else:
        text = path.read_text(encoding="utf-8")
    names = [name.strip() for name in text.partition("\n")[0].strip().split(",")]
    usecols = [names.index(name) for name in columns]
    dtype = np.dtype([(name, np.dtype(kind)) for name, kind in columns.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", DeprecationWarning)
        data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=usecols, dtype=dtype, ndmin=1)
    lines = text.splitlines()[1:]
    counts = np.fromiter((line.count(",") for line in lines), dtype=np.int64, count=len(lines))
    if (counts != len(names) - 1).any():
        raise EventFormatError(f"{path}: wrong field count")
    table = {name: np.ascontiguousarray(data[name]) for name in columns}
    for name, values in table.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise EventFormatError(f"{path}: column {name!r} is not finite")
    return table


def legacy_write_table(path: Path, table: Mapping[str, np.ndarray]) -> None:
    """BASELINE ONLY: the former writer (``repr`` of every value, joined in a Python loop)."""
    text_columns = [list(map(repr, np.asarray(values).tolist())) for values in table.values()]
    with path.open("w", newline="") as stream:
        stream.write(",".join(table) + "\n")
        stream.writelines(line + "\n" for line in map(",".join, zip(*text_columns, strict=True)))


def legacy_write_fitted(path: Path, fitted: Mapping[str, np.ndarray]) -> None:
    """BASELINE ONLY: the former ``fitted_tracks.csv`` writer of the job report (one formatted row at a time)."""

    def _format(value: np.generic) -> str:
        return str(int(value)) if np.issubdtype(np.asarray(value).dtype, np.integer) else repr(float(value))

    with path.open("w") as stream:
        stream.write(",".join(FITTED_COLUMNS) + "\n")
        for row in range(len(fitted["track_id"])):
            stream.write(",".join(_format(fitted[name][row]) for name in FITTED_COLUMNS) + "\n")


def write_fitted(path: Path, fitted: Mapping[str, np.ndarray]) -> None:
    """The report's writer now (:class:`TableWriter`, as ``tracking_algs.job.report`` uses it)."""
    dtypes = {name: np.int64 if name in FITTED_INTEGERS else np.float64 for name in FITTED_COLUMNS}
    with TableWriter(path, dtypes) as writer:
        writer.write(fitted)


@contextlib.contextmanager
def legacy_csv() -> Iterator[None]:
    """``write_event``/``read_event`` running on the baseline table functions."""
    saved = trackml.read_table, trackml.write_table
    trackml.read_table, trackml.write_table = legacy_read_table, legacy_write_table
    try:
        yield
    finally:
        trackml.read_table, trackml.write_table = saved


# --- measurement ----------------------------------------------------------------------------------------------------


def _timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def _bytes(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint8)


def _assert_same_event(event: Event, back: Event, what: str) -> None:
    for part in ("spacepoints", "truth", "particles"):
        for field in attrs.fields(type(getattr(event, part))):
            if field.name == "sigma":
                continue
            left, right = getattr(getattr(event, part), field.name), getattr(getattr(back, part), field.name)
            same = left.dtype == right.dtype and np.array_equal(_bytes(left), _bytes(right))
            if not same:
                raise AssertionError(f"{what}: {part}.{field.name} does not read back bit for bit")


def _assert_same_values(path: Path, other: Path) -> None:
    """The two CSV files have one header and hold the same numbers (written in either format)."""
    with path.open() as first, other.open() as second:
        rows, other_rows = list(csv.reader(first)), list(csv.reader(second))
    if rows[0] != other_rows[0] or len(rows) != len(other_rows):
        raise AssertionError(f"{path.name}: the two writers disagree")
    if any(list(map(float, a)) != list(map(float, b)) for a, b in zip(rows[1:], other_rows[1:], strict=True)):
        raise AssertionError(f"{path.name}: the two writers disagree")


def _fitted_table(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A synthetic fitted-tracks table: integer columns small integers, float columns random doubles."""
    scale = 10.0 ** rng.integers(-6, 4, size=rows)
    return {name: rng.integers(0, 30, rows) if name in FITTED_INTEGERS else rng.normal(size=rows) * scale
            for name in FITTED_COLUMNS}  # fmt: skip


def measure(pileup: float, events: int, seed: int) -> dict[str, object]:
    """Simulate ``events`` events at one pile-up; write and read each back with the new and the baseline CSV code."""
    config = attrs.evolve(SimulationConfig(), pileup=pileup)
    detector = trackml_detector()
    warm_up = simulate_event(config, seed, 10_000, detector)
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {key: [] for key in ("sim", "write", "read", "write_legacy", "read_legacy",
                                                         "fitted", "fitted_legacy")}  # fmt: skip
    hits, particles = [], []
    with tempfile.TemporaryDirectory() as directory:
        new_dir, legacy_dir = Path(directory) / "new", Path(directory) / "legacy"
        for out, variant in ((new_dir, contextlib.nullcontext), (legacy_dir, legacy_csv)):  # warm-up
            with variant():
                trackml.write_event(out, warm_up)
                trackml.read_event(out, warm_up.event_id, detector)
        for event_id in range(events):
            seconds, event = _timed(lambda event_id=event_id: simulate_event(config, seed, event_id, detector))
            times["sim"].append(seconds)
            hits.append(len(event.spacepoints))
            particles.append(len(event.particles))
            fitted = _fitted_table(len(event.particles), rng)
            for variant in ("new", "legacy") if event_id % 2 == 0 else ("legacy", "new"):
                suffix, out = ("", new_dir) if variant == "new" else ("_legacy", legacy_dir)
                with legacy_csv() if variant == "legacy" else contextlib.nullcontext():
                    times["write" + suffix].append(
                        _timed(lambda out=out, event=event: trackml.write_event(out, event))[0]
                    )
                    seconds, back = _timed(
                        lambda out=out, event_id=event_id: trackml.read_event(out, event_id, detector)
                    )
                    times["read" + suffix].append(seconds)
                _assert_same_event(event, back, f"{variant} CSV")
                writer = write_fitted if variant == "new" else legacy_write_fitted
                times["fitted" + suffix].append(_timed(lambda out=out, w=writer, f=fitted: w(out / "fit.csv", f))[0])
            # each reads what the other wrote
            _assert_same_event(event, trackml.read_event(legacy_dir, event_id, detector), "new reader, baseline files")
            with legacy_csv():
                _assert_same_event(event, trackml.read_event(new_dir, event_id, detector), "baseline reader, new files")
            _assert_same_values(new_dir / "fit.csv", legacy_dir / "fit.csv")
    median = {key: float(np.median(values)) for key, values in times.items()}
    return {
        "pileup": pileup,
        "events": events,
        "mean_particles": float(np.mean(particles)),
        "mean_hits": float(np.mean(hits)),
        "median_s_per_event": median["sim"],
        "max_s_per_event": float(np.max(times["sim"])),
        "hits_per_s": float(np.sum(hits) / np.sum(times["sim"])),
        "median_write_s": median["write"],
        "median_read_s": median["read"],
        "median_write_s_legacy": median["write_legacy"],
        "median_read_s_legacy": median["read_legacy"],
        "write_speedup": median["write_legacy"] / median["write"],
        "read_speedup": median["read_legacy"] / median["read"],
        "fitted_rows": float(np.mean(particles)),
        "median_fitted_write_s": median["fitted"],
        "median_fitted_write_s_legacy": median["fitted_legacy"],
        "fitted_write_speedup": median["fitted_legacy"] / median["fitted"],
    }


def measure_modules(pileup: float, events: int, seed: int) -> dict[str, object]:
    """Simulate ``events`` events at one pile-up on the TrackML modules."""
    config = SimulationConfig(pileup=pileup, geometry="modules")
    simulate_event(config, seed, 10_000)  # warm-up: the layer tables are built once per process
    seconds, hits, particles, cells = [], [], [], []
    for event_id in range(events):
        elapsed, event = _timed(lambda event_id=event_id: simulate_event(config, seed, event_id))
        seconds.append(elapsed)
        hits.append(len(event.spacepoints))
        particles.append(len(event.particles))
        cells.append(len(event.cells))
    return {
        "pileup": pileup,
        "events": events,
        "mean_particles": float(np.mean(particles)),
        "mean_hits": float(np.mean(hits)),
        "mean_cells": float(np.mean(cells)),
        "median_s_per_event": float(np.median(seconds)),
        "max_s_per_event": float(np.max(seconds)),
        "hits_per_s": float(np.sum(hits) / np.sum(seconds)),
    }


def _cpu() -> str:
    """``model name`` of /proc/cpuinfo (what ``lscpu`` shows) and the core count."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []  # fmt: skip
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} cores"


def markdown(rows: list[dict[str, object]], module_rows: list[dict[str, object]], load: float) -> str:
    """The results as a markdown section (``rows``: cylinders and CSV files, ``module_rows``: the simulation on
    modules); ``load`` is the machine's 1-minute load average during the run."""
    lines = [
        "## Detector simulation",
        "",
        f"One core. Machine: {_cpu()}; load average during the run: {load:.1f}.",
        "",
        "| pile-up | events | particles/event | hits/event | simulation s/event (median) | max s/event | hits/s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['pileup']:g} | {row['events']} | {row['mean_particles']:.0f} | {row['mean_hits']:.0f} | "
        f"{row['median_s_per_event']:.3f} | {row['max_s_per_event']:.3f} | {row['hits_per_s']:.3g} |"
        for row in rows
    ]
    lines += [
        "",
        'On the TrackML modules (`geometry = "modules"`: module navigation, secondaries, clusters of cells; '
        "particles include the secondaries):",
        "",
        "| pile-up | events | particles/event | hits/event | cells/event | simulation s/event (median) "
        "| max s/event | hits/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['pileup']:g} | {row['events']} | {row['mean_particles']:.0f} | {row['mean_hits']:.0f} | "
        f"{row['mean_cells']:.0f} | {row['median_s_per_event']:.3f} | {row['max_s_per_event']:.3f} | "
        f"{row['hits_per_s']:.3g} |"
        for row in module_rows
    ]
    lines += [
        "",
        f"TrackML CSV files of each event (hits, truth, particles), s/event (median): pyarrow "
        f"{version('pyarrow')}'s reader and writer (the project's code) against the code they replaced, measured "
        "side by side on the same events (baseline: the whole text then `np.loadtxt` to read, `repr` of each "
        "value in a Python loop to write). `fitted_tracks.csv`: the job report's writer on one synthetic row of "
        f"{len(FITTED_COLUMNS)} columns per particle, against its former per-row loop. Every file reads back bit "
        "for bit, also across the two implementations.",
        "",
        "| pile-up | CSV write | baseline write | write speed-up | CSV read | baseline read | read speed-up "
        "| fitted_tracks.csv rows | write | baseline write | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['pileup']:g} | {row['median_write_s']:.3f} | {row['median_write_s_legacy']:.3f} | "
        f"{row['write_speedup']:.1f}× | {row['median_read_s']:.3f} | {row['median_read_s_legacy']:.3f} | "
        f"{row['read_speedup']:.1f}× | {row['fitted_rows']:.0f} | {row['median_fitted_write_s']:.4f} | "
        f"{row['median_fitted_write_s_legacy']:.4f} | {row['fitted_write_speedup']:.1f}× |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``benchmarks/results/simulation.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive_int, default=5, help="events per pile-up point")
    parser.add_argument("--pileups", type=non_negative_float, nargs="+", default=[0.0, 50.0, 200.0])
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    rows = [measure(pileup, args.events, args.seed) for pileup in args.pileups]
    module_rows = [measure_modules(pileup, args.events, args.seed) for pileup in args.pileups]
    load = os.getloadavg()[0]
    table = markdown(rows, module_rows, load)
    print(table)
    report = {"cpu": _cpu(), "pyarrow": version("pyarrow"), "results": rows, "modules": module_rows}
    write_results("simulation", report, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
