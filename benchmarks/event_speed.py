"""Time per event and per stage of the whole chain (find + fit + selection, one job process, the job's
``EventProcessor``, with the fit's worker processes where the job options start them), on the real full TrackML
events and on simulated pile-up-200 events, in one run.

Samples:

- **real**: the events of ``../shared/trackml/full`` (about 100 000 hits, 15 % noise), read with the real
  ``detectors.csv``, with ``configs/trackml.toml`` (the models trained on the module simulation, the solenoid, the
  fit shared out over worker processes, split tracks merged, failed fits trimmed by up to 5 hits at either end),
  again with the links chosen by their geometry alone (``finding.building.score_weight = 0``), with split tracks
  left unmerged (``fitting.selection.merge_split = false``), without following the kept tracks beyond their ends
  (``fitting.selection.follow_tracks = false``), trimming at most 3 hits
  (``fitting.kalman.max_trimmed_hits = 3``), with the fit in the job's own process
  (``fitting.kalman.processes = 1``), and so once more fitting every trimmed variant, those too short to be
  written as well (``fitting.kalman.min_trimmed_hits = 3``; the same written tracks);
- **simulation on modules**: held-out pile-up-200 events on the built-in TrackML modules in the solenoid, with
  ``configs/trackml.toml``;
- **simulation on cylinders**: held-out pile-up-200 events of the default simulation, with
  ``configs/local_onnx.toml``.

The samples take turns: in each of ``--repeat`` rounds every sample gets a fresh ``EventProcessor``, which
processes its first event once to warm up and then each of its events once, so that the host's drift falls on
every sample alike.  The median over the rounds of each stage is reported (ms), events of one sample averaged.
``--set`` adds job options to every sample.

    .venv/bin/python benchmarks/event_speed.py [--events 2] [--repeat 3] [--set KEY=VALUE ...]

Writes benchmarks/results/event_speed.{json,md}.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
from pathlib import Path

import numpy as np
from bench_common import add_real_trackml_argument, check_results_directory, run_script, write_results

from tracking_algs.commands.arg_types import positive_int
from tracking_algs.event import Event
from tracking_algs.finding.training import VALIDATION_SEED_MIN
from tracking_algs.io.trackml import list_events, read_event
from tracking_algs.job.process import EventProcessor
from tracking_algs.job_options import load_job_options
from tracking_algs.modules import read_detectors_csv
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parent.parent
LOCAL_CONFIG = ROOT / "configs" / "local_onnx.toml"
TRACKML_CONFIG = ROOT / "configs" / "trackml.toml"
SEED = VALIDATION_SEED_MIN + 7070
STAGE_ORDER = ("features", "graph", "filter", "gnn", "building", "fitting")


def timed_round(config: Path, overrides: list[str], events: list[Event]) -> list[dict[str, float]]:
    """ms per stage (and ``total``) of each of ``events``, processed once each under the job options ``config`` with
    ``overrides`` by a fresh ``EventProcessor``, after it processed the first event once to warm up (sessions, the
    field table, the module layers, the fit's worker processes)."""
    options = load_job_options(config, overrides)
    with EventProcessor(options) as processor:
        processor.process(events[0])
        timings = [processor.process(event).timing_ms for event in events]
    return [timing | {"total": sum(timing.values())} for timing in timings]


def median_timing(rounds: list[list[dict[str, float]]]) -> dict[str, float]:
    """The median over ``rounds`` (each :func:`timed_round`'s result) of each event's ms per stage, averaged over the
    events."""
    stages = rounds[0][0].keys()
    per_event = [
        {stage: float(np.median([run[stage] for run in runs])) for stage in stages}
        for runs in zip(*rounds, strict=True)
    ]
    return {stage: float(np.mean([timing[stage] for timing in per_event])) for stage in stages}


def time_events(config: Path, overrides: list[str], events: list[Event], repeat: int) -> dict[str, float]:
    """Median ms per stage (and ``total``) of each event under the job options ``config`` with ``overrides`` over
    ``repeat`` rounds of :func:`timed_round`, averaged over ``events`` (one set of options alone: to compare two,
    alternate their rounds)."""
    return median_timing([timed_round(config, overrides, events) for _ in range(repeat)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=positive_int, default=2, help="simulated events per sample (default 2)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs per event (default 3)")
    add_real_trackml_argument(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    check_results_directory(parser)

    real_detectors = args.trackml / "detectors.csv.gz"
    modules = read_detectors_csv(real_detectors)
    full = args.trackml / "full"
    on_modules = SimulationConfig(geometry="modules", pileup=200.0)
    on_cylinders = SimulationConfig(pileup=200.0)
    field = load_job_options(TRACKML_CONFIG).magnetic_field()
    real_events = [read_event(full, event_id, modules=modules) for event_id in list_events(full)]
    samples = {
        "real full events": (TRACKML_CONFIG, [*args.overrides, f"detector.file='{real_detectors}'"], real_events),
        "real full events, links by their geometry alone": (
            TRACKML_CONFIG,
            [*args.overrides, f"detector.file='{real_detectors}'", "finding.building.score_weight=0"],
            real_events,
        ),
        "real full events, split tracks not merged": (
            TRACKML_CONFIG,
            [*args.overrides, f"detector.file='{real_detectors}'", "fitting.selection.merge_split=false"],
            real_events,
        ),
        "real full events, kept tracks not followed": (
            TRACKML_CONFIG,
            [*args.overrides, f"detector.file='{real_detectors}'", "fitting.selection.follow_tracks=false"],
            real_events,
        ),
        "real full events, trimming at most 3 hits": (
            TRACKML_CONFIG,
            [*args.overrides, f"detector.file='{real_detectors}'", "fitting.kalman.max_trimmed_hits=3"],
            real_events,
        ),
        "real full events, fit in one process": (
            TRACKML_CONFIG,
            [*args.overrides, f"detector.file='{real_detectors}'", "fitting.kalman.processes=1"],
            real_events,
        ),
        "real full events, fit in one process, every trimmed variant": (
            TRACKML_CONFIG,
            [
                *args.overrides,
                f"detector.file='{real_detectors}'",
                "fitting.kalman.processes=1",
                "fitting.kalman.min_trimmed_hits=3",
            ],
            real_events,
        ),
        "simulation on modules, pile-up 200": (
            TRACKML_CONFIG,
            list(args.overrides),
            [simulate_event(on_modules, SEED, event_id, field=field) for event_id in range(args.events)],
        ),
        "simulation on cylinders, pile-up 200": (
            LOCAL_CONFIG,
            list(args.overrides),
            [simulate_event(on_cylinders, SEED, event_id) for event_id in range(args.events)],
        ),
    }
    report: dict = {"repeat": args.repeat, "overrides": args.overrides, "samples": {}}
    rounds: dict[str, list] = {name: [] for name in samples}
    for _ in range(args.repeat):
        for name, (config, overrides, events) in samples.items():
            rounds[name].append(timed_round(config, overrides, events))
    for name, (config, _, events) in samples.items():
        timing = median_timing(rounds[name])
        hits = float(np.mean([len(event.spacepoints) for event in events]))
        report["samples"][name] = {"config": config.name, "events": len(events), "hits_per_event": hits,
                                   "timing_ms": timing}  # fmt: skip
        print(name, round(hits), {stage: round(value) for stage, value in timing.items()}, flush=True)

    stages = [stage for stage in STAGE_ORDER if stage in next(iter(report["samples"].values()))["timing_ms"]]
    lines = ["| sample | job options | events | hits/event | " + " | ".join(stages) + " | total (ms) |",
             "|---" * (len(stages) + 5) + "|"]  # fmt: skip
    for name, sample in report["samples"].items():
        timing = sample["timing_ms"]
        cells = " | ".join(f"{timing[stage]:.0f}" for stage in stages)
        lines.append(f"| {name} | `{sample['config']}` | {sample['events']} | {sample['hits_per_event']:.0f} | "
                     f"{cells} | {timing['total']:.0f} |")  # fmt: skip
    table = "\n".join(lines) + "\n"
    write_results("event_speed", report, table)
    print(table)
    return 0


if __name__ == "__main__":
    run_script(main)
