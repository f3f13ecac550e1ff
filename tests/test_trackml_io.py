"""TrackML CSV reading and writing: exact round trip and the documented errors for bad files."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import attrs
import numpy as np
import pytest
from real_trackml import FULL, SAMPLE, needs_real_trackml

from tracking_algs.errors import EventFormatError
from tracking_algs.geometry import trackml_detector
from tracking_algs.io.csv_table import read_table, write_table
from tracking_algs.io.trackml import event_path, list_events, read_event, write_event
from tracking_algs.simulation import SimulationConfig, simulate_event

SMALL = SimulationConfig(pileup=3, signal=True, noise_fraction=0.1)


@pytest.fixture(scope="module")
def event():
    return simulate_event(SMALL, seed=11, event_id=7)


@pytest.fixture
def written(tmp_path, event) -> Path:
    write_event(tmp_path, event)
    return tmp_path


def _assert_columns_equal(a, b) -> None:
    for field in attrs.fields(type(a)):
        left, right = getattr(a, field.name), getattr(b, field.name)
        assert left.dtype == right.dtype, field.name
        assert np.array_equal(left, right), field.name


def test_round_trip_is_exact(written, event):
    back = read_event(written, 7)
    assert back.event_id == 7
    for part in ("spacepoints", "truth", "particles"):
        _assert_columns_equal(getattr(event, part), getattr(back, part))


def test_file_names_columns_and_listing(written):
    assert list_events(written) == [7]
    names = sorted(p.name for p in written.iterdir())
    assert names == ["event000000007-hits.csv", "event000000007-particles.csv", "event000000007-truth.csv"]
    headers = {name: (written / name).read_text().splitlines()[0] for name in names}
    assert headers["event000000007-hits.csv"] == "hit_id,x,y,z,volume_id,layer_id,module_id"
    assert headers["event000000007-truth.csv"] == "hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight"
    assert headers["event000000007-particles.csv"] == "particle_id,vx,vy,vz,px,py,pz,q,nhits"


def test_hits_without_truth(tmp_path, event):
    write_event(tmp_path, attrs.evolve(event, truth=None, particles=None))
    back = read_event(tmp_path, 7)
    assert back.truth is None
    assert back.particles is None
    _assert_columns_equal(event.spacepoints, back.spacepoints)
    with pytest.raises(ValueError, match="event 7 has no truth; a truth file is needed here"):
        back.known_truth()
    with pytest.raises(ValueError, match="event 7 has no particles; a particles file is needed here"):
        back.known_particles()
    assert event.known_truth() is event.truth
    assert event.known_particles() is event.particles


def test_sigma_comes_from_the_detector(written):
    back = read_event(written, 7)
    resolution = {(s.volume_id, s.layer_id): s.resolution for s in trackml_detector().surfaces}
    for row in (0, len(back.spacepoints) // 2, len(back.spacepoints) - 1):
        key = (back.spacepoints.volume_id[row], back.spacepoints.layer_id[row])
        assert tuple(back.spacepoints.sigma[row]) == resolution[key]


def test_truth_in_another_order_is_aligned(written, event):
    path = event_path(written, 7, "truth")
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *reversed(rows)]) + "\n")
    back = read_event(written, 7)
    _assert_columns_equal(event.truth, back.truth)


def _edit(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[line] = edit(lines[line])
    path.write_text("\n".join(lines) + "\n")


def _set_field(line: str, column: int, value: str) -> str:
    fields = line.split(",")
    fields[column] = value
    return ",".join(fields)


def _raises(directory: Path, *fragments: str) -> None:
    with pytest.raises(EventFormatError) as info:
        read_event(directory, 7)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_missing_column(written):
    path = event_path(written, 7, "hits")
    _edit(path, 0, lambda line: line.replace("layer_id", "layer"))
    _raises(written, str(path), "missing column(s) layer_id")


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_column_named_twice_is_refused(written, gzipped):
    """Which of two ``x`` columns holds the coordinate would be a guess."""
    path = event_path(written, 7, "hits")
    lines = path.read_text().splitlines()
    text = "\n".join([lines[0] + ",x"] + [line + ",0.0" for line in lines[1:]]) + "\n"
    path.unlink()
    if gzipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    _raises(written, str(path), "the header names column(s) x more than once")


def test_nan_coordinate(written):
    path = event_path(written, 7, "hits")
    _edit(path, 5, lambda line: _set_field(line, 2, "nan"))
    _raises(written, str(path), "row 5 (line 6)", "column 'y'", "not a finite number")


def test_unparsable_value(written):
    path = event_path(written, 7, "truth")
    _edit(path, 3, lambda line: _set_field(line, 1, "abc"))
    _raises(written, str(path), "row 3 (line 4)", "column 'particle_id'", "'abc' is not a valid int64")


def test_duplicate_hit_id(written):
    path = event_path(written, 7, "hits")
    _edit(path, 4, lambda line: _set_field(line, 0, "2"))
    _raises(written, str(path), "row 4 (line 5)", "column 'hit_id'", "duplicate value 2", "first at row 2")


@pytest.mark.parametrize("keep", [3, 6])
def test_truncated_row(written, keep):
    path = event_path(written, 7, "hits")
    _edit(path, 9, lambda line: ",".join(line.split(",")[:keep]))
    _raises(written, str(path), "row 9 (line 10)", "truncated row, expected 7 fields, found " + str(keep))


def test_event_without_hits(written):
    path = event_path(written, 7, "hits")
    path.write_text(path.read_text().splitlines()[0] + "\n")
    _raises(written, str(path), "has no hits")


def test_empty_file(written):
    path = event_path(written, 7, "particles")
    path.write_text("")
    _raises(written, str(path), "empty file")


def test_missing_hits_file(tmp_path):
    _raises(tmp_path, "event000000007-hits.csv", "no such hits file")


def test_unknown_surface(written):
    path = event_path(written, 7, "hits")
    _edit(path, 2, lambda line: _set_field(line, 4, "99"))
    _raises(written, str(path), "row 2 (line 3)", "'volume_id','layer_id'", "(99,")


@pytest.mark.parametrize(
    ("column", "value", "limit"),
    [(5, "-1", 1_000_000), (4, "-7", 1_000), (4, "1000", 1_000), (5, "9223372036854775807", 1_000_000),
     (6, "1000000", 1_000_000)],
)  # fmt: skip
def test_an_id_outside_the_layer_and_module_keys_is_refused(written, column, value, limit):
    """Ids are ≥ 0 and within what ``layer_key`` / ``module_key`` hold: (8, -1) is not taken for another layer
    (the key of (7, 14) in the surface lookup), and a huge id neither overflows nor blames another row."""
    path = event_path(written, 7, "hits")
    _edit(path, 6, lambda line: _set_field(line, column, value))
    name = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")[column]
    _raises(written, f"{path}: row 6 (line 7), column {name!r}: {value} is not an id in [0, {limit})")


@pytest.mark.parametrize("value", ["1e300", "1e39", "-3.5e38"])
def test_a_coordinate_beyond_float32_is_refused(written, value):
    path = event_path(written, 7, "hits")
    _edit(path, 4, lambda line: _set_field(line, 2, value))
    _raises(written, f"{path}: row 4 (line 5), column 'y': {float(value)} is not a coordinate within float32's range")


def test_truth_missing_a_hit(written):
    path = event_path(written, 7, "truth")
    lines = path.read_text().splitlines()
    removed = lines.pop(4)
    path.write_text("\n".join(lines) + "\n")
    _raises(written, str(path), f"no truth row for hit_id {removed.split(',')[0]}")


def test_truth_of_a_particle_the_particles_file_lacks_is_refused(written):
    path = event_path(written, 7, "truth")
    _edit(path, 3, lambda line: _set_field(line, 1, "123456789"))
    _raises(written, f"{path}: row 3 (line 4), column 'particle_id': 123456789 is not 0 (noise) or a particle_id of "
                     "event000000007-particles.csv")  # fmt: skip


def test_an_all_noise_event_without_particles_reads(written, event):
    """Truth of noise hits only, and a particles file of only its header: an event without particles."""
    truth, particles = event_path(written, 7, "truth"), event_path(written, 7, "particles")
    header, *rows = truth.read_text().splitlines()
    truth.write_text("\n".join([header, *(_set_field(row, 1, "0") for row in rows)]) + "\n")
    particles.write_text(particles.read_text().splitlines()[0] + "\n")
    back = read_event(written, 7)
    assert len(back.particles) == 0
    assert not back.truth.particle_id.any()
    particles.write_text(particles.read_text() + "5,0,0,0,1,0,0,1,0\n")  # a particle without hits is allowed
    assert len(read_event(written, 7).particles) == 1


def test_cells_of_an_unknown_hit(written):
    path = event_path(written, 7, "cells")
    path.write_text("hit_id,ch0,ch1,value\n1,3,4,0.5\n99999,3,4,0.5\n")
    assert read_event(written, 7).cells is None  # not asked for: not read
    with pytest.raises(EventFormatError, match=r"row 2 \(line 3\), column 'hit_id': hit_id 99999 is not in the hits"):
        read_event(written, 7, cells=True)


def test_error_message_names_file_row_and_column(written):
    path = event_path(written, 7, "particles")
    _edit(path, 1, lambda line: _set_field(line, 4, "inf"))
    with pytest.raises(EventFormatError, match=re.escape(f"{path}: row 1 (line 2), column 'px'")):
        read_event(written, 7)


# --- gzipped events, as the TrackML challenge distributes them ------------------------------------------------------


def _gzip_all(directory: Path) -> None:
    for path in sorted(directory.glob("*.csv")):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


def test_gzipped_event_reads_exactly_like_the_plain_one(written, event):
    _gzip_all(written)
    assert sorted(p.name for p in written.iterdir()) == [
        "event000000007-hits.csv.gz",
        "event000000007-particles.csv.gz",
        "event000000007-truth.csv.gz",
    ]
    assert list_events(written) == [7]
    back = read_event(written, 7)
    for part in ("spacepoints", "truth", "particles"):
        _assert_columns_equal(getattr(event, part), getattr(back, part))


def test_plain_and_gzipped_files_of_one_event_may_mix(written, event):
    path = event_path(written, 7, "truth")
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    _assert_columns_equal(event.truth, read_event(written, 7).truth)


def test_extra_columns_and_other_files_are_ignored(written, event):
    path = event_path(written, 7, "particles")
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join(["particle_id,particle_type," + header.split(",", 1)[1]]
                              + [row.replace(",", ",211,", 1) for row in rows]) + "\n")  # fmt: skip
    (written / "event000000007-cells.csv.gz").write_bytes(gzip.compress(b"hit_id,ch0,ch1,value\n1,2,3,0.5\n"))
    _assert_columns_equal(event.particles, read_event(written, 7).particles)
    assert list_events(written) == [7]


def test_only_files_named_as_written_are_listed(written, event):
    """``event{event_id:09d}-hits.csv``, as TrackML and :func:`event_path` name them: ``event1-hits.csv`` is not an
    event (:func:`read_event` would not find it), a 10-digit id beyond 999999999 is."""
    hits = event_path(written, 7, "hits")
    for name in ("event7-hits.csv", "event0000000008-hits.csv.gz", "event00000009-hits.csv"):
        (written / name).write_bytes(hits.read_bytes())
    hits.rename(written / "event1000000000-hits.csv")
    (written / "event000000011-hits.csv").mkdir()  # a directory is not a file of an event
    assert list_events(written) == [1_000_000_000]
    assert len(read_event(written, 1_000_000_000).spacepoints) == len(event.spacepoints)


def test_an_event_in_both_forms_is_refused(written):
    path = event_path(written, 7, "hits")
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    assert list_events(written) == [7]
    _raises(written, "both event000000007-hits.csv and event000000007-hits.csv.gz exist")


def test_a_broken_gzip_file_is_named(written):
    path = event_path(written, 7, "truth")
    gzipped = path.with_name(path.name + ".gz")
    gzipped.write_bytes(path.read_bytes())  # not compressed
    path.unlink()
    _raises(written, str(gzipped), "not a gzip file")
    gzipped.write_bytes(gzip.compress(b"hit_id,particle_id\n" * 1000)[:50])  # cut short
    _raises(written, str(gzipped), "truncated gzip file")
    damaged = bytearray(gzip.compress(b"hit_id,particle_id\n" * 1000, compresslevel=0))
    damaged[13] ^= 0xFF  # the first stored block's length check fails: a zlib error within the gzip file
    gzipped.write_bytes(bytes(damaged))
    _raises(written, f"{gzipped}: cannot read: damaged gzip file (Error -3 while decompressing data")


@pytest.mark.parametrize(("column", "value"), [(4, "7.5"), (5, "2.0"), (6, "1e3"), (0, "3.25")])
def test_an_integer_column_with_a_fraction_is_an_error(written, column, value):
    path = event_path(written, 7, "hits")
    _edit(path, 6, lambda line: _set_field(line, column, value))
    name = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")[column]
    _raises(written, str(path), "row 6 (line 7)", f"column {name!r}", f"{value!r} is not a valid int64")


def test_a_fraction_in_a_gzipped_file_names_it(written):
    path = event_path(written, 7, "particles")
    _edit(path, 2, lambda line: _set_field(line, 7, "-0.5"))
    _gzip_all(written)
    _raises(written, f"{path}.gz: row 2 (line 3), column 'q': '-0.5' is not a valid int64 (expected an integer)")


@needs_real_trackml
def test_real_trackml_sample_event_reads_as_distributed():
    """The challenge's own files: gzipped, particles with an extra particle_type column, a cells file beside."""
    directory = SAMPLE
    assert list_events(directory) == [1]
    event = read_event(directory, 1)
    assert len(event.spacepoints) == 5527
    assert len(event.particles) == 548
    assert event.truth is not None
    assert np.array_equal(event.truth.hit_id, event.spacepoints.hit_id)
    assert set(np.unique(event.spacepoints.volume_id)) <= {7, 8, 9, 12, 13, 14, 16, 17, 18}


@needs_real_trackml
def test_real_trackml_full_events_list_and_read_without_truth():
    directory = FULL
    assert list_events(directory) == [1001, 1003]
    event = read_event(directory, 1001)
    assert len(event.spacepoints) == 93_680
    assert event.truth is None
    assert event.particles is None


# --- the CSV table itself ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["table.csv", "table.csv.gz"])
def test_every_float64_reads_back_bit_for_bit(tmp_path, name):
    """Shortest round-trip decimals: random bit patterns (every exponent), signed zeros, subnormals, extremes."""
    rng = np.random.default_rng(7)
    bits = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=200_000, dtype=np.int64)
    values = bits.view(np.float64)
    special = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e16, 0.1, 1 / 3, 100.0]
    values = np.concatenate([special, values[np.isfinite(values)]])
    ids = np.arange(len(values), dtype=np.int64) - 2**62
    write_table(tmp_path / name, {"id": ids, "value": values})
    back = read_table(tmp_path / name, {"id": "int64", "value": "float64"})
    assert np.array_equal(back["id"], ids)
    assert np.array_equal(back["value"].view(np.int64), values.view(np.int64))


def test_write_event_refuses_an_event_without_hits(tmp_path):
    """An event without hits, whose file ``read_event`` refuses, was written, so a directory of written events could
    not be read back; it is refused before anything is written, naming the event. (The ids and coordinates
    ``read_event`` refuses, the spacepoints refuse when they are made: ``tests/test_event.py``.)"""
    event = simulate_event(SimulationConfig(pileup=1.0), seed=5, event_id=2)
    empty = attrs.evolve(event, spacepoints=event.spacepoints.take(np.arange(0)), truth=None, particles=None)
    with pytest.raises(EventFormatError, match="event 2 has no hits; a hits file needs at least one"):
        write_event(tmp_path / "out", empty)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match="list_events: directory must be a path, got None"):
        list_events(None)
