"""``trkx run CONFIG.toml [--input DIR | --simulate N] --output OUT [--set k=v ...]``: find, fit, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "run"
HELP = "find and fit tracks in TrackML CSV or simulated events; write tracks, fits, performance and plots"

#: Exit status when a backend stopped the job before the end (finished events are kept; use --resume).
EXIT_STOPPED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx run``."""
    parser.add_argument("config", type=Path, help="job options (TOML), e.g. configs/local_onnx.toml")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="directory of TrackML CSV events")
    source.add_argument("--simulate", type=int, metavar="N", help="simulate N events ([simulation] and [job] seed)")
    parser.add_argument("--output", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override an option"
    )
    parser.add_argument("--jobs", type=int, help="worker processes (default: [job] jobs)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted job in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the job; exit status 0 when every event was handled, 3 when a backend stopped it early."""
    # Imported here so that other trkx commands start without loading the tracking chain and matplotlib.
    from tracking_algs.job.report import print_summary, write_report
    from tracking_algs.job.runner import run_events
    from tracking_algs.job.sources import DirectorySource, SimulationSource
    from tracking_algs.job.store import ResultStore
    from tracking_algs.job_options import load_job_options

    options = load_job_options(args.config, args.overrides)
    detector = options.detector()
    if args.input is not None:
        source = DirectorySource(args.input, detector)
    else:
        count = args.simulate if args.simulate is not None else options.job.events
        source = SimulationSource(options.simulation, options.job.seed, count, detector)
    store = ResultStore(args.output)
    store.prepare({"options": options.to_dict(), "source": source.describe()}, resume=args.resume)
    summary = run_events(options, source, store, jobs=args.jobs or options.job.jobs, progress=not args.no_progress)
    report = write_report(store, options)
    print_summary(report, summary)
    if summary.stopped_by is not None:
        print(
            f"trkx run: stopped early by a backend error ({summary.stopped_by}); finished events are kept in "
            f"{args.output}; run again with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_STOPPED
    return 0
