"""Field maps (``[detector.field] kind = "map"``): read from their CSV files in any row order, interpolated as the
solenoid's own table is, followed by the simulation and the fitter of a whole job, and refused with the file and
the node at fault when malformed."""

from __future__ import annotations

import filecmp
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from inference_iface.errors import ConfigError
from tracking_algs.cli import main
from tracking_algs.errors import EventFormatError
from tracking_algs.geometry import trackml_detector
from tracking_algs.io.csv_table import read_table, write_table
from tracking_algs.io.field_map import FIELD_MAP_COLUMNS, write_field_map
from tracking_algs.job_options import load_job_options
from tracking_algs.magnetic_field import FieldConfig, MappedField, SolenoidField

ROOT = Path(__file__).resolve().parent.parent
R_NODES = np.arange(0.0, 1200.0, 40.0)
Z_NODES = np.arange(-4000.0, 4000.0 + 1.0, 40.0)


def _solenoid_map(path: Path) -> Path:
    """``path``: the built-in solenoid's field (2 T at the centre) at the nodes of its own table (40 mm)."""
    r, z = np.meshgrid(R_NODES, Z_NODES, indexing="ij")
    b_r, b_z = SolenoidField().components_t(r.ravel(), z.ravel())
    write_field_map(path, R_NODES, Z_NODES, b_r, b_z)
    return path


def _rewritten(source: Path, target: Path, change) -> Path:
    """``target``: the map ``source`` with its columns passed through ``change(columns) -> columns``."""
    write_table(target, change(read_table(source, FIELD_MAP_COLUMNS)))
    return target


def _random_tracks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [n, 3] inside the tracker (r < 1.05 m, |z| < 3 m) and unit directions [n, 3]."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(-np.pi, np.pi, n)
    r = rng.uniform(0.0, 1050.0, n)
    position = np.column_stack((r * np.cos(phi), r * np.sin(phi), rng.uniform(-3000.0, 3000.0, n)))
    direction = rng.normal(size=(n, 3))
    return position, direction / np.linalg.norm(direction, axis=1, keepdims=True)


def test_a_map_of_the_solenoid_gives_the_solenoids_field_bit_for_bit(tmp_path):
    """The solenoid tabulated at the nodes of its own table and read back as a map: the same bending field and the
    same turn of T_z everywhere in the tracker, also from a pickled copy of the field."""
    field = FieldConfig(kind="map", map_file=str(_solenoid_map(tmp_path / "solenoid.csv"))).build(trackml_detector())
    assert isinstance(field, MappedField)
    assert field.centre_t == pytest.approx(2.0, abs=1e-9)
    assert not field.uniform
    position, direction = _random_tracks(20_000, seed=3)
    copied = pickle.loads(pickle.dumps(field))  # as the fit's worker processes and Dask workers receive it
    solenoid = SolenoidField().turning_t(position, direction)
    for fitted_in in (field, copied):
        for mapped, expected in zip(fitted_in.turning_t(position, direction), solenoid, strict=True):
            np.testing.assert_array_equal(mapped, expected)


def test_a_map_of_half_the_solenoid_mirrored_about_z_0_gives_the_whole(tmp_path):
    """``map_mirror_z``: the solenoid's nodes from z = 0 up, mirrored (B_z the same, B_r reversed), give its field on
    both sides (to rounding: the loop sum adds the loops in one order at z and at −z); without the mirror that map
    does not cover the tracker and is refused, and a map that reaches below z = 0 is refused for mirroring."""
    upper = Z_NODES >= 0
    r, z = np.meshgrid(R_NODES, Z_NODES[upper], indexing="ij")
    half = tmp_path / "half.csv"
    write_field_map(half, R_NODES, Z_NODES[upper], *SolenoidField().components_t(r.ravel(), z.ravel()))
    field = FieldConfig(kind="map", map_file=str(half), map_mirror_z=True).build(trackml_detector())
    position, direction = _random_tracks(20_000, seed=4)
    assert (position[:, 2] < -1000).sum() > 5000
    for mapped, solenoid in zip(field.turning_t(position, direction), SolenoidField().turning_t(position, direction),
                                strict=True):  # fmt: skip
        np.testing.assert_allclose(mapped, solenoid, rtol=0, atol=1e-12)
    assert field.components_t(np.array([500.0]), np.array([-2500.0]))[1][0] < 1.7  # falling off towards its end
    with pytest.raises(EventFormatError, match=r"the map covers r up to 1160 mm and z from 0 to 4000 mm, but the "
                                               r"detector's surfaces reach r = 1030 and \|z\| = 2950 mm"):  # fmt: skip
        FieldConfig(kind="map", map_file=str(half)).build(trackml_detector())
    whole = _solenoid_map(tmp_path / "solenoid.csv")
    with pytest.raises(EventFormatError, match=r"the smallest z is -4000.0 mm; a map mirrored about z = 0"):
        FieldConfig(kind="map", map_file=str(whole), map_mirror_z=True).build(trackml_detector())


def test_a_map_is_read_in_any_row_order_and_interpolated_bilinearly(tmp_path):
    """A field that is linear in r and in z, its rows shuffled: the map gives it exactly between the nodes (bilinear
    interpolation is exact there), so r and z, B_r and B_z land where they belong; beyond the grid, the field at its
    edge (to 1e-6 of a cell)."""

    def exact(r, z):
        return 1e-4 * r - 2e-5 * z, 2.0 + 3e-5 * r + 1e-5 * z

    r, z = (grid.ravel() for grid in np.meshgrid(R_NODES, Z_NODES, indexing="ij"))
    order = np.random.default_rng(8).permutation(len(r))
    b_r, b_z = exact(r, z)
    path = tmp_path / "linear.csv.gz"
    write_table(path, {"bz": b_z[order], "z": z[order], "br": b_r[order], "r": r[order]})  # any column order too
    field = FieldConfig(kind="map", map_file=str(path)).build(trackml_detector())
    rng = np.random.default_rng(9)
    inside_r, inside_z = rng.uniform(0.0, R_NODES[-1], 5000), rng.uniform(Z_NODES[0], Z_NODES[-1], 5000)
    for got, want in zip(field.components_t(inside_r, inside_z), exact(inside_r, inside_z), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    beyond = field.components_t(np.array([5000.0, 100.0]), np.array([0.0, 9000.0]))
    edge = exact(np.array([R_NODES[-1], 100.0]), np.array([0.0, Z_NODES[-1]]))
    np.testing.assert_allclose(beyond, edge, rtol=0, atol=1e-7)  # the table stops 1e-6 of a cell short of its edge


def test_a_job_in_a_map_of_the_solenoid_writes_the_solenoids_tracks(tmp_path):
    """``trkx run configs/trackml.toml --simulate``: the simulation and the fitter in the map of the solenoid write
    the tracks and the fitted tracks of the job in the solenoid itself, byte for byte."""
    field_map = _solenoid_map(tmp_path / "solenoid.csv")
    common = ["run", str(ROOT / "configs" / "trackml.toml"), "--simulate", "1", "--set", "simulation.pileup=10",
              "--set", "job.seed=1000070"]  # fmt: skip
    assert main([*common, "--output", str(tmp_path / "solenoid")]) == 0
    mapped = ["--set", 'detector.field.kind="map"', "--set", f'detector.field.map_file="{field_map}"']
    assert main([*common, *mapped, "--output", str(tmp_path / "map")]) == 0
    for name in ("tracks.csv", "fitted_tracks.csv"):
        assert filecmp.cmp(tmp_path / "solenoid" / name, tmp_path / "map" / name, shallow=False), name
    assert (tmp_path / "map" / "fitted_tracks.csv").stat().st_size > 1000  # the fits ran (a header and tracks)


def _without_a_row(columns):
    return {name: np.delete(values, 7) for name, values in columns.items()}


def _with_a_row_twice(columns):
    return {name: np.append(values, values[3]) for name, values in columns.items()}


def _with_a_column_missing(columns):
    return {name: values for name, values in columns.items() if name != "bz"}


def _off_the_axis(columns):
    return columns | {"r": columns["r"] + 20.0}


def _unevenly_spaced(columns):
    return {name: values[columns["z"] != Z_NODES[1]] for name, values in columns.items()}


def _stronger(columns):
    return columns | {"br": 1.9 * columns["br"], "bz": 1.9 * columns["bz"]}


def _short_of_the_endcaps(columns):
    return {name: values[np.abs(columns["z"]) <= 2000.0] for name, values in columns.items()}


def _with_a_field_in_gauss(columns):
    br = columns["br"].copy()
    br[7] = 1e300
    return columns | {"br": br}


def _with_nan(columns):
    bz = columns["bz"].copy()
    bz[4] = np.nan
    return columns | {"bz": bz}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without_a_row, r"the node r = 0, z = -3720 mm is missing; expected every r of the map with every z"),
        (_with_a_row_twice, r"row 6031 \(line 6032\) gives the node r = 0.0, z = -3880.0 mm again \(first at row 4\)"),
        (_with_a_column_missing, r"missing column\(s\) bz; expected r, z, br, bz"),
        (_off_the_axis, r"the smallest r is 20.0 mm; expected the grid to start on the axis"),
        (_unevenly_spaced, r"the values of z are not evenly spaced \(steps from 40 to 80 mm\)"),
        (_stronger, r"the map's field at the origin is 3.8 T, but the detector's is 2 T"),
        (_with_nan, r"row 5 \(line 6\), column 'bz': nan is not a finite number"),
        (
            _with_a_field_in_gauss,
            r"row 8 \(line 9\), column 'br': 1e\+300 T is beyond 100 T; expected the field in tesla",
        ),
        (
            _short_of_the_endcaps,
            r"the map covers r up to 1160 mm and z from -2000 to 2000 mm, but the detector's "
            r"surfaces reach r = 1030 and \|z\| = 2950 mm; expected a map over the whole tracker",
        ),
    ],
)
def test_a_malformed_map_is_refused_naming_the_file_and_what_is_wrong(tmp_path, change, message):
    """Before any work: a ``ConfigError`` naming the option, the file and the row or node at fault."""
    path = _rewritten(_solenoid_map(tmp_path / "solenoid.csv"), tmp_path / "bad.csv", change)
    overrides = ['detector.field.kind="map"', f'detector.field.map_file="{path}"']
    with pytest.raises(ConfigError, match=rf"\[detector\.field\] map_file: {re.escape(str(path))}: {message}"):
        load_job_options(None, overrides)


def test_trkx_train_blames_a_bad_map_on_the_override_that_names_it(tmp_path, capsys):
    """``trkx train`` reads the map with its options, before it makes its output directory: a malformed one is
    blamed on the ``--set`` that named it, as every other bad value is, not on the options file."""
    path = _rewritten(_solenoid_map(tmp_path / "solenoid.csv"), tmp_path / "bad.csv", _unevenly_spaced)
    models = tmp_path / "models"
    override = f'data.field.map_file="{path}"'
    assert main(["train", str(ROOT / "configs" / "train.toml"), "--output", str(models), "--set",
                 'data.field.kind="map"', "--set", override]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"trkx train: error: --set {override}: [data.field]: {path}: the values of z are not "), line
    assert not models.exists()


@pytest.mark.parametrize("kind", ["uniform", "solenoid"])
def test_map_options_beside_another_kind_are_refused(tmp_path, capsys, kind):
    """A ``map_file`` or ``map_mirror_z`` with a kind other than "map" would be left unread, the job running in a
    field its options do not describe: refused in the job options, naming the key and the kind, and by ``trkx
    train`` before it makes its output directory (status 2)."""
    field_map = _solenoid_map(tmp_path / "solenoid.csv")
    with pytest.raises(
        ConfigError, match=rf"map_file '.*solenoid.csv' is read only with kind = \"map\", but kind = \"{kind}\""
    ):
        load_job_options(None, [f'detector.field.kind="{kind}"', f'detector.field.map_file="{field_map}"'])
    with pytest.raises(ConfigError, match=rf'map_mirror_z is read only with kind = "map", but kind = "{kind}"'):
        load_job_options(None, [f'detector.field.kind="{kind}"', "detector.field.map_mirror_z=true"])
    models = tmp_path / "models"
    assert main(["train", str(ROOT / "configs" / "train.toml"), "--output", str(models), "--set",
                 f'data.field.kind="{kind}"', "--set", f'data.field.map_file="{field_map}"']) == 2  # fmt: skip
    assert "map_file" in capsys.readouterr().err
    assert not models.exists()
    assert load_job_options(None, ['detector.field.kind="map"', f'detector.field.map_file="{field_map}"'])


def test_a_map_without_its_file_is_refused(tmp_path, capsys):
    """A missing ``map_file`` in the job options and in the training options (``trkx train`` refuses it before it
    makes its output directory), and ``trkx simulate --field map`` without ``--field-map`` (or the other way round):
    a ``ConfigError``, status 2 and one line."""
    with pytest.raises(ConfigError, match=r'kind = "map" needs map_file'):
        load_job_options(None, ['detector.field.kind="map"'])
    models = tmp_path / "models"
    assert main(["train", str(ROOT / "configs" / "train.toml"), "--output", str(models), "--set",
                 'data.field.kind="map"']) == 2  # fmt: skip
    assert '--set data.field.kind="map": kind = "map" needs map_file' in capsys.readouterr().err
    assert not models.exists()
    with pytest.raises(ConfigError, match=r"map_file '.*absent.csv' does not exist; expected a field map CSV"):
        load_job_options(None, ['detector.field.kind="map"', f'detector.field.map_file="{tmp_path / "absent.csv"}"'])
    field_map = _solenoid_map(tmp_path / "solenoid.csv")
    simulate = ["simulate", "--events", "1", "--pileup", "0", "--output", str(tmp_path / "events")]
    assert main([*simulate, "--field", "map"]) == 2
    assert main([*simulate, "--field", "solenoid", "--field-map", str(field_map)]) == 2
    assert capsys.readouterr().err.count("--field map takes its field from --field-map FILE") == 2
    assert main([*simulate, "--field", "map", "--field-map", str(field_map)]) == 0
