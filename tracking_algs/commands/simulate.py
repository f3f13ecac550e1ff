"""``trkx simulate``: write simulated events as TrackML CSV files."""

from __future__ import annotations

import argparse
import functools
import re

from inference_iface.errors import ConfigError
from inference_iface.options import structure, with_overrides
from tracking_algs.commands.arg_types import (
    existing_file,
    non_negative_float,
    non_negative_int,
    output_directory,
    positive_int,
)
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
    parser.add_argument("--pileup", type=non_negative_float, default=SimulationConfig().pileup,
                        help="mean pile-up, ≥ 0 (default 200)")  # fmt: skip
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
    """Simulate ``--events`` events and write them into ``--output`` (every option is checked first)."""
    modules = None
    defaults = {"pileup": args.pileup, "signal": not args.no_signal}
    if args.detector is not None and MODULE_FILE.search(str(args.detector)):
        modules = read_detectors_csv(args.detector)
        defaults["geometry"] = "modules"
    build = functools.partial(structure, cls=SimulationConfig)
    config = with_overrides(defaults, args.overrides, build, where="the command's arguments")
    detector = Detector.from_toml(args.detector) if args.detector and modules is None else trackml_detector()
    if (args.field == "map") != (args.field_map is not None):
        raise ConfigError("--field map takes its field from --field-map FILE, and --field-map goes with --field map")
    field = FieldConfig(kind=args.field, map_file=str(args.field_map or "")).build(detector)
    for event in simulate_events(config, args.seed, args.events, detector, modules, field):
        write_event(args.output, event)
        print(f"event {event.event_id}: {len(event.particles)} particles, {len(event.spacepoints)} hits")
    return 0
