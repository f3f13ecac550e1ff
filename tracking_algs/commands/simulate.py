"""``trkx simulate``: write simulated events as TrackML CSV files."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

from inference_iface.checksums import file_sha256
from inference_iface.errors import ConfigError
from inference_iface.options import (
    describe_differences,
    option_differences,
    parse_override,
    structure,
    unstructure,
    with_overrides,
)
from tracking_algs.commands.arg_types import (
    existing_file,
    non_negative_float,
    non_negative_int,
    output_directory,
    positive_int,
)
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.io.trackml import list_events, write_event
from tracking_algs.magnetic_field import FieldConfig
from tracking_algs.modules import read_detectors_csv
from tracking_algs.simulation import SimulationConfig, check_setup, simulate_events

#: a ``--detector`` whose name matches is a module geometry (TrackML ``detectors.csv``), any other a detector TOML
MODULE_FILE = re.compile(r"\.csv(\.gz)?$")
NAME = "simulate"
#: The file in a ``trkx simulate`` output that records what its events are simulated with.
MANIFEST = "simulation.json"
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
    if args.detector is not None and modules is None and config.geometry == "modules":
        raise ConfigError(
            f"--detector {args.detector} is a cylinder description, which geometry=modules does not use; give a "
            "TrackML detectors.csv[.gz] for its modules, or no --detector for the built-in TrackML modules"
        )
    detector = Detector.from_toml(args.detector) if args.detector and modules is None else trackml_detector()
    if (args.field == "map") != (args.field_map is not None):
        raise ConfigError("--field map takes its field from --field-map FILE, and --field-map goes with --field map")
    field_config = FieldConfig(kind=args.field, map_file=str(args.field_map or ""))
    field = field_config.build(detector)
    check_setup(config, modules)
    recorded = {
        "seed": args.seed,
        "simulation": unstructure(config),
        "detector_sha256": file_sha256(args.detector) if args.detector else "built-in",
        "field": {"kind": args.field, "map_sha256": file_sha256(args.field_map) if args.field_map else ""},
    }
    claim_output(args.output, recorded)
    finished = 0
    with terminate_as_interrupt():
        try:
            for event in simulate_events(config, args.seed, args.events, detector, modules, field):
                write_event(args.output, event)  # whole or absent: an interrupted write removes the event's files
                finished += 1
                particles, hits = len(event.known_particles()), len(event.spacepoints)
                print(f"event {event.event_id}: {particles} particles, {hits} hits")
        except KeyboardInterrupt:
            kept = f"events 0 to {finished - 1} ({finished} of {args.events}) are" if finished else "no event is"
            print(f"trkx simulate: stopped early: interrupted; {kept} written whole in {args.output}, none "
                  "half-written; the same command writes the same files again", file=sys.stderr)  # fmt: skip
            return EXIT_STOPPED
    return 0


def claim_output(output: Path, recorded: dict[str, Any]) -> None:
    """Record what the events of ``output`` are simulated with (:data:`MANIFEST`: the seed, the simulation options and
    the SHA-256 of the detector and field files), or check that a record there matches; :class:`ConfigError`, before
    anything is written, when it does not (naming the options that differ) or when ``output`` holds events without a
    record. Writing events again with the same options (more of them, or after an interrupt) is allowed: event ``i``
    of a seed does not depend on the others."""
    path = output / MANIFEST
    if path.exists():
        try:
            before = json.loads(path.read_bytes())
        except ValueError as error:
            raise ConfigError(f"--output: {path} cannot be read ({error}); choose another --output") from None
        differences = option_differences(before, recorded)
        if differences:
            raise ConfigError(
                f"--output {output} holds events simulated with other options "
                f"({describe_differences(differences, 'there')}); simulate into another --output, or with the same "
                "options"
            )
        return
    if output.is_dir() and list_events(output):
        raise ConfigError(
            f"--output {output} holds events that trkx simulate did not record ({MANIFEST} is missing); mixing them "
            "with new ones would give a sample of unknown make: choose another --output"
        )
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
