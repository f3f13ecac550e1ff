"""A compact per-layer description of a module detector, and the modules it generates.

A barrel layer is ``len(ring_z)`` rings of ``n_phi`` rectangular modules along z; the module planes are parallel
to z (local v = +z) and turned by ``tilt_deg`` about z from facing the beam line (the normal w is the radial
direction turned by ``tilt_deg``, counter-clockwise seen from +z; u = v × w). Ring j (counted from −z) sits at
the radius ``radius + radial_stagger / 2`` for even j and ``radius − radial_stagger / 2`` for odd j; module k of
a ring is at φ = ``phi_first_deg`` + k · 360° / ``n_phi``. Module ids count φ fastest, then the rings:
``1 + j · n_phi + k``.

An endcap layer is a disk at ``z`` of rings of trapezoidal modules (local v = the radial direction, pointing
outwards, so the trapezoid is narrow at the inner radius; w = ±z, away from the interaction point; u = v × w).
Module k of a ring is at φ = ``phi_first_deg`` + k · 360° / ``n_phi``, its centre at the ring's ``radius`` and at
z = ``z + z_offset`` ± ``phi_stagger`` / 2 (+ for even k) and, every fourth module, ± ``phi_substagger`` (+ for
k ≡ 0, − for k ≡ 3 mod 4): neighbours in φ sit on alternate faces of the disk and overlap. Module ids run
through each ring in the order of k (counter-clockwise seen from +z, from the module nearest above φ = −180°, on
both endcaps alike) and interleave the rings as ``ring_order`` says: its n-th character is the ring (0 = the
innermost) of the module with id n, whose k counts that ring's earlier characters. An empty ``ring_order``
numbers the modules of all rings in order of φ in [−180°, 180°) (the inner ring first at equal φ).

The TrackML detector's description, :data:`TRACKML_MODULES_TOML`, is measured from the TrackML challenge's
``detectors.csv`` by :mod:`tracking_algs.modules.describe`; :func:`trackml_modules` builds its modules.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np

from inference_iface.options import load_toml, structure
from tracking_algs.modules.geometry import ModuleGeometry
from tracking_algs.ranges import ranks_within

#: The TrackML detector's per-layer module description, shipped with the package.
TRACKML_MODULES_TOML = Path(__file__).resolve().parent.parent / "detectors" / "trackml_modules.toml"


@attrs.frozen(kw_only=True)
class BarrelLayer:
    """Rings of rectangular modules around the beam line (see the module docstring); lengths in mm."""

    volume_id: int
    layer_id: int
    n_phi: int
    radius: float
    radial_stagger: float
    tilt_deg: float
    phi_first_deg: float
    ring_z: tuple[float, ...]
    half_thickness: float
    half_u: float
    half_v: float
    pitch_u: float
    pitch_v: float
    x_over_x0: float


@attrs.frozen(kw_only=True)
class EndcapRing:
    """One ring of trapezoidal modules of an endcap layer (see the module docstring); lengths in mm."""

    radius: float
    n_phi: int
    phi_first_deg: float
    z_offset: float
    phi_stagger: float
    phi_substagger: float
    half_thickness: float
    min_half_u: float
    max_half_u: float
    half_v: float


@attrs.frozen(kw_only=True)
class EndcapLayer:
    """A disk of module rings at ``z`` (mm); one cell pitch and one material for all its modules."""

    volume_id: int
    layer_id: int
    z: float
    pitch_u: float
    pitch_v: float
    x_over_x0: float
    #: The ring of each module in the order of the module ids, one digit per module (see the module docstring);
    #: "" for ids in order of φ.
    ring_order: str = attrs.field(default="")
    rings: tuple[EndcapRing, ...]

    @ring_order.validator
    def _check_ring_order(self, _attribute: attrs.Attribute, value: str) -> None:
        if not value:
            return
        if len(self.rings) > 10 or not set(value) <= set("0123456789"[: len(self.rings)]):
            raise ValueError(f"ring_order: one digit 0 … {len(self.rings) - 1} per module, one per ring "
                             f"(at most 10 rings), got {value!r}")  # fmt: skip
        counts = [value.count(str(index)) for index in range(len(self.rings))]
        if counts != [each.n_phi for each in self.rings]:
            raise ValueError(f"ring_order: {counts} modules per ring, the rings have "
                             f"{[each.n_phi for each in self.rings]}")  # fmt: skip


@attrs.frozen
class ModuleLayout:
    """A detector's layers, each generating its modules (:func:`build_modules`)."""

    barrels: tuple[BarrelLayer, ...]
    endcaps: tuple[EndcapLayer, ...]

    @classmethod
    def from_toml(cls, path: str | Path) -> ModuleLayout:
        """Read a description written by :func:`tracking_algs.modules.describe.layout_toml` (``[[barrels]]``,
        ``[[endcaps]]`` with their ``rings``); unknown keys and bad values raise ``ConfigError``."""
        return structure(load_toml(path), cls, where=f"module layout {str(path)!r}")


def build_modules(layout: ModuleLayout) -> ModuleGeometry:
    """The modules of every layer of ``layout``, layers in (volume, layer) order, each layer's modules in the
    order of their ids (see the module docstring)."""
    layers: list[BarrelLayer | EndcapLayer] = [*layout.barrels, *layout.endcaps]
    layers.sort(key=lambda layer: (layer.volume_id, layer.layer_id))
    parts = [_barrel(layer) if isinstance(layer, BarrelLayer) else _endcap(layer) for layer in layers]
    return ModuleGeometry(**{name: np.concatenate([part[name] for part in parts]) for name in parts[0]})


@functools.cache
def trackml_modules() -> ModuleGeometry:
    """The 18 728 modules of the TrackML detector, generated from :data:`TRACKML_MODULES_TOML` once per process
    (every caller shares the one geometry, which nothing modifies)."""
    return build_modules(ModuleLayout.from_toml(TRACKML_MODULES_TOML))


def _barrel(layer: BarrelLayer) -> dict[str, np.ndarray]:
    ring, k = np.divmod(np.arange(len(layer.ring_z) * layer.n_phi), layer.n_phi)
    phi = np.radians(layer.phi_first_deg + k * 360.0 / layer.n_phi)
    radius = layer.radius + np.where(ring % 2 == 0, 0.5, -0.5) * layer.radial_stagger
    normal = phi + np.radians(layer.tilt_deg)
    zero, one = np.zeros_like(phi), np.ones_like(phi)
    u = np.stack([-np.sin(normal), np.cos(normal), zero], axis=-1)
    v = np.stack([zero, zero, one], axis=-1)
    w = np.stack([np.cos(normal), np.sin(normal), zero], axis=-1)
    centre = np.stack([radius * np.cos(phi), radius * np.sin(phi), np.asarray(layer.ring_z)[ring]], axis=-1)
    sizes = {"half_thickness": layer.half_thickness, "min_half_u": layer.half_u, "max_half_u": layer.half_u,
             "half_v": layer.half_v}  # fmt: skip
    return _columns(layer, centre, np.stack([u, v, w], axis=-1), sizes)


def _endcap(layer: EndcapLayer) -> dict[str, np.ndarray]:
    counts = np.array([each.n_phi for each in layer.rings])
    ring = np.repeat(np.arange(len(counts)), counts)
    k = ranks_within(counts)
    phi_deg = np.array([each.phi_first_deg for each in layer.rings])[ring] + k * 360.0 / counts[ring]
    if layer.ring_order:  # the n-th module of the ids is module k of ring_order[n], k its earlier occurrences
        sequence = np.frombuffer(layer.ring_order.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
        by_ring = np.argsort(sequence, kind="stable")
        order = np.empty_like(by_ring)
        order[by_ring] = np.arange(len(by_ring))  # ring-major row of each id: its rank among the rings' modules
    else:
        order = np.lexsort((ring, np.mod(phi_deg + 180.0, 360.0)))  # module ids in order of φ in [−180°, 180°)
    ring, k, phi = ring[order], k[order], np.radians(phi_deg[order])
    of_ring = {name: np.array([getattr(each, name) for each in layer.rings], dtype=np.float64)[ring]
               for name in ("radius", "z_offset", "phi_stagger", "phi_substagger", "half_thickness", "min_half_u",
                            "max_half_u", "half_v")}  # fmt: skip
    stagger = np.where(k % 2 == 0, 0.5, -0.5) * of_ring["phi_stagger"]
    substagger = ((k % 4 == 0).astype(np.float64) - (k % 4 == 3)) * of_ring["phi_substagger"]
    z = layer.z + of_ring["z_offset"] + stagger + substagger
    side = np.sign(layer.z)
    zero = np.zeros_like(phi)
    u = np.stack([side * np.sin(phi), -side * np.cos(phi), zero], axis=-1)
    v = np.stack([np.cos(phi), np.sin(phi), zero], axis=-1)
    w = np.stack([zero, zero, np.full_like(phi, side)], axis=-1)
    radius = of_ring["radius"]
    centre = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=-1)
    sizes = {name: of_ring[name] for name in ("half_thickness", "min_half_u", "max_half_u", "half_v")}
    return _columns(layer, centre, np.stack([u, v, w], axis=-1), sizes)


def _columns(
    layer: BarrelLayer | EndcapLayer, centre: np.ndarray, rot: np.ndarray, sizes: Mapping[str, float | np.ndarray]
) -> dict[str, np.ndarray]:
    """ModuleGeometry's columns of one layer's modules (ids 1, 2, … in row order)."""
    n = len(centre)
    per_layer = {"volume_id": layer.volume_id, "layer_id": layer.layer_id, "pitch_u": layer.pitch_u,
                 "pitch_v": layer.pitch_v, "x_over_x0": layer.x_over_x0, **sizes}  # fmt: skip
    return {"module_id": np.arange(1, n + 1), "c": centre, "rot": rot,
            **{name: np.broadcast_to(value, (n,)) for name, value in per_layer.items()}}  # fmt: skip
