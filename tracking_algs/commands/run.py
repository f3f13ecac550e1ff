"""``trkx run CONFIG.toml [--input DIR | --simulate N] --output OUT [--set k=v ...] [--jobs N] [--scheduler ADDR]``:
find, fit, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import attrs

from inference_iface.errors import InferenceError
from tracking_algs.commands.arg_types import dask_scheduler, existing_file, output_directory, positive_int
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.errors import JobInputError, TrackingError, os_error_text

NAME = "run"
HELP = "find and fit tracks in TrackML CSV or simulated events; write tracks, fits, performance and plots"

#: Exit status when every event was processed.
EXIT_OK = 0
#: Exit status of a bad argument, job option or input, found before any work; nothing is written.
EXIT_BAD_INPUT = 2
# EXIT_STOPPED (3): the job stopped before the end: a backend stopped answering, it was interrupted (Ctrl-C,
# SIGTERM), a worker process died or the output could not be written (finished events are kept; use --resume).
#: Exit status when the job finished but some events (or all) failed; they are listed in performance.json.
EXIT_EVENTS_FAILED = 4

EPILOG = f"""\
exit status:
  {EXIT_OK}  every event was processed
  {EXIT_BAD_INPUT}  bad argument, job option or input (e.g. no events in --input), found before any work:
     one line on stderr names it, nothing is written to --output
  {EXIT_STOPPED}  stopped early: a backend stopped answering, Ctrl-C or SIGTERM, a worker process died, the
     Dask cluster was lost (its scheduler, or every worker for trkx.no-workers-timeout), or the output
     could not be written (a full disk): the finished events are kept and, where it can be
     written, the report of them; run again with --resume to continue
  {EXIT_EVENTS_FAILED}  the job finished but some events failed (all of them, possibly): the report of the
     others is written, performance.json lists the failed ones (failed_events); --resume retries them
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx run``."""
    parser.add_argument(
        "config", type=existing_file("job options file"), help="job options (TOML), e.g. configs/local_onnx.toml"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="directory of TrackML events (event*-hits.csv or .csv.gz, ...)")
    source.add_argument(
        "--simulate", type=positive_int, metavar="N", help="simulate N ≥ 1 events ([simulation] and [job] seed)"
    )
    parser.add_argument("--output", type=output_directory, required=True, help="output directory")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override an option"
    )
    parser.add_argument("--jobs", type=positive_int, help="worker processes, ≥ 1 (default: [job] jobs)")
    parser.add_argument(
        "--scheduler",
        type=dask_scheduler,
        metavar="ADDRESS",
        help='run the events on the Dask scheduler at tcp://HOST:PORT (implies [job] executor = "dask")',
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted job in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the job; the exit status is one of those in :data:`EPILOG`.

    Every argument, option and the input are checked before the output directory is touched.
    """
    # Imported here so that other trkx commands start without loading the tracking chain, and the report (with
    # matplotlib) once the job has run, so that a bad option or input is told at once.
    from tracking_algs.job.dask_setup import load_dask_executor
    from tracking_algs.job.runner import run_events
    from tracking_algs.job.sources import DirectorySource, EventSource, SimulationSource
    from tracking_algs.job.store import OPTIONS_FILE, ResultStore
    from tracking_algs.job_options import load_job_options

    options = load_job_options(args.config, args.overrides)
    if args.scheduler is not None:
        options = attrs.evolve(options, job=attrs.evolve(options.job, executor="dask", scheduler=args.scheduler))
    if options.job.executor == "dask":
        load_dask_executor()  # a missing extra is found before anything is written
    detector = options.cylinder_detector()
    if args.input is not None:
        source: EventSource = DirectorySource.open(
            args.input, detector, option="--input", modules=options.module_geometry()
        )
    else:
        if options.detector.file and options.simulation.geometry != "modules":
            raise JobInputError(
                f"[detector] file {options.detector.file!r} is a module geometry, and the simulation runs on "
                'cylinders; set [simulation] geometry = "modules" to simulate on its modules, or read events with '
                "--input"
            )
        count = args.simulate if args.simulate is not None else options.job.events
        source = SimulationSource(
            options.simulation, options.job.seed, count, detector, options.module_geometry(), options.magnetic_field()
        )
    created, new_job = not args.output.exists(), not (args.output / OPTIONS_FILE).exists()
    with ResultStore(args.output) as store, terminate_as_interrupt():  # the store holds the output's lock
        # how the job runs (workers, executor) is left out: a resumed job may run otherwise, with the same results;
        # the files it reads are in, by path and content: a resume must read the same
        recorded = {
            "options": options.to_dict(execution=False),
            "source": source.describe(),
            "files": options.files_read(),
        }
        store.prepare(recorded, resume=args.resume)
        try:
            summary = run_events(options, source, store, jobs=args.jobs or options.job.jobs,
                                 progress=not args.no_progress)  # fmt: skip
        except (InferenceError, TrackingError):  # the job could not start (e.g. a model file that cannot be loaded)
            if new_job:
                store.discard_if_unused(remove_output=created)
            raise
        from tracking_algs.job.report import print_summary, write_report

        report = None  # where the report cannot be written, the fragments are whole: --resume writes it again
        try:
            report = write_report(store, options, summary.processed + summary.skipped)  # the input's, finished
        except OSError as error:
            summary = attrs.evolve(summary, stopped_by=summary.stopped_by
                                   or f"cannot write the report ({os_error_text(error)})")  # fmt: skip
        except KeyboardInterrupt:
            summary = attrs.evolve(summary, stopped_by=summary.stopped_by or "interrupted while writing the report")
    if report is not None:
        print_summary(report, summary)
    if summary.stopped_by is not None:
        print(
            f"trkx run: stopped early: {summary.stopped_by}; the finished events are kept in {args.output}; run "
            "again with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_STOPPED
    if summary.failed:
        total = len(summary.processed) + len(summary.skipped) + len(summary.failed)
        which = f"{len(summary.failed)} of {total} events"
        if len(summary.failed) == total:
            which = "the only event" if total == 1 else f"all {total} events"
        print(
            f"trkx run: {which} failed (see failed_events in {args.output / 'performance.json'}); run again with "
            "--resume to retry them",
            file=sys.stderr,
        )
        return EXIT_EVENTS_FAILED
    return EXIT_OK
