"""The detector as modules: the module geometry, the detectors.csv format, and the generated TrackML layout
compared with the real TrackML detector and real hits (those tests need ../shared/trackml: :mod:`real_trackml`)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import attrs
import numpy as np
import pytest
from real_trackml import REAL_DETECTORS, REAL_HITS, needs_real_trackml

from inference_iface.errors import ConfigError
from tracking_algs.errors import EventFormatError
from tracking_algs.modules import (
    TRACKML_MODULES_TOML,
    EndcapLayer,
    EndcapRing,
    ModuleGeometry,
    ModuleLayout,
    build_modules,
    read_detectors_csv,
    trackml_modules,
    trackml_x_over_x0,
    write_detectors_csv,
)
from tracking_algs.modules.compare import hits_on_modules, layer_figures, module_agreement
from tracking_algs.modules.describe import describe, layout_toml

PIXEL, SHORT_STRIP, LONG_STRIP = (7, 8, 9), (12, 13, 14), (16, 17, 18)


@pytest.fixture(scope="module")
def generated() -> ModuleGeometry:
    return trackml_modules()


@pytest.fixture(scope="module")
def real(real_trackml) -> ModuleGeometry:
    return read_detectors_csv(REAL_DETECTORS)


def _assert_same(a: ModuleGeometry, b: ModuleGeometry) -> None:
    for field in attrs.fields(ModuleGeometry):
        left, right = getattr(a, field.name), getattr(b, field.name)
        assert left.dtype == right.dtype, field.name
        assert np.array_equal(left, right), field.name


def _one_trapezoid(**overrides: object) -> ModuleGeometry:
    """One endcap-like module at (0, 100, 50): u = −x, v = +y (outwards), w = +z; half widths 10 → 20 over v ±5."""
    columns = {"volume_id": [9], "layer_id": [2], "module_id": [1], "c": [[0.0, 100.0, 50.0]],
               "rot": [[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], "half_thickness": [0.15],
               "min_half_u": [10.0], "max_half_u": [20.0], "half_v": [5.0], "pitch_u": [0.08], "pitch_v": [1.2],
               "x_over_x0": [0.02]}  # fmt: skip
    return ModuleGeometry(**{**columns, **overrides})


# --- the generated TrackML detector ----------------------------------------------------------------------------------
def test_generated_trackml_detector_has_its_modules(generated):
    assert len(generated) == 18_728
    layers = np.unique(np.stack([generated.volume_id, generated.layer_id], axis=-1), axis=0)
    assert len(layers) == 48
    for volume, layer in layers:  # ids 1..n within each layer
        ids = generated.module_id[(generated.volume_id == volume) & (generated.layer_id == layer)]
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    rotation = generated.rot
    assert np.allclose(np.einsum("nji,njk->nik", rotation, rotation), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rotation), 1.0)


def test_the_generated_detector_is_built_once_per_process_and_shared():
    first = trackml_modules()
    assert trackml_modules() is first


def test_describing_the_generated_detector_gives_back_its_description(generated):
    shipped = ModuleLayout.from_toml(TRACKML_MODULES_TOML)
    assert describe(generated) == shipped
    assert layout_toml(shipped) == TRACKML_MODULES_TOML.read_text(encoding="utf-8")


def test_material_is_the_trackml_per_layer_assumption(generated):
    for volumes, x_over_x0 in ((PIXEL, 0.012), (SHORT_STRIP, 0.02), (LONG_STRIP, 0.025)):
        assert np.all(generated.x_over_x0[np.isin(generated.volume_id, volumes)] == x_over_x0)
    with pytest.raises(ValueError, match="no TrackML material for volume 99, layer 2"):
        trackml_x_over_x0(np.array([8, 99]), np.array([2, 2]))


def _edited_layout(tmp_path, old: str, new: str):
    """The built-in layout TOML with its first ``old`` replaced by ``new``, written to a file."""
    path = tmp_path / "layout.toml"
    path.write_text(TRACKML_MODULES_TOML.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    return path


def test_module_layout_rejects_unknown_keys(tmp_path):
    path = _edited_layout(tmp_path, "n_phi = 16\n", "n_phi = 16\nn_fi = 16\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) n_fi"):
        ModuleLayout.from_toml(path)


def test_module_layout_rejects_a_ring_order_against_the_rings(tmp_path):
    path = _edited_layout(tmp_path, "ring_order = '0110", "ring_order = '1110")
    with pytest.raises(ConfigError, match=r"ring_order: \[39, 69\] modules per ring, the rings have \[40, 68\]"):
        ModuleLayout.from_toml(path)


def test_describe_names_a_layer_outside_the_model(generated):
    keep = ~((generated.volume_id == 8) & (generated.layer_id == 4) & (generated.module_id == 1))
    fewer = ModuleGeometry(
        **{field.name: getattr(generated, field.name)[keep] for field in attrs.fields(ModuleGeometry)}
    )
    with pytest.raises(ValueError, match="volume 8, layer 4: z rings hold different numbers of modules"):
        describe(fewer)


# --- the module geometry ---------------------------------------------------------------------------------------------
def test_lookup_finds_rows_and_gives_minus_one_for_unknown_modules(generated):
    rows = np.array([0, 5000, len(generated) - 1])
    found = generated.lookup(generated.volume_id[rows], generated.layer_id[rows], generated.module_id[rows])
    assert np.array_equal(found, rows)
    unknown = generated.lookup([8, 8, 99, -1, 8, 8], [2, 3, 2, 2, 2, 2], [0, 1, 1, 1, 225, 1 << 40])
    assert np.array_equal(unknown, [-1] * 6)
    assert generated.lookup(8, 2, 1).shape == ()  # scalars broadcast


def test_module_rows_that_are_no_module_are_refused(generated):
    """Row -1, what ``lookup`` gives for no module, was taken as the last module by ``to_local``, ``to_global``,
    ``inside``, ``normal`` and ``resolution``, and ``lookup`` cut fractional ids to another module's; each is a
    ValueError naming what was expected."""
    n = len(generated)
    xyz = np.zeros((1, 3))
    calls = (lambda rows: generated.to_local(rows, xyz), lambda rows: generated.to_global(rows, [0.0], [0.0]),
             lambda rows: generated.inside(rows, [0.0], [0.0]), generated.normal, generated.resolution)  # fmt: skip
    for call in calls:
        for rows, shown in ((np.array([-1]), "from -1 to -1"), (np.array([n]), f"from {n} to {n}")):
            with pytest.raises(ValueError, match=re.escape(f"ModuleGeometry rows {shown}; expected rows 0 to {n - 1}")):
                call(rows)
        with pytest.raises(ValueError, match=r"ModuleGeometry rows: 0\.5 at row 0 is not a whole number"):
            call(np.array([0.5]))
    with pytest.raises(ValueError, match=r"ModuleGeometry\.lookup: module_id: 1\.7 at row 0 is not a whole number"):
        generated.lookup([7.0], [2.0], [1.7])
    assert generated.lookup([8.0], [2.0], [1.0]) == generated.lookup([8], [2], [1])


def test_repeated_modules_are_rejected():
    with pytest.raises(ValueError, match="module \\(volume 9, layer 2, module 1\\) appears more than once"):
        _one_trapezoid(
            **{name: np.concatenate([value, value]) for name, value in attrs.asdict(_one_trapezoid()).items()}
        )


def test_local_and_global_coordinates_invert_each_other(generated):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(generated), 1000)
    u, v, w = rng.normal(0, 20, (3, 1000))
    back = generated.to_local(rows, generated.to_global(rows, u, v, w))
    assert np.allclose(back, (u, v, w), atol=1e-9)
    on_plane = generated.to_global(rows, u, v)  # w = 0: in the plane through the centre normal to the w axis
    assert np.allclose(np.einsum("ni,ni->n", on_plane - generated.c[rows], generated.normal(rows)), 0, atol=1e-9)


def test_inside_follows_the_trapezoid():
    module = _one_trapezoid()
    rows = np.zeros(8, dtype=np.int64)
    u = np.array([14.9, 15.1, 10.05, 19.9, 0.0, 0.0, -14.9, -10.05])
    v = np.array([0.0, 0.0, -5.0, 5.0, 5.1, -5.1, 0.0, -5.0])
    assert np.array_equal(module.inside(rows, u, v), [True, False, False, True, False, False, True, False])
    assert np.array_equal(module.inside(rows, u, v, tolerance=0.2), [True] * 8)
    # the local frame: u = −x, v = +y, w = +z
    assert np.allclose(module.to_local([0], [[-3.0, 102.0, 50.5]]), ([3.0], [2.0], [0.5]))
    assert np.allclose(module.normal([0]), [[0.0, 0.0, 1.0]])


def test_resolution_is_pitch_over_sqrt12(generated):
    rows = np.flatnonzero(generated.volume_id == 17)[:3]
    assert np.allclose(generated.resolution(rows), np.array([[0.12, 10.8]] * 3) / np.sqrt(12))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="wrong shape of rot"):
        _one_trapezoid(rot=np.eye(3))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("half_v", [0.0], "is 0.0; expected a size (mm) above 0 and at most 100000"),
        ("pitch_u", [np.nan], "is nan; expected a size (mm) above 0 and at most 100000"),
        ("max_half_u", [2e5], "is 200000.0; expected a size (mm) above 0 and at most 100000"),
        ("c", [[0.0, np.inf, 50.0]], "is [0.0, inf, 50.0]; expected a centre within float32's range"),
        ("rot", [np.eye(3) * 2], "is [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]; expected orthonormal"),
        ("x_over_x0", [-0.02], "is -0.02; expected a finite number ≥ 0"),
        ("x_over_x0", [np.nan], "is nan; expected a finite number ≥ 0"),
    ],
)
def test_a_geometry_built_in_python_refuses_modules_it_cannot_use(column, value, expected):
    """What ``read_detectors_csv`` refuses in a file (a size that is not positive, a centre that is not a finite
    coordinate, a rotation that is not one) and negative or NaN material, which it cannot hold, are refused of a
    geometry built in Python too, naming the row and the module."""
    with pytest.raises(ValueError, match=re.escape(f"ModuleGeometry: {column} of row 0 (volume 9, layer 2, module 1) "
                                                   f"{expected}")):  # fmt: skip
        _one_trapezoid(**{column: value})
    assert len(_one_trapezoid(x_over_x0=[0.0], max_half_u=[1e5])) == 1


# --- the detectors.csv format ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["detectors.csv", "detectors.csv.gz"])
def test_detectors_csv_round_trip_is_exact(tmp_path, generated, name):
    path = tmp_path / name
    write_detectors_csv(path, generated)
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).startswith(b"volume_id,layer_id,module_id,cx,cy,cz,rot_xu,")
    _assert_same(read_detectors_csv(path, x_over_x0=generated.x_over_x0), generated)


def test_detectors_csv_errors_name_the_file_row_and_column(tmp_path):
    path = tmp_path / "detectors.csv"
    write_detectors_csv(path, _one_trapezoid())
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace(",0.15,", ",thick,")]) + "\n")
    with pytest.raises(EventFormatError, match="row 1 \\(line 2\\), column 'module_t': 'thick'"):
        read_detectors_csv(path)
    path.write_text(lines[0].replace(",pitch_v", "") + "\n")
    with pytest.raises(EventFormatError, match="missing column\\(s\\) pitch_v"):
        read_detectors_csv(path)


def _two_modules_file(tmp_path, column: str | None = None, value: str = "") -> Path:
    """A detectors.csv of two modules (ids 1 and 2 of the module of :func:`_one_trapezoid`), the second row's
    ``column`` set to ``value`` (every rotation column for ``column="rot"``)."""
    one = attrs.asdict(_one_trapezoid())
    path = tmp_path / "detectors.csv"
    write_detectors_csv(path, ModuleGeometry(**{**{name: np.concatenate([each, each]) for name, each in one.items()},
                                                "module_id": [1, 2]}))  # fmt: skip
    header, first, second = path.read_text().splitlines()
    names, fields = header.split(","), second.split(",")
    for index, name in enumerate(names):
        if name == column or (column == "rot" and name.startswith("rot_")):
            fields[index] = value
    path.write_text("\n".join([header, first, ",".join(fields)]) + "\n")
    return path


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("module_id", "1", "columns 'volume_id','layer_id','module_id': module (volume 9, layer 2, module 1) appears "
                           "twice (first at row 1)"),
        ("volume_id", "99", "columns 'volume_id','layer_id': (99, 2) is not a layer of the TrackML detector"),
        ("volume_id", "-7", "column 'volume_id': -7 is not an id in [0, 1000)"),
        ("layer_id", "70000", "column 'layer_id': 70000 is not an id in [0, 65536)"),
        ("module_id", "99999999999", "column 'module_id': 99999999999 is not an id in [0, 1000000)"),
        ("pitch_u", "0", "column 'pitch_u': 0.0 is not a positive number"),
        ("pitch_v", "-0.05", "column 'pitch_v': -0.05 is not a positive number"),
        ("module_t", "0", "column 'module_t': 0.0 is not a positive number"),
        ("module_minhu", "-1", "column 'module_minhu': -1.0 is not a positive number"),
        ("module_hv", "0", "column 'module_hv': 0.0 is not a positive number"),
        ("rot", "0", "columns 'rot_xu','rot_xv','rot_xw','rot_yu','rot_yv','rot_yw','rot_zu','rot_zv','rot_zw': not a "
                     "rotation, expected orthonormal columns"),
        ("rot_xu", "-0.9", "'rot_zw': not a rotation, expected orthonormal columns (the local u, v, w axes); RᵀR "
                           "differs from the identity by 0.19"),
    ],
)  # fmt: skip
def test_detectors_csv_refuses_modules_it_cannot_use_naming_the_file_row_and_column(tmp_path, column, value, expected):
    """Checked as the file is read, so that a job refuses the file before any work: unique ids within the keys'
    range, a layer with TrackML material (unless the material is given), positive sizes and pitches, rotations."""
    path = _two_modules_file(tmp_path, column, value)
    with pytest.raises(EventFormatError) as info:
        read_detectors_csv(path)
    assert str(info.value).startswith(f"{path}: row 2 (line 3), "), str(info.value)
    assert expected in str(info.value), str(info.value)


def test_detectors_csv_without_modules_or_with_a_damaged_gzip_body_is_refused(tmp_path):
    path = _two_modules_file(tmp_path)
    assert len(read_detectors_csv(path)) == 2
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(EventFormatError, match=f"^{re.escape(str(path))}: no modules; expected one row per module"):
        read_detectors_csv(path)
    damaged = bytearray(gzip.compress(_two_modules_file(tmp_path).read_bytes(), compresslevel=0))
    damaged[13] ^= 0xFF  # the stored block's length check: the body no longer decompresses (zlib.error)
    gzipped = tmp_path / "detectors.csv.gz"
    gzipped.write_bytes(bytes(damaged))
    with pytest.raises(EventFormatError, match=f"^{re.escape(str(gzipped))}: cannot read: damaged gzip file"):
        read_detectors_csv(gzipped)


def test_a_layer_without_trackml_material_is_read_with_the_material_given(tmp_path):
    path = _two_modules_file(tmp_path, "volume_id", "99")
    assert np.array_equal(read_detectors_csv(path, x_over_x0=0.01).volume_id, [9, 99])


@needs_real_trackml
def test_the_real_file_is_written_back_byte_for_byte(tmp_path, real):
    write_detectors_csv(tmp_path / "detectors.csv", real)
    assert (tmp_path / "detectors.csv").read_bytes() == gzip.decompress(REAL_DETECTORS.read_bytes())
    write_detectors_csv(tmp_path / "detectors.csv.gz", real)
    _assert_same(read_detectors_csv(tmp_path / "detectors.csv.gz"), real)


# --- generated vs real -----------------------------------------------------------------------------------------------
@needs_real_trackml
def test_the_shipped_description_is_derived_from_the_real_file(real):
    assert layout_toml(describe(real)) == TRACKML_MODULES_TOML.read_text(encoding="utf-8")


@needs_real_trackml
def test_generated_layers_match_the_real_ones(generated, real):
    mine, theirs = layer_figures(generated), layer_figures(real)
    assert [(f.volume_id, f.layer_id, f.kind, f.modules) for f in mine] == [
        (f.volume_id, f.layer_id, f.kind, f.modules) for f in theirs
    ]
    for a, b in zip(mine, theirs, strict=True):
        where = f"volume {a.volume_id} layer {a.layer_id}"
        if a.kind == "barrel":  # the spread of module-centre radii (staggering)
            assert a.radii == pytest.approx(b.radii, abs=0.01), where
        else:  # the ring radii
            assert a.radii == pytest.approx(b.radii, rel=0.01), where
        assert a.phi_overlap == pytest.approx(b.phi_overlap, rel=0.02, abs=1e-4), where
        assert a.along_overlap == pytest.approx(b.along_overlap, rel=0.02, abs=1e-4), where


@needs_real_trackml
def test_every_generated_module_lies_on_a_real_one(generated, real):
    agreement = module_agreement(generated, real)
    assert agreement.same_layer
    assert agreement.max_centre_mm < 0.01
    assert agreement.max_rotation < 1e-5
    assert agreement.same_id == 1.0


@needs_real_trackml
def test_every_real_module_is_generated_with_its_id_at_its_place(generated, real):
    """Module by module, barrels and endcaps: the generated module with the real module's (volume, layer,
    module) ids has its centre within 0.01 mm and its rotation within 1e-5."""
    rows = generated.lookup(real.volume_id, real.layer_id, real.module_id)
    assert len(real) == len(generated) == 18_728
    assert np.all(rows >= 0)
    assert np.linalg.norm(generated.c[rows] - real.c, axis=-1).max() < 0.01
    assert np.abs(generated.rot[rows] - real.rot).max() < 1e-5
    for name in ("half_thickness", "min_half_u", "max_half_u", "half_v", "pitch_u", "pitch_v"):
        assert np.array_equal(getattr(generated, name)[rows], getattr(real, name)), name


@needs_real_trackml
@pytest.mark.parametrize("hits", REAL_HITS, ids=lambda path: path.name)
def test_real_hits_lie_on_their_generated_module(generated, hits):
    n, on_plane, inside = hits_on_modules(generated, hits)  # looked up by the hit's (volume, layer, module) ids
    assert n > 5000
    assert on_plane >= 0.9999  # |w| < 0.01 mm from the module's plane
    assert inside >= 0.999  # and inside its trapezoid, grown by 0.1 mm


def test_endcap_ids_follow_ring_order():
    ring = {"n_phi": 4, "phi_first_deg": -135.0, "z_offset": 0.0, "phi_stagger": 2.0, "phi_substagger": 0.0,
            "half_thickness": 0.1, "min_half_u": 5.0, "max_half_u": 8.0, "half_v": 10.0}  # fmt: skip
    rings = (EndcapRing(radius=50.0, **ring), EndcapRing(radius=70.0, **{**ring, "n_phi": 6, "phi_first_deg": -150.0}))
    disk = {"volume_id": 9, "layer_id": 2, "z": 600.0, "pitch_u": 0.05, "pitch_v": 0.05, "x_over_x0": 0.01}
    ordered = build_modules(
        ModuleLayout(barrels=(), endcaps=(EndcapLayer(**disk, rings=rings, ring_order="0110110110"),))
    )
    radius = np.hypot(ordered.c[:, 0], ordered.c[:, 1])
    assert np.array_equal(radius > 60, [c == "1" for c in "0110110110"])
    phi = np.degrees(np.arctan2(ordered.c[:, 1], ordered.c[:, 0]))
    assert np.allclose(phi[radius < 60], [-135, -45, 45, 135])
    assert np.allclose(phi[radius > 60], [-150, -90, -30, 30, 90, 150])
    assert describe(ordered).endcaps[0].ring_order == "0110110110"
    by_phi = build_modules(ModuleLayout(barrels=(), endcaps=(EndcapLayer(**disk, rings=rings),)))  # "": φ order
    phi = np.degrees(np.arctan2(by_phi.c[:, 1], by_phi.c[:, 0]))
    assert np.all(np.diff(phi) >= 0)
    with pytest.raises(ValueError, match=r"ring_order: \[5, 5\] modules per ring, the rings have \[4, 6\]"):
        EndcapLayer(**disk, rings=rings, ring_order="0101010101")
    with pytest.raises(ValueError, match="one digit 0 … 1 per module"):
        EndcapLayer(**disk, rings=rings, ring_order="0112110110")


def test_describe_rejects_endcap_ids_against_phi(generated):
    swapped = generated.module_id.copy()
    first = np.flatnonzero((generated.volume_id == 9) & (generated.layer_id == 2) & (generated.module_id <= 4))
    one, four = first[generated.module_id[first] == 1][0], first[generated.module_id[first] == 4][0]  # both ring 0
    swapped[one], swapped[four] = 4, 1
    columns = {field.name: getattr(generated, field.name) for field in attrs.fields(ModuleGeometry)}
    with pytest.raises(ValueError, match="volume 9, layer 2, ring 0: module ids do not follow φ from −180°"):
        describe(ModuleGeometry(**{**columns, "module_id": swapped}))


@needs_real_trackml
@pytest.mark.parametrize("hits", REAL_HITS, ids=lambda path: path.name)
def test_real_hits_lie_on_their_module(real, hits):
    n, on_plane, inside = hits_on_modules(real, hits)
    assert n > 5000
    assert on_plane >= 0.999  # |w| < 0.01 mm from the module's plane
    assert inside >= 0.999  # and inside its trapezoid, grown by 0.1 mm
