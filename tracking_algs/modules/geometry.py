"""The detector as flat modules: one row per sensitive module, in the TrackML ``detectors.csv`` model.

Module ``i`` is a flat plate centred at ``c[i]`` whose local axes u, v (in the plane) and w (its normal) are the
columns of ``rot[i]``: a local point (u, v, w) is at ``c[i] + rot[i] @ (u, v, w)`` in global x, y, z (mm).
Its sensitive area is the trapezoid |v| ≤ ``half_v``, |u| ≤ h(v), whose half width h grows linearly from
``min_half_u`` at v = −``half_v`` to ``max_half_u`` at v = +``half_v`` (barrel modules are rectangles:
``min_half_u == max_half_u``); it is ``2 · half_thickness`` thick and has ``x_over_x0`` radiation lengths of
material at normal incidence. Its cells are ``pitch_u`` × ``pitch_v``.
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.event import MAX_COORDINATE, float_column, int_column, whole_numbers

#: Bits of the packed (volume, layer, module) key: module ids below 2²⁴, layer ids below 2¹⁶, volume ids below 2²³.
_MODULE_BITS, _LAYER_BITS, _VOLUME_BITS = 24, 16, 23
_BITS = (_VOLUME_BITS, _LAYER_BITS, _MODULE_BITS)
#: Each id of a module is ≥ 0 and below its bound here (the bits of the packed key).
MODULE_ID_LIMITS = {name: 1 << bits for name, bits in zip(("volume_id", "layer_id", "module_id"), _BITS, strict=True)}
#: The largest half width, half thickness or pitch of a module (mm): 100 m, tens of times a collider detector's size;
#: a larger one would only make the navigation's bins exhaust the memory
MAX_MODULE_SIZE_MM = 1.0e5
#: How far a rotation's columns may be from orthonormal (|RᵀR − 1|, the largest element); TrackML's file: 1.3e-6.
ROTATION_TOLERANCE = 1e-4
#: The columns that are sizes of a module (mm), each above 0 and at most :data:`MAX_MODULE_SIZE_MM`.
_SIZES = ("half_thickness", "min_half_u", "max_half_u", "half_v", "pitch_u", "pitch_v")


@attrs.frozen
class ModuleGeometry:
    """M modules as columns of length M (see the module docstring for the model); units mm.

    Rows are identified by (``volume_id``, ``layer_id``, ``module_id``), unique and non-negative; :meth:`lookup`
    finds the rows of ids. ``c`` is [M, 3], ``rot`` [M, 3, 3] (columns: the local u, v, w axes in global
    coordinates), the other columns [M].
    """

    volume_id: np.ndarray = attrs.field(converter=int_column)
    layer_id: np.ndarray = attrs.field(converter=int_column)
    module_id: np.ndarray = attrs.field(converter=int_column)
    c: np.ndarray = attrs.field(converter=float_column)
    rot: np.ndarray = attrs.field(converter=float_column)
    half_thickness: np.ndarray = attrs.field(converter=float_column)
    min_half_u: np.ndarray = attrs.field(converter=float_column)
    max_half_u: np.ndarray = attrs.field(converter=float_column)
    half_v: np.ndarray = attrs.field(converter=float_column)
    pitch_u: np.ndarray = attrs.field(converter=float_column)
    pitch_v: np.ndarray = attrs.field(converter=float_column)
    x_over_x0: np.ndarray = attrs.field(converter=float_column)

    def __attrs_post_init__(self) -> None:
        n = len(self.module_id)
        shapes = {field.name: getattr(self, field.name).shape for field in attrs.fields(type(self))}
        expected = {name: (n, 3) if name == "c" else (n, 3, 3) if name == "rot" else (n,) for name in shapes}
        if shapes != expected:
            wrong = ", ".join(f"{name} {shapes[name]}" for name in shapes if shapes[name] != expected[name])
            raise ValueError(f"ModuleGeometry of {n} modules: wrong shape of {wrong}")
        ids = (self.volume_id, self.layer_id, self.module_id)
        for name, values, bits in zip(("volume_id", "layer_id", "module_id"), ids, _BITS, strict=True):
            if n and (values.min() < 0 or values.max() >= 1 << bits):
                raise ValueError(f"ModuleGeometry: {name} outside [0, {1 << bits})")
        keys = _key(*ids)
        order = np.argsort(keys, kind="stable")
        repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        if repeated.size:
            row = order[repeated[0] + 1]
            raise ValueError(f"ModuleGeometry: module (volume {self.volume_id[row]}, layer {self.layer_id[row]}, "
                             f"module {self.module_id[row]}) appears more than once")  # fmt: skip
        self._check_values()

    def _check_values(self) -> None:
        """``ValueError`` naming the first module (row and ids) with a size that is not positive or beyond
        :data:`MAX_MODULE_SIZE_MM`, a centre that is not a finite coordinate within float32's range (as a hit's), a
        rotation whose columns are not orthonormal (within :data:`ROTATION_TOLERANCE`) or material (``x_over_x0``)
        that is not a finite number ≥ 0; what :func:`~tracking_algs.modules.detectors_csv.read_detectors_csv` refuses
        in a file, for a geometry built in Python."""
        size = f"a size (mm) above 0 and at most {MAX_MODULE_SIZE_MM:g}"
        rules = {
            name: ((getattr(self, name) > 0) & (getattr(self, name) <= MAX_MODULE_SIZE_MM), size) for name in _SIZES
        }
        rules["c"] = (
            (np.abs(self.c) <= MAX_COORDINATE).all(axis=1),
            f"a centre within float32's range (|x|, |y|, |z| ≤ {MAX_COORDINATE:.6g} mm), as a hit's",
        )
        deviation = np.abs(np.einsum("nji,njk->nik", self.rot, self.rot) - np.eye(3)).max(axis=(1, 2), initial=0.0)
        rules["rot"] = (
            deviation <= ROTATION_TOLERANCE,
            f"orthonormal columns within {ROTATION_TOLERANCE:g} (the local u, v, w axes)",
        )
        rules["x_over_x0"] = ((self.x_over_x0 >= 0) & np.isfinite(self.x_over_x0), "a finite number ≥ 0")
        for name, (good, expected) in rules.items():
            if not good.all():
                row = int(np.argmin(good))
                raise ValueError(
                    f"ModuleGeometry: {name} of row {row} (volume {self.volume_id[row]}, layer {self.layer_id[row]}, "
                    f"module {self.module_id[row]}) is {getattr(self, name)[row].tolist()}; expected {expected}"
                )

    def __len__(self) -> int:
        return len(self.module_id)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` checked as module rows (a boolean mask over the modules as it is): ``ValueError`` for a row that
        is not a whole number in [0, number of modules), -1 (:meth:`lookup`'s "no module") included, which would be
        taken as the last module."""
        array = np.asarray(rows)
        if array.dtype == bool:
            return array
        array = whole_numbers(array, "ModuleGeometry rows")
        if array.size and not (array.min() >= 0 and array.max() < len(self)):
            raise ValueError(
                f"ModuleGeometry rows from {array.min()} to {array.max()}; expected rows 0 to {len(self) - 1} of its "
                f"{len(self)} modules (-1, lookup's 'no module', is none)"
            )
        return array

    def lookup(self, volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray) -> np.ndarray:
        """Row index (int64) of each (volume, layer, module) id triple, -1 where no module has those ids
        (``ValueError`` naming the argument for ids that are not whole numbers)."""
        named = {"volume_id": volume_id, "layer_id": layer_id, "module_id": module_id}
        ids = np.broadcast_arrays(
            *(whole_numbers(values, f"ModuleGeometry.lookup: {name}") for name, values in named.items())
        )
        known = np.ones(ids[0].shape, dtype=bool)
        for values, bits in zip(ids, _BITS, strict=True):
            known &= (values >= 0) & (values < 1 << bits)
        if not len(self):
            return np.full(known.shape, -1, dtype=np.int64)
        keys = _key(*(np.where(known, values, 0) for values in ids))
        own = _key(self.volume_id, self.layer_id, self.module_id)
        order = np.argsort(own)
        at = np.minimum(np.searchsorted(own[order], keys), len(own) - 1)
        return np.where(known & (own[order][at] == keys), order[at], -1)

    def to_local(self, rows: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local (u, v, w) on module ``rows[k]`` of the global points ``xyz[k]`` ([n, 3]); w is the distance from
        the module's mid-plane along its normal."""
        rows = self.rows(rows)
        local = np.einsum("nji,nj->ni", self.rot[rows], np.asarray(xyz, dtype=np.float64) - self.c[rows])
        return local[:, 0], local[:, 1], local[:, 2]

    def to_global(self, rows: np.ndarray, u: np.ndarray, v: np.ndarray, w: np.ndarray | float = 0.0) -> np.ndarray:
        """Global points [n, 3] of the local coordinates (u, v, w) on module ``rows[k]`` (w = 0: the mid-plane)."""
        rows = self.rows(rows)
        local = np.stack(np.broadcast_arrays(u, v, w), axis=-1).astype(np.float64)
        return self.c[rows] + np.einsum("nij,nj->ni", self.rot[rows], local)

    def inside(self, rows: np.ndarray, u: np.ndarray, v: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        """Whether local (u, v) lies within the sensitive trapezoid of module ``rows[k]``, grown by ``tolerance``
        mm on every side: |v| ≤ half_v + tolerance and |u| ≤ h(v) + tolerance, h(v) the half width at v (clipped
        to the module's v range)."""
        rows = self.rows(rows)
        half_v, low, high = self.half_v[rows], self.min_half_u[rows], self.max_half_u[rows]
        along = (np.clip(v, -half_v, half_v) + half_v) / (2 * half_v)
        half_u = low + (high - low) * along
        return (np.abs(v) <= half_v + tolerance) & (np.abs(u) <= half_u + tolerance)

    def normal(self, rows: np.ndarray) -> np.ndarray:
        """Unit normals [n, 3] (the local w axes) of modules ``rows``."""
        return self.rot[self.rows(rows), :, 2]

    def resolution(self, rows: np.ndarray) -> np.ndarray:
        """Measurement resolution [n, 2] in (u, v), mm: the cell pitch / √12 of modules ``rows``."""
        rows = self.rows(rows)
        return np.stack([self.pitch_u[rows], self.pitch_v[rows]], axis=-1) / np.sqrt(12.0)


def _key(volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray) -> np.ndarray:
    """One int64 per (volume, layer, module), ordered like the triples (ids within :data:`_BITS`)."""
    return (volume_id << (_LAYER_BITS + _MODULE_BITS)) | (layer_id << _MODULE_BITS) | module_id
