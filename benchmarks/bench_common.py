"""What every benchmark script shares: interleaved timing, writing ``results/NAME.{json,md}``, the argument types
that check the command line before any work, and the entry point that stops quietly on Ctrl-C.

The JSON records the machine (CPU, cores, memory, package versions) and the load average when the
figures were taken, since the project's machines may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from tracking_algs.commands.arg_types import existing_directory, output_directory
from tracking_algs.commands.bench import machine_description
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.worker_lifetime import end_with_parent, leave_interrupts_to_parent

RESULTS = Path(__file__).resolve().parent / "results"
#: The real TrackML data beside the clone (``../shared/trackml``): the default of the scripts that read it.
REAL_TRACKML = Path(__file__).resolve().parents[2] / "shared" / "trackml"


def add_real_trackml_argument(
    parser: argparse.ArgumentParser, flag: str = "--trackml", help: str = "real data"
) -> None:
    """The argument naming the real TrackML data directory (default :data:`REAL_TRACKML`), checked to exist as the
    command line is read."""
    parser.add_argument(flag, type=existing_directory("real TrackML data"), default=str(REAL_TRACKML), help=help)


def time_interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds per call for each variant; every round calls each variant once, order rotated per round,
    so drifts of a shared machine hit all variants alike."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: np.empty(rounds) for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name][index] = time.perf_counter() - start
    return times


def check_results_directory(parser: argparse.ArgumentParser, output_dir: Path = RESULTS) -> None:
    """Stop with ``parser``'s error (exit status 2) before any work when ``output_dir`` cannot take the results."""
    try:
        output_directory(str(output_dir))
    except argparse.ArgumentTypeError as error:
        parser.error(f"the results cannot be written: {error}")


def non_finite_figure(value: Any, where: str = "") -> str | None:
    """The key path (``results.pileup_20.edges``) of the first number in ``value`` (nested dicts and lists) that is
    NaN or infinite; None when every number is finite."""
    if isinstance(value, dict):
        items: Any = ((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return where or "the report" if real and not math.isfinite(value) else None
    return next((found for key, item in items if (found := non_finite_figure(item, key)) is not None), None)


def write_results(name: str, report: dict[str, Any], table: str, output_dir: Path = RESULTS) -> None:
    """Write ``NAME.json`` (``report`` plus machine and load) and ``NAME.md`` (``table``) into ``output_dir``; a
    report holding a NaN or infinite figure raises ``ValueError`` naming it, the results there left as they were."""
    bad = non_finite_figure(report)
    if bad is not None:
        raise ValueError(f"{name}: {bad} is not a finite number; the results in {output_dir} are left as they were")
    output_dir.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": name, "machine": machine_description(), "load_average_1min": os.getloadavg()[0], **report}
    (output_dir / f"{name}.json").write_text(json.dumps(full, indent=2) + "\n")
    (output_dir / f"{name}.md").write_text(table)


def start_worker_quietly() -> None:
    """First thing in a benchmark's worker process: end with the script, and leave Ctrl-C and SIGTERM, which reach the
    script's whole process group, to the script (:func:`run_script`), where the worker would print a traceback of its
    own. Start the workers within :func:`~tracking_algs.worker_lifetime.sigint_blocked`."""
    end_with_parent()
    leave_interrupts_to_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker has the script's handler, which raises


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; Ctrl-C or SIGTERM (which ``trkx bench`` forwards) exits with status 3 quietly,
    without Python's traceback: ``trkx bench`` says that the benchmark stopped early."""
    with terminate_as_interrupt():
        try:
            status = main()
        except KeyboardInterrupt:
            status = EXIT_STOPPED
    sys.exit(status)
