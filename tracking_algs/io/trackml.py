"""TrackML CSV events: ``event{event_id:09d}-hits.csv``, ``-truth.csv``, ``-particles.csv`` and ``-cells.csv``.

Columns and dtypes follow the TrackML challenge, so its files read unchanged, gzipped (``.csv.gz``, as the
challenge distributes them) or not; extra columns (``particle_type``) are ignored, and so are the cells unless
asked for:

- hits: hit_id (int64), x, y, z (float64, mm), volume_id, layer_id, module_id (int64)
- truth: hit_id, particle_id (int64, 0 = noise), tx, ty, tz, tpx, tpy, tpz, weight (float64)
- particles: particle_id (int64), vx, vy, vz, px, py, pz (float64), q, nhits (int64)
- cells: hit_id, ch0, ch1 (int64), value (float64)

Truth, particles and cells are optional (real data has neither truth nor particles). The per-hit measurement
error ``sigma`` is not a TrackML column. Without a module geometry reading fills it from the cylinder detector's
per-layer resolution by (volume_id, layer_id). With one (:class:`~tracking_algs.modules.ModuleGeometry`, e.g.
the challenge's ``detectors.csv``) it is each hit's own module's pitch / √12 along the module's local u and v
(``ModuleGeometry.resolution``): the errors the fitter uses on the module's plane, and what the module simulation
gives its hits (there from each hit's cluster, :mod:`tracking_algs.simulation.cluster_errors`). On the TrackML
modules u lies along r·φ and v along z (barrel) or r (endcaps), to within the barrel modules' 8–8.6° tilt and,
away from an endcap module's centre line, up to 22°; the finder reads them as its (r·φ, z) or (r·φ, r) errors.
The cells of real hits do not enter: the simulation's cluster errors describe clusters without charge
fluctuations (docs/simulation.md, "Reading real events").
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tracking_algs.errors import EventFormatError
from tracking_algs.event import ID_LIMITS, MAX_COORDINATE, Cells, Event, Particles, Spacepoints, Truth
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.io.atomic import interrupts_held
from tracking_algs.io.csv_table import check_rows, read_table, write_table

if TYPE_CHECKING:  # tracking_algs.modules reads its files through tracking_algs.io: no import at run time
    from tracking_algs.modules.geometry import ModuleGeometry

_I, _F = "int64", "float64"
HITS_COLUMNS = {"hit_id": _I, "x": _F, "y": _F, "z": _F, "volume_id": _I, "layer_id": _I, "module_id": _I}
TRUTH_COLUMNS = {"hit_id": _I, "particle_id": _I, "tx": _F, "ty": _F, "tz": _F, "tpx": _F, "tpy": _F, "tpz": _F,
                 "weight": _F}  # fmt: skip
PARTICLES_COLUMNS = {"particle_id": _I, "vx": _F, "vy": _F, "vz": _F, "px": _F, "py": _F, "pz": _F, "q": _I,
                     "nhits": _I}  # fmt: skip
CELLS_COLUMNS = {"hit_id": _I, "ch0": _I, "ch1": _I, "value": _F}
_HITS_FILE = re.compile(r"^event(\d{9,})-hits\.csv(?:\.gz)?$")
#: What :func:`list_events` looks for, in words (for messages).
EVENT_FILES = "eventNNNNNNNNN-hits.csv or eventNNNNNNNNN-hits.csv.gz"


def event_path(directory: str | Path, event_id: int, kind: str) -> Path:
    """Path of one event file as written: ``DIR/event{event_id:09d}-{kind}.csv`` (kind: hits, cells, truth or
    particles)."""
    return Path(directory) / f"event{event_id:09d}-{kind}.csv"


def find_event_file(directory: str | Path, event_id: int, kind: str) -> Path | None:
    """The existing file of one event part: ``...-{kind}.csv`` or ``...-{kind}.csv.gz``; None when neither exists.

    Raises :class:`EventFormatError` when both exist (which one to read would be a guess).
    """
    plain = event_path(directory, event_id, kind)
    gzipped = plain.with_name(plain.name + ".gz")
    found = [path for path in (plain, gzipped) if path.is_file()]
    if len(found) == 2:
        raise EventFormatError(f"{plain}: both {plain.name} and {gzipped.name} exist; keep one of them")
    return found[0] if found else None


def list_events(directory: str | Path) -> list[int]:
    """Sorted ids of the events in ``directory`` that have a hits file (``.csv`` or ``.csv.gz``) named as
    :func:`event_path` names it (``event000000001-hits.csv``, not ``event1-hits.csv``): those :func:`read_event`
    reads.  Raises :class:`OSError` when the directory cannot be read (``Path.glob`` would find nothing instead).
    """
    if not isinstance(directory, (str, os.PathLike)):  # None would list the working directory, an int a descriptor
        raise TypeError(f"list_events: directory must be a path, got {directory!r}")
    with os.scandir(directory) as entries:
        found = [match for entry in entries if (match := _HITS_FILE.match(entry.name)) and entry.is_file()]
    return sorted({int(match.group(1)) for match in found if match.group(1) == f"{int(match.group(1)):09d}"})


def write_event(directory: str | Path, event: Event) -> None:
    """Write the event's hits (and truth, particles and cells when present) into ``directory`` (created if needed),
    in place of every file the event's id had there (``.csv`` or ``.csv.gz``: a part the event lacks is removed, so
    that no other event's truth is read back as this one's). Floats are written exactly (the shortest decimal that
    reads back to the same float64); ``sigma`` is not written. The tables are written under temporary names first
    (``NAME.tmp``) and put in place once all are written, the hits file last, with interrupts held: a write that fails
    or is interrupted (a full disk, Ctrl-C, a column that cannot be written) leaves the directory as it was, the
    event's earlier files included; only a file that cannot be put in place (a directory of its name) costs the
    event's earlier files, and leaves none of its own. An event without hits, which :func:`read_event` would refuse, is
    refused before anything is written, with an :class:`EventFormatError` (the ids and coordinates it refuses, the
    :class:`~tracking_algs.event.Spacepoints` refuse when they are made)."""
    _check_writable(event)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tables = {"hits": (event.spacepoints, HITS_COLUMNS), "truth": (event.truth, TRUTH_COLUMNS),
              "particles": (event.particles, PARTICLES_COLUMNS), "cells": (event.cells, CELLS_COLUMNS)}  # fmt: skip
    paths = {kind: event_path(directory, event.event_id, kind) for kind, (columns, _) in tables.items()
             if columns is not None}  # fmt: skip
    written: list[Path] = []
    placed: list[Path] = []
    try:
        for kind, path in paths.items():
            columns, names = tables[kind]
            written.append(path.with_name(path.name + ".tmp"))
            write_table(written[-1], {name: getattr(columns, name) for name in names})
        with interrupts_held():
            for kind in tables:
                plain = event_path(directory, event.event_id, kind)
                for earlier in (plain, plain.with_name(plain.name + ".gz")):
                    if earlier != paths.get(kind):
                        earlier.unlink(missing_ok=True)
            for temporary, path in reversed(list(zip(written, paths.values(), strict=True))):  # the hits file last
                os.replace(temporary, path)
                placed.append(path)
    except BaseException:
        for path in [*written, *placed]:  # a file put in place before one that could not be (a directory in the way)
            with contextlib.suppress(OSError):  # a path that is a directory, say, is left as it is
                path.unlink(missing_ok=True)
        raise


def _check_writable(event: Event) -> None:
    """Refuse (:class:`EventFormatError`) an event without hits, which :func:`read_event` refuses in a hits file (the
    :class:`Spacepoints` refuse the ids and coordinates it refuses when they are made)."""
    if not len(event.spacepoints):
        raise EventFormatError(f"event {event.event_id} has no hits; a hits file needs at least one")


def read_event(
    directory: str | Path,
    event_id: int,
    detector: Detector | None = None,
    modules: ModuleGeometry | None = None,
    cells: bool = False,
) -> Event:
    """Read one event (each file ``.csv`` or ``.csv.gz``); truth and particles are ``None`` when their files are
    absent, and so are the cells unless ``cells`` (then read when the file exists).

    Each hit's ``sigma``: with ``modules``, the pitch / √12 of the hit's own module along its local u and v (the
    module docstring); otherwise from the surface of ``detector`` (default :func:`trackml_detector`) with the
    hit's (volume_id, layer_id).
    Raises :class:`EventFormatError` naming the file, row and column for a missing file or column, an
    unparsable value, a truncated row, a NaN coordinate or one beyond float32's range, duplicate hit ids, an event
    without hits, an id outside [0, :data:`~tracking_algs.event.ID_LIMITS`), an unknown (volume_id, layer_id)
    (without ``modules``) or (volume_id, layer_id, module_id) (with ``modules``), truth that does not cover the
    same hits, or truth of a particle (a particle_id other than 0) that the particles file does not have; or cells
    of a hit that is not in the hits file.
    """
    hits_path = find_event_file(directory, event_id, "hits")
    if hits_path is None:
        raise EventFormatError(f"{event_path(directory, event_id, 'hits')}: no such hits file (nor .csv.gz)")
    hits = read_table(hits_path, HITS_COLUMNS)
    if not len(hits["hit_id"]):
        raise EventFormatError(f"{hits_path}: event {event_id} has no hits")
    check_rows(hits_path, hits, {name: (hits[name] >= 0) & (hits[name] < limit) for name, limit in ID_LIMITS.items()},
               {name: f"an id in [0, {limit})" for name, limit in ID_LIMITS.items()})  # fmt: skip
    check_rows(hits_path, hits, {name: np.abs(hits[name]) <= MAX_COORDINATE for name in "xyz"},
               f"a coordinate within float32's range (|value| ≤ {MAX_COORDINATE:.6g} mm; the tracking computes "
               "in float32)")  # fmt: skip
    _check_unique(hits_path, hits["hit_id"], "hit_id")
    if modules is None:
        sigma = _resolutions(hits_path, hits, detector or trackml_detector())
    else:
        sigma = modules.resolution(_module_rows(hits_path, hits, modules))
    spacepoints = Spacepoints(**hits, sigma=sigma)

    truth = None
    truth_table: dict[str, np.ndarray] = {}  # in the file's row order, for messages naming a row
    truth_path = find_event_file(directory, event_id, "truth")
    if truth_path is not None:
        truth_table = read_table(truth_path, TRUTH_COLUMNS)
        _check_unique(truth_path, truth_table["hit_id"], "hit_id")
        order = _align(truth_path, truth_table["hit_id"], spacepoints.hit_id)
        truth = Truth(**{name: values[order] for name, values in truth_table.items()})

    particles = None
    particles_path = find_event_file(directory, event_id, "particles")
    if particles_path is not None:
        table = read_table(particles_path, PARTICLES_COLUMNS)
        _check_unique(particles_path, table["particle_id"], "particle_id")
        particles = Particles(**table)
        if truth_path is not None:  # a hit's particle is one of the particles, or none (noise)
            ids = truth_table["particle_id"]
            check_rows(truth_path, truth_table, {"particle_id": (ids == 0) | np.isin(ids, particles.particle_id)},
                       f"0 (noise) or a particle_id of {particles_path.name}")  # fmt: skip

    clusters = None
    cells_path = find_event_file(directory, event_id, "cells") if cells else None
    if cells_path is not None:
        table = read_table(cells_path, CELLS_COLUMNS)
        known = np.isin(table["hit_id"], spacepoints.hit_id)
        if not known.all():
            row = int(np.argmin(known)) + 1
            raise EventFormatError(f"{cells_path}: row {row} (line {row + 1}), column 'hit_id': hit_id "
                                   f"{table['hit_id'][row - 1]} is not in the hits")  # fmt: skip
        clusters = Cells(**table)
    return Event(event_id=event_id, spacepoints=spacepoints, truth=truth, particles=particles, cells=clusters)


def _check_unique(path: Path, values: np.ndarray, column: str) -> None:
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        value = values[first[counts > 1][0]]
        rows = np.flatnonzero(values == value)[:2] + 1
        raise EventFormatError(
            f"{path}: row {rows[1]} (line {rows[1] + 1}), column {column!r}: duplicate value {value} "
            f"(first at row {rows[0]})"
        )


def _align(truth_path: Path, truth_ids: np.ndarray, hit_ids: np.ndarray) -> np.ndarray:
    """Row order that puts truth rows in the order of the hits; every hit needs exactly one truth row."""
    order = np.argsort(truth_ids)
    position = np.searchsorted(truth_ids, hit_ids, sorter=order)
    position = np.minimum(position, len(order) - 1) if len(order) else position
    found = len(order) > 0
    matched = truth_ids[order[position]] == hit_ids if found else np.zeros(len(hit_ids), bool)
    if not matched.all() or len(truth_ids) != len(hit_ids):
        if not matched.all():
            missing = hit_ids[~matched][0]
            raise EventFormatError(f"{truth_path}: column 'hit_id': no truth row for hit_id {missing}")
        extra = np.setdiff1d(truth_ids, hit_ids)[0]
        row = int(np.flatnonzero(truth_ids == extra)[0]) + 1
        raise EventFormatError(f"{truth_path}: row {row} (line {row + 1}), column 'hit_id': hit_id {extra} "
                               "is not in the hits file")  # fmt: skip
    return order[position]


def _resolutions(path: Path, hits: dict[str, np.ndarray], detector: Detector) -> np.ndarray:
    """Per-hit local resolutions [N, 2] looked up by (volume_id, layer_id)."""
    known = {(s.volume_id, s.layer_id): s.resolution for s in detector.surfaces}
    keys = np.array(sorted(known), dtype=np.int64).reshape(-1, 2)
    table = np.array([known[tuple(key)] for key in keys.tolist()], dtype=np.float64).reshape(-1, 2)
    stride = int(max(keys[:, 1].max(), hits["layer_id"].max()) + 1) if len(keys) else 1
    code = keys[:, 0] * stride + keys[:, 1]
    wanted = hits["volume_id"] * stride + hits["layer_id"]
    index = np.minimum(np.searchsorted(code, wanted), len(code) - 1)
    unknown = code[index] != wanted
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0]) + 1
        raise EventFormatError(
            f"{path}: row {row} (line {row + 1}), columns 'volume_id','layer_id': "
            f"({hits['volume_id'][row - 1]}, {hits['layer_id'][row - 1]}) is not a surface of the detector"
        )
    return table[index]


def _module_rows(path: Path, hits: dict[str, np.ndarray], modules: ModuleGeometry) -> np.ndarray:
    """Each hit's row in ``modules``; a hit on a module ``modules`` does not have is an error naming it."""
    rows = modules.lookup(hits["volume_id"], hits["layer_id"], hits["module_id"])
    if (rows < 0).any():
        row = int(np.flatnonzero(rows < 0)[0]) + 1
        triple = (hits["volume_id"][row - 1], hits["layer_id"][row - 1], hits["module_id"][row - 1])
        raise EventFormatError(
            f"{path}: row {row} (line {row + 1}), columns 'volume_id','layer_id','module_id': module "
            f"(volume {triple[0]}, layer {triple[1]}, module {triple[2]}) is not in the module geometry"
        )
    return rows
