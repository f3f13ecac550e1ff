"""``trkx simulate``: write simulated events as TrackML CSV files."""

from __future__ import annotations

import argparse
import functools
import re
import sys

from inference_iface.errors import ConfigError
from inference_iface.options import parse_override, structure, with_overrides
from tracking_algs.commands.arg_types import (
    existing_file,
    non_negative_float,
    non_negative_int,
    output_directory,
    positive_int,
)
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.io.trackml import write_event
from tracking_algs.magnetic_field import FieldConfig
from tracking_algs.modules import read_detectors_csv
from tracking_algs.simulation import SimulationConfig, simulate_events

#: a ``--detector`` whose name matches is a module geometry (TrackML ``detectors.csv``), any other a detector TOML
MODULE_FILE = re.compile(r"\.csv(\.gz)?$")
NAME = "simulate"
HELP = "simulate TrackML-like events (pile-up, truth) and write them as TrackML CSV files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``trkx simulate``."""
    parser.add_argument("--events", type=positive_int, required=True, help="number of events (≥ 1)")
    parser.add_argument("--pileup", type=non_negative_float,
                        help=f"mean pile-up, ≥ 0 (default {SimulationConfig().pileup:g})")  # fmt: skip
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed, ≥ 0; the same seed gives the same files")  # fmt: skip
    parser.add_argument("--output", type=output_directory, required=True,
                        help="directory for event*-{hits,truth,particles}.csv (and -cells.csv on modules)")  # fmt: skip
    parser.add_argument("--no-signal", action="store_true", help="pile-up only, no jet-like signal interaction")
    parser.add_argument("--detector", type=existing_file("detector file"),
                        help="a detector TOML (the cylinder description; default: the TrackML-like detector), "
                             "or a TrackML detectors.csv[.gz]: simulate on its modules (geometry=modules)")  # fmt: skip
    parser.add_argument("--field", choices=("uniform", "solenoid", "map"), default="uniform",
                        help="the field's shape: uniform (default), the 1.2 m × 6 m solenoid of "
                             "[detector.field] (docs/fitting.md), the detector's field at its centre, or the field "
                             "map of --field-map")  # fmt: skip
    parser.add_argument(
        "--field-map",
        type=existing_file("field map"),
        metavar="FILE",
        help="with --field map: a field map CSV (r, z, br, bz in mm and tesla, docs/fitting.md)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set a SimulationConfig field, e.g. --set noise_fraction=0 (repeatable)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Simulate ``--events`` events and write them into ``--output`` (every option is checked first). Ctrl-C or SIGTERM
    stops it with status 3, the events finished kept whole and none half-written."""
    modules = None
    given = {"pileup": "--pileup" if args.pileup is not None else "", "signal": "--no-signal" if args.no_signal else ""}
    for text in args.overrides:  # an option given twice, differently: which one is meant?
        key = ".".join(parse_override(text)[0])
        if given.get(key):
            raise ConfigError(f"--set {text} and {given[key]} both set {key}; give one of them")
    pileup = SimulationConfig().pileup if args.pileup is None else args.pileup
    defaults = {"pileup": pileup, "signal": not args.no_signal}
    if args.detector is not None and MODULE_FILE.search(str(args.detector)):
        modules = read_detectors_csv(args.detector)
        defaults["geometry"] = "modules"
    build = functools.partial(structure, cls=SimulationConfig)
    config = with_overrides(defaults, args.overrides, build, where="the command's arguments")
    if modules is not None and config.geometry != "modules":
        raise ConfigError(
            f"--detector {args.detector} is a module geometry, simulated with geometry=modules; "
            f"--set geometry={config.geometry} goes with a detector TOML (or none)"
        )
    detector = Detector.from_toml(args.detector) if args.detector and modules is None else trackml_detector()
    if (args.field == "map") != (args.field_map is not None):
        raise ConfigError("--field map takes its field from --field-map FILE, and --field-map goes with --field map")
    field = FieldConfig(kind=args.field, map_file=str(args.field_map or "")).build(detector)
    finished = 0
    with terminate_as_interrupt():
        try:
            for event in simulate_events(config, args.seed, args.events, detector, modules, field):
                write_event(args.output, event)  # whole or absent: an interrupted write removes the event's files
                finished += 1
                print(f"event {event.event_id}: {len(event.particles)} particles, {len(event.spacepoints)} hits")
        except KeyboardInterrupt:
            kept = f"events 0 to {finished - 1} ({finished} of {args.events}) are" if finished else "no event is"
            print(f"trkx simulate: stopped early: interrupted; {kept} written whole in {args.output}, none "
                  "half-written; the same command writes the same files again", file=sys.stderr)  # fmt: skip
            return EXIT_STOPPED
    return 0
