"""Measure the per-layer description (:class:`~tracking_algs.modules.layout.ModuleLayout`) of a module detector.

``python -m tracking_algs.modules.describe detectors.csv.gz > trackml_modules.toml`` writes the description of
a ``detectors.csv`` file as TOML; the package's ``tracking_algs/detectors/trackml_modules.toml`` is this
command's output for the TrackML challenge's file. Each layer must follow the model of
:mod:`tracking_algs.modules.layout` (barrel rings of equal module counts, endcap rings, one module size per
barrel layer and per endcap ring, one pitch and one material per layer); positions and angles are means over
the layer's modules, rounded to 1 µm and 10⁻⁴ degree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import numpy as np

from tracking_algs.modules.detectors_csv import read_detectors_csv
from tracking_algs.modules.geometry import ModuleGeometry
from tracking_algs.modules.layout import BarrelLayer, EndcapLayer, EndcapRing, ModuleLayout

#: Decimals kept of measured lengths (mm) and angles (degrees), and of the sizes, pitches and material that the
#: modules share.
_MM, _DEG, _EXACT = 3, 4, 6
#: Module centres closer than this (mm) in z (barrels) or in radius (endcaps) belong to the same ring.
RING_GAP_MM = 1.0

_HEADER = """\
# A detector at module level: the per-layer description that tracking_algs.modules.build_modules() generates its
# modules from (the model: tracking_algs/modules/layout.py; docs/detector.md), measured from a detectors.csv by
#     python -m tracking_algs.modules.describe DETECTORS.csv[.gz] > LAYOUT.toml
# tracking_algs/detectors/trackml_modules.toml is this command's output for the TrackML challenge's detectors.csv
# (Amrouche et al., arXiv:1904.06778): do not edit it by hand. Units: mm and degrees. x_over_x0: the material in
# radiation lengths, not in detectors.csv: the project's own assumption, the per-layer material of the TrackML
# layers in tracking_algs/detectors/trackml.toml (tracking_algs.modules.trackml_x_over_x0).
"""


def describe(geometry: ModuleGeometry) -> ModuleLayout:
    """The per-layer description of ``geometry``'s modules; raises ``ValueError`` naming a layer that does not
    follow the model (a layer is a barrel when its module normals are transverse, an endcap when along z)."""
    keys = np.unique(np.stack([geometry.volume_id, geometry.layer_id], axis=-1), axis=0)
    barrels, endcaps = [], []
    for volume_id, layer_id in keys:
        rows = np.flatnonzero((geometry.volume_id == volume_id) & (geometry.layer_id == layer_id))
        normal_z = np.abs(geometry.normal(rows)[:, 2])
        where = f"volume {volume_id}, layer {layer_id}"
        if np.all(normal_z < 0.5):
            barrels.append(_barrel(geometry, rows, where))
        elif np.all(normal_z > 0.5):
            endcaps.append(_endcap(geometry, rows, where))
        else:
            raise ValueError(f"{where}: module normals both along z and transverse: neither a barrel nor an endcap")
    return ModuleLayout(barrels=tuple(barrels), endcaps=tuple(endcaps))


def layout_toml(layout: ModuleLayout) -> str:
    """TOML text of ``layout``, with a header comment, that :meth:`ModuleLayout.from_toml` reads back."""
    blocks = [_HEADER.rstrip("\n")]
    for barrel in layout.barrels:
        blocks.append("[[barrels]]\n" + _fields(barrel))
    for endcap in layout.endcaps:
        ring_lines = ",\n".join("  { " + ", ".join(_fields(ring).splitlines()) + " }" for ring in endcap.rings)
        blocks.append(f"[[endcaps]]\n{_fields(endcap)}\nrings = [\n{ring_lines},\n]")
    return "\n\n".join(blocks) + "\n"


def _barrel(geometry: ModuleGeometry, rows: np.ndarray, where: str) -> BarrelLayer:
    centre = geometry.c[rows]
    ring_z, ring = rings(centre[:, 2])
    counts = np.bincount(ring)
    if np.any(counts != counts[0]):
        raise ValueError(f"{where}: z rings hold different numbers of modules ({sorted(set(counts.tolist()))})")
    radius = np.hypot(centre[:, 0], centre[:, 1])
    if len(ring_z) > 1:
        even, odd = radius[ring % 2 == 0].mean(), radius[ring % 2 == 1].mean()
    else:
        even = odd = radius.mean()
    phi = np.arctan2(centre[:, 1], centre[:, 0])
    normal = geometry.normal(rows)
    tilt = np.arctan2(np.cos(phi) * normal[:, 1] - np.sin(phi) * normal[:, 0],
                      np.cos(phi) * normal[:, 0] + np.sin(phi) * normal[:, 1])  # fmt: skip
    return BarrelLayer(
        volume_id=int(geometry.volume_id[rows[0]]),
        layer_id=int(geometry.layer_id[rows[0]]),
        n_phi=int(counts[0]),
        radius=_mm((even + odd) / 2),
        radial_stagger=_mm(even - odd),
        tilt_deg=_deg(np.degrees(tilt).mean()),
        phi_first_deg=_deg(_phi_first(phi, ring)),
        ring_z=tuple(_mm(z) for z in ring_z),
        half_thickness=_single(geometry.half_thickness[rows], f"{where}: half thickness"),
        half_u=_single(np.append(geometry.min_half_u[rows], geometry.max_half_u[rows]), f"{where}: half width u"),
        half_v=_single(geometry.half_v[rows], f"{where}: half width v"),
        **_per_layer(geometry, rows, where),
    )


def _endcap(geometry: ModuleGeometry, rows: np.ndarray, where: str) -> EndcapLayer:
    centre = geometry.c[rows]
    _, ring = rings(np.hypot(centre[:, 0], centre[:, 1]))
    phi = np.arctan2(centre[:, 1], centre[:, 0])
    measured = [_ring(geometry, rows[ring == index], phi[ring == index], f"{where}, ring {index}")
                for index in range(ring.max() + 1)]  # fmt: skip
    centres = [z for z, _ in measured]
    z = (min(centres) + max(centres)) / 2
    layer_rings = tuple(EndcapRing(z_offset=_mm(ring_z - z), **fields) for ring_z, fields in measured)
    return EndcapLayer(
        volume_id=int(geometry.volume_id[rows[0]]),
        layer_id=int(geometry.layer_id[rows[0]]),
        z=_mm(z),
        ring_order=_ring_order(geometry.module_id[rows], ring, phi, where),
        rings=layer_rings,
        **_per_layer(geometry, rows, where),
    )


def _ring_order(module_id: np.ndarray, ring: np.ndarray, phi: np.ndarray, where: str) -> str:
    """The ring (a digit) of each module in the order of the module ids, which must be 1 … n and run through each
    ring in the order of φ from −180° (see :mod:`tracking_algs.modules.layout`)."""
    by_id = np.argsort(module_id)
    if not np.array_equal(module_id[by_id], np.arange(1, len(module_id) + 1)):
        raise ValueError(f"{where}: module ids are not 1 … {len(module_id)}, the model numbers them so")
    if ring.max() > 9:
        raise ValueError(f"{where}: {ring.max() + 1} rings, the model numbers at most 10")
    for index in range(ring.max() + 1):
        if np.any(np.diff(phi[by_id][ring[by_id] == index]) <= 0):
            raise ValueError(f"{where}, ring {index}: module ids do not follow φ from −180°, as the model has them")
    return "".join(str(index) for index in ring[by_id])


def _ring(geometry: ModuleGeometry, rows: np.ndarray, phi: np.ndarray, where: str) -> tuple[float, dict]:
    """The centre z of one endcap ring and its other fields (but ``z_offset``)."""
    if len(rows) < 4:
        raise ValueError(f"{where}: {len(rows)} modules, the model needs at least 4 per ring")
    order = np.argsort(phi)
    rows, phi = rows[order], phi[order]
    k = np.arange(len(rows)) % 4
    z = geometry.c[rows, 2]
    up, down = z[k == 2].mean(), z[k == 1].mean()
    centre = (up + down) / 2
    fields = {
        "radius": _mm(np.hypot(geometry.c[rows, 0], geometry.c[rows, 1]).mean()),
        "n_phi": len(rows),
        "phi_first_deg": _deg(_phi_first(phi, np.zeros(len(rows), dtype=np.int64))),
        "phi_stagger": _mm(up - down),
        "phi_substagger": _mm(z[k == 0].mean() - up),
        "half_thickness": _single(geometry.half_thickness[rows], f"{where}: half thickness"),
        "min_half_u": _single(geometry.min_half_u[rows], f"{where}: smaller half width u"),
        "max_half_u": _single(geometry.max_half_u[rows], f"{where}: larger half width u"),
        "half_v": _single(geometry.half_v[rows], f"{where}: half width v"),
    }
    return centre, fields


def _per_layer(geometry: ModuleGeometry, rows: np.ndarray, where: str) -> dict[str, float]:
    return {
        "pitch_u": _single(geometry.pitch_u[rows], f"{where}: pitch u"),
        "pitch_v": _single(geometry.pitch_v[rows], f"{where}: pitch v"),
        "x_over_x0": _single(geometry.x_over_x0[rows], f"{where}: material"),
    }


def rings(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster module-centre z (barrels) or radii (endcaps) into rings, separated by gaps of more than
    :data:`RING_GAP_MM`: (the rings' mean values in ascending order, each value's ring index)."""
    order = np.argsort(values)
    ring = np.empty(len(values), dtype=np.int64)
    ring[order] = np.cumsum(np.diff(values[order], prepend=values[order][0]) > RING_GAP_MM)
    return np.bincount(ring, weights=values) / np.bincount(ring), ring


def _phi_first(phi: np.ndarray, ring: np.ndarray) -> float:
    """φ (degrees) of the first module of evenly spaced rings: the mean of φ − k · step over the modules, k the
    module's rank in φ within its ring."""
    offsets = []
    for index in np.unique(ring):
        ordered = np.sort(phi[ring == index])
        offsets.append(ordered - np.arange(len(ordered)) * 2 * np.pi / len(ordered))
    return float(np.degrees(np.concatenate(offsets).mean()))


def _single(values: np.ndarray, what: str) -> float:
    """The one value shared by ``values`` (equal within 10⁻⁶), else ``ValueError``."""
    rounded = np.unique(np.round(values, _EXACT))
    if len(rounded) != 1:
        raise ValueError(f"{what}: the model has one value, found {rounded.tolist()}")
    return float(rounded[0])


def _mm(value: float) -> float:
    return float(round(value, _MM)) + 0.0  # + 0.0: no -0.0


def _deg(value: float) -> float:
    return float(round(value, _DEG)) + 0.0


def _fields(value: BarrelLayer | EndcapLayer | EndcapRing) -> str:
    """``key = value`` lines of an attrs instance's scalar and tuple-of-number fields."""
    lines = []
    for name, item in attrs.asdict(value, recurse=False).items():
        if isinstance(item, tuple) and item and not isinstance(item[0], (int, float)):
            continue  # nested tables are written by the caller
        text = "[" + ", ".join(repr(x) for x in item) + "]" if isinstance(item, tuple) else repr(item)
        lines.append(f"{name} = {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m tracking_algs.modules.describe DETECTORS.csv[.gz]``: the description as TOML on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tracking_algs.modules.describe DETECTORS.csv[.gz] > LAYOUT.toml", file=sys.stderr)
        return 2
    sys.stdout.write(layout_toml(describe(read_detectors_csv(Path(args[0])))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
