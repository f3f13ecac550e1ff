"""Per-layer figures of a module detector, to compare two of them (the generated TrackML layout and the real one).

``python -m tracking_algs.modules.compare detectors.csv.gz [HITS.csv.gz ...]`` prints, as markdown, the figures of
:func:`~tracking_algs.modules.layout.trackml_modules` next to those of the file, how far each generated module
lies from its real counterpart, and for each TrackML hits file how many hits lie on their module (by the hit's
module id, in the file's geometry and in the generated one): within 0.01 mm of its plane and inside its bounds
grown by 0.1 mm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import numpy as np
from scipy.spatial import cKDTree

from tracking_algs.io.csv_table import read_table
from tracking_algs.io.trackml import HITS_COLUMNS
from tracking_algs.modules.describe import rings
from tracking_algs.modules.detectors_csv import read_detectors_csv
from tracking_algs.modules.geometry import ModuleGeometry
from tracking_algs.modules.layout import trackml_modules

#: A hit is on its module when within this distance (mm) of the module's plane ...
ON_PLANE_MM = 0.01
#: ... and inside the module's bounds grown by this margin (mm).
BOUNDS_TOLERANCE_MM = 0.1


@attrs.frozen
class LayerFigures:
    """Figures of one layer measured from its modules' extents.

    ``phi_overlap``: the fraction of the full circle in φ covered by two modules (of one z ring on a barrel, one
    ring on an endcap; the mean over the rings), from each module's φ extent along its mid-line (v = 0: on an
    endcap, at the ring's radius). ``along_overlap``: the fraction of
    the layer's extent along z (barrels) or r (endcaps) covered by two rings of modules. ``radii``: the smallest
    and largest module-centre radius (barrels) or each ring's mean module-centre radius (endcaps), mm.
    """

    volume_id: int
    layer_id: int
    kind: str
    modules: int
    radii: tuple[float, ...]
    phi_overlap: float
    along_overlap: float


@attrs.frozen
class ModuleAgreement:
    """How closely one detector's modules match another's: each module paired with the nearest module centre."""

    max_centre_mm: float  #: the largest distance between paired module centres
    max_rotation: float  #: the largest difference of a rotation matrix element between paired modules
    same_layer: bool  #: whether every pair is in the same (volume, layer) and no module is paired twice
    same_id: float  #: the fraction of pairs with the same module id


def layer_figures(geometry: ModuleGeometry) -> tuple[LayerFigures, ...]:
    """The figures of each (volume, layer) of ``geometry``, in (volume, layer) order."""
    keys = np.unique(np.stack([geometry.volume_id, geometry.layer_id], axis=-1), axis=0)
    return tuple(_figures(geometry, int(volume), int(layer)) for volume, layer in keys)


def module_agreement(geometry: ModuleGeometry, reference: ModuleGeometry) -> ModuleAgreement:
    """Pair each module of ``geometry`` with the module of ``reference`` whose centre is nearest."""
    distance, nearest = cKDTree(reference.c).query(geometry.c)
    same_layer = (reference.volume_id[nearest] == geometry.volume_id) & (
        reference.layer_id[nearest] == geometry.layer_id
    )
    return ModuleAgreement(
        max_centre_mm=float(distance.max()),
        max_rotation=float(np.abs(geometry.rot - reference.rot[nearest]).max()),
        same_layer=bool(same_layer.all() and len(np.unique(nearest)) == len(geometry)),
        same_id=float(np.mean(reference.module_id[nearest] == geometry.module_id)),
    )


def hits_on_modules(geometry: ModuleGeometry, hits_path: str | Path) -> tuple[int, float, float]:
    """For the hits of a TrackML hits file: (their number, the fraction within :data:`ON_PLANE_MM` of their
    module's plane, the fraction also inside its bounds grown by :data:`BOUNDS_TOLERANCE_MM`); a hit whose module
    ``geometry`` does not have counts as off its module."""
    hits = read_table(Path(hits_path), HITS_COLUMNS)
    rows = geometry.lookup(hits["volume_id"], hits["layer_id"], hits["module_id"])
    known = rows >= 0
    u, v, w = geometry.to_local(rows[known], np.stack([hits["x"], hits["y"], hits["z"]], axis=-1)[known])
    on_plane = np.abs(w) < ON_PLANE_MM
    inside = on_plane & geometry.inside(rows[known], u, v, BOUNDS_TOLERANCE_MM)
    n = len(rows)
    return n, float(on_plane.sum() / n), float(inside.sum() / n)


def comparison_table(generated: ModuleGeometry, real: ModuleGeometry) -> str:
    """A markdown table of the per-layer figures of ``generated`` next to ``real`` (the same layers expected)."""
    lines = ["| volume | layer | kind | modules | centre radii / ring radii (mm) | φ covered twice | z or r covered "
             "twice |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    real_figures = {(f.volume_id, f.layer_id): f for f in layer_figures(real)}
    for mine in layer_figures(generated):
        theirs = real_figures.get((mine.volume_id, mine.layer_id))
        if theirs is None:
            lines.append(f"| {mine.volume_id} | {mine.layer_id} | {mine.kind} | {mine.modules} / absent | | | |")
            continue
        radii = f"{_radii(mine)} / {_radii(theirs)}"
        lines.append(f"| {mine.volume_id} | {mine.layer_id} | {mine.kind} | {mine.modules} / {theirs.modules} | "
                     f"{radii} | {mine.phi_overlap:.2%} / {theirs.phi_overlap:.2%} | "
                     f"{mine.along_overlap:.2%} / {theirs.along_overlap:.2%} |")  # fmt: skip
    return "\n".join(lines).replace("%", " %")


def _radii(figures: LayerFigures) -> str:
    return (
        "–".join(f"{r:.2f}" for r in figures.radii)
        if figures.kind == "barrel"
        else ", ".join(f"{r:.1f}" for r in figures.radii)
    )


def _figures(geometry: ModuleGeometry, volume_id: int, layer_id: int) -> LayerFigures:
    rows = np.flatnonzero((geometry.volume_id == volume_id) & (geometry.layer_id == layer_id))
    centre = geometry.c[rows]
    radius = np.hypot(centre[:, 0], centre[:, 1])
    barrel = bool(np.all(np.abs(geometry.normal(rows)[:, 2]) < 0.5))
    _, ring = rings(centre[:, 2] if barrel else radius)
    phi_low, phi_high = _phi_extent(geometry, rows)
    phi_overlap = np.mean([_covered_twice(phi_low[ring == j], phi_high[ring == j], period=2 * np.pi)
                           for j in range(ring.max() + 1)])  # fmt: skip
    along = centre[:, 2] if barrel else radius  # v runs along z on a barrel, along r on an endcap
    first = np.unique(ring, return_index=True)[1]  # one module per ring
    half_v = geometry.half_v[rows]
    along_overlap = _covered_twice((along - half_v)[first], (along + half_v)[first])
    radii = (
        (float(radius.min()), float(radius.max()))
        if barrel
        else tuple(float(radius[ring == j].mean()) for j in range(ring.max() + 1))
    )
    return LayerFigures(volume_id, layer_id, "barrel" if barrel else "endcap", len(rows), radii,
                        float(phi_overlap), float(along_overlap))  # fmt: skip


def _phi_extent(geometry: ModuleGeometry, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each module's φ range along its mid-line v = 0 (radians; the low end in [−π, π), the high end above it)."""
    half_u = (geometry.min_half_u[rows] + geometry.max_half_u[rows]) / 2
    ends = (
        geometry.c[rows][:, None, :]
        + np.multiply.outer(half_u, [-1.0, 1.0])[..., None] * geometry.rot[rows, None, :, 0]
    )
    centre = np.arctan2(geometry.c[rows, 1], geometry.c[rows, 0])
    relative = np.angle(np.exp(1j * (np.arctan2(ends[..., 1], ends[..., 0]) - centre[:, None])))
    low = np.mod(centre + relative.min(axis=1) + np.pi, 2 * np.pi) - np.pi
    return low, low + relative.max(axis=1) - relative.min(axis=1)


def _covered_twice(low: np.ndarray, high: np.ndarray, period: float | None = None) -> float:
    """The length covered by at least two of the intervals [low, high) over the length covered by at least one;
    with a ``period``, over the period (intervals wrap around at low + period)."""
    if period is not None:  # unwrap onto [−period / 2, period / 2): split the intervals that cross the end
        wrapped = high > period / 2
        low = np.concatenate([low, np.full(wrapped.sum(), -period / 2)])
        high = np.concatenate([np.minimum(high, period / 2), high[wrapped] - period])
    edges = np.concatenate([low, high])
    step = np.concatenate([np.ones(len(low)), -np.ones(len(high))])
    order = np.lexsort((-step, edges))  # at a shared edge, open before closing: touching counts as covered
    depth = np.cumsum(step[order])[:-1]
    length = np.diff(edges[order])
    covered = period if period is not None else length[depth >= 1].sum()
    return float(length[depth >= 2].sum() / covered)


def main(argv: list[str] | None = None) -> int:
    """``python -m tracking_algs.modules.compare DETECTORS.csv[.gz] [HITS.csv[.gz] ...]``."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m tracking_algs.modules.compare DETECTORS.csv[.gz] [HITS.csv[.gz] ...]", file=sys.stderr)
        return 2
    real, generated = read_detectors_csv(args[0]), trackml_modules()
    print(comparison_table(generated, real))
    agreement = module_agreement(generated, real)
    print(f"\nmodules: {len(generated)} generated, {len(real)} real; each generated module paired with the nearest "
          f"real module centre: largest centre distance {agreement.max_centre_mm:.4f} mm, largest rotation element "
          f"difference {agreement.max_rotation:.1e}, all pairs in the same layer and one to one: "
          f"{agreement.same_layer}, same module id: {agreement.same_id:.1%}")  # fmt: skip
    for path in args[1:]:
        for name, geometry in (("real", real), ("generated", generated)):
            n, on_plane, inside = hits_on_modules(geometry, path)
            bounds = f"{inside:.3%} also inside its bounds (± {BOUNDS_TOLERANCE_MM} mm)"
            print(f"{Path(path).name}: {n} hits; on the {name} modules: {on_plane:.3%} within {ON_PLANE_MM} mm of "
                  f"their module's plane, {bounds}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
