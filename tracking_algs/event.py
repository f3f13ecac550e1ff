"""Event data: spacepoints, truth and particles as numpy-backed attrs containers.

Each container holds equal-length 1-D (or per-row) numpy columns and slices cheaply with
:meth:`Columns.take` (a boolean mask or an index array), which applies to every column at once.
Units: mm, GeV, electron charges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from tracking_algs.errors import EventFormatError

C = TypeVar("C", bound="Columns")
#: Each id of a hit is ≥ 0 and below its bound here: the ids for which :attr:`Spacepoints.layer_key` and
#: :attr:`Spacepoints.module_key` are one integer per layer and per module (and layer keys stay below 10⁹, the
#: track builder's ``LAYER_KEY_SPAN``).
ID_LIMITS = {"volume_id": 1_000, "layer_id": 1_000_000, "module_id": 1_000_000}


#: The largest \|x\|, \|y\|, \|z\| of a spacepoint the tracking takes (mm): float32's largest number, as the finding
#: computes in float32.
MAX_COORDINATE = float(np.finfo(np.float32).max)


def float_column(value: Any) -> np.ndarray:
    """``value`` as a float64 numpy array (the converter of floating-point columns)."""
    return np.asarray(value, dtype=np.float64)


#: The largest magnitude of an integer column given as floats: every whole number up to 2⁵³ is a float64 of its own,
#: beyond it a float stands for several integers (a TrackML ``particle_id`` of about 10¹⁸ read as a float is another
#: particle's id).
MAX_EXACT_FLOAT = 2.0**53


def whole_numbers(value: Any, column: str) -> np.ndarray:
    """``value`` as an int64 numpy array, refusing values that are not whole numbers: integers (and booleans) as they
    are, unsigned ones below 2⁶³, floats only where every one is a finite whole number of magnitude at most 2⁵³
    (``1.0``, not ``1.7``, NaN or ``1e19``, which a cast would cut to 1, to a huge negative number or to another
    integer without a word), nothing else.  Raises ``ValueError`` naming ``column`` (e.g.
    ``"TrackCandidates.labels"``), the first bad value and its row (index along the first axis)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biu":
        if array.dtype.kind != "f":
            raise ValueError(f"{column}: values of dtype {array.dtype}; expected integers")
        whole = np.isfinite(array) & (np.trunc(array) == array)
        exact = whole & (np.abs(array) <= MAX_EXACT_FLOAT)
        if not exact.all():
            first = np.argwhere(~exact)[0]
            where = f" at row {first[0]}" if array.ndim else ""
            what = "is not a whole number" if not whole[tuple(first)] else "is beyond 2**53, where floats skip integers"
            raise ValueError(f"{column}: {array[tuple(first)]}{where} {what}; expected integers")
    elif array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        first = np.argwhere(array > np.iinfo(np.int64).max)[0]
        where = f" at row {first[0]}" if array.ndim else ""
        raise ValueError(f"{column}: {array[tuple(first)]}{where} is beyond int64's range; expected integers")
    return np.asarray(array, dtype=np.int64)


def _int_column(value: Any, instance: Any, field: attrs.Attribute) -> np.ndarray:
    return whole_numbers(value, f"{type(instance).__name__}.{field.name}")


#: The converter of integer columns (``attrs.field(converter=int_column)``): :func:`whole_numbers`, naming the column
#: by its class and field (``TrackCandidates.labels: 1.7 at row 0 is not a whole number; expected integers``).
int_column = attrs.Converter(_int_column, takes_self=True, takes_field=True)


@attrs.frozen
class Columns:
    """Base of the column containers: shape and length checks, and row selection."""

    #: the shape of each row of a column: None lets every column have any shape per row (at least one dimension, the
    #: rows); a mapping makes every column one value per row but those it names, which have the shape it gives
    row_shapes: ClassVar[dict[str, tuple[int, ...]] | None] = None

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(type(self)):
            shape = np.shape(getattr(self, field.name))
            row_shape = None if self.row_shapes is None else self.row_shapes.get(field.name, ())
            if not shape or (row_shape is not None and shape[1:] != row_shape):
                expected = "[N, ...]" if row_shape is None else str(["N", *row_shape]).replace("'", "")
                raise EventFormatError(f"{type(self).__name__}.{field.name}: shape {list(shape)}; expected {expected}")
        lengths = {field.name: len(getattr(self, field.name)) for field in attrs.fields(type(self))}
        if len(set(lengths.values())) > 1:
            raise EventFormatError(f"{type(self).__name__}: columns differ in length: {lengths}")

    def __len__(self) -> int:
        first = attrs.fields(type(self))[0]
        return len(getattr(self, first.name))

    def take(self: C, rows: np.ndarray | slice) -> C:
        """The rows selected by a boolean mask, an index array or a slice, in every column."""
        return type(self)(**{field.name: getattr(self, field.name)[rows] for field in attrs.fields(type(self))})


@attrs.frozen
class Spacepoints(Columns):
    """Measured hits. ``sigma`` holds the two local measurement errors per hit (mm):
    (r·phi, z) on a barrel layer and (r·phi, r) on an endcap disk."""

    row_shapes: ClassVar[dict[str, tuple[int, ...]] | None] = {"sigma": (2,)}

    hit_id: np.ndarray = attrs.field(converter=int_column)
    x: np.ndarray = attrs.field(converter=float_column)
    y: np.ndarray = attrs.field(converter=float_column)
    z: np.ndarray = attrs.field(converter=float_column)
    volume_id: np.ndarray = attrs.field(converter=int_column)
    layer_id: np.ndarray = attrs.field(converter=int_column)
    module_id: np.ndarray = attrs.field(converter=int_column)
    sigma: np.ndarray = attrs.field(converter=float_column)

    def __attrs_post_init__(self) -> None:
        """Besides the shapes and lengths, :class:`~tracking_algs.errors.EventFormatError` naming the first spacepoint
        (row and ``hit_id``) whose volume, layer or module id lies outside :data:`ID_LIMITS`; whose x, y or z is not a
        finite number within float32's range (:data:`MAX_COORDINATE`: the finders' features are float32, and their
        graph search takes finite positions only); or whose errors are not positive (the first finite, the second may
        be inf for a 1-D hit, as the fitter takes them: the track building weighs its links by them)."""
        super().__attrs_post_init__()
        for name, limit in ID_LIMITS.items():
            ids = getattr(self, name)
            self._refuse(~((ids >= 0) & (ids < limit)), f"{name} must be in [0, {limit})", ids.__getitem__)
        within = [np.abs(coordinate) <= MAX_COORDINATE for coordinate in (self.x, self.y, self.z)]
        self._refuse(
            ~(within[0] & within[1] & within[2]),  # NaN is within no range
            f"x, y, z must be finite and within float32's range (|value| ≤ {MAX_COORDINATE:.6g} mm)",
            lambda row: f"x={self.x[row]}, y={self.y[row]}, z={self.z[row]}",
        )
        sigma = self.sigma
        self._refuse(
            ~((sigma[:, 0] > 0) & np.isfinite(sigma[:, 0]) & (sigma[:, 1] > 0)),  # NaN is > 0 nowhere
            "sigma must be positive, the first finite (the second may be inf for a 1-D hit)",
            lambda row: sigma[row].tolist(),
        )

    def _refuse(self, bad: np.ndarray, expected: str, value: Callable[[int], object]) -> None:
        if bad.any():
            row = int(np.argmax(bad))
            raise EventFormatError(
                f"spacepoint row {row} (hit_id {self.hit_id[row]}): {expected}; got {value(row)} "
                f"({int(bad.sum())} such rows)"
            )

    @property
    def r(self) -> np.ndarray:
        """Transverse radius sqrt(x² + y²) in mm."""
        return np.hypot(self.x, self.y)

    @property
    def phi(self) -> np.ndarray:
        """Azimuth atan2(y, x) in (-pi, pi]."""
        return np.arctan2(self.y, self.x)

    @property
    def distance(self) -> np.ndarray:
        """Distance sqrt(x² + y² + z²) from the origin in mm."""
        return np.hypot(self.r, self.z)

    @property
    def layer_key(self) -> np.ndarray:
        """One integer per detector layer: ``volume_id`` · 10⁶ + ``layer_id``."""
        return self.volume_id * 1_000_000 + self.layer_id

    @property
    def module_key(self) -> np.ndarray:
        """One integer per module: :attr:`layer_key` · 10⁶ + ``module_id``."""
        return self.layer_key * 1_000_000 + self.module_id


@attrs.frozen
class Truth(Columns):
    """Per-hit truth, row-aligned with the spacepoints: the particle (0 = noise), true position and momentum."""

    row_shapes: ClassVar[dict[str, tuple[int, ...]] | None] = {}

    hit_id: np.ndarray = attrs.field(converter=int_column)
    particle_id: np.ndarray = attrs.field(converter=int_column)
    tx: np.ndarray = attrs.field(converter=float_column)
    ty: np.ndarray = attrs.field(converter=float_column)
    tz: np.ndarray = attrs.field(converter=float_column)
    tpx: np.ndarray = attrs.field(converter=float_column)
    tpy: np.ndarray = attrs.field(converter=float_column)
    tpz: np.ndarray = attrs.field(converter=float_column)
    weight: np.ndarray = attrs.field(converter=float_column)


@attrs.frozen
class Particles(Columns):
    """Generated particles: production vertex (mm), momentum (GeV), charge and number of hits."""

    row_shapes: ClassVar[dict[str, tuple[int, ...]] | None] = {}

    particle_id: np.ndarray = attrs.field(converter=int_column)
    vx: np.ndarray = attrs.field(converter=float_column)
    vy: np.ndarray = attrs.field(converter=float_column)
    vz: np.ndarray = attrs.field(converter=float_column)
    px: np.ndarray = attrs.field(converter=float_column)
    py: np.ndarray = attrs.field(converter=float_column)
    pz: np.ndarray = attrs.field(converter=float_column)
    q: np.ndarray = attrs.field(converter=int_column)
    nhits: np.ndarray = attrs.field(converter=int_column)

    @property
    def pt(self) -> np.ndarray:
        """Transverse momentum in GeV."""
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity."""
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-12))


@attrs.frozen
class Cells(Columns):
    """The cells of each hit's cluster (TrackML ``cells.csv``): the hit, the cell's channels along the module's
    local u (``ch0``) and v (``ch1``), and the charge it collected (``value``)."""

    row_shapes: ClassVar[dict[str, tuple[int, ...]] | None] = {}

    hit_id: np.ndarray = attrs.field(converter=int_column)
    ch0: np.ndarray = attrs.field(converter=int_column)
    ch1: np.ndarray = attrs.field(converter=int_column)
    value: np.ndarray = attrs.field(converter=float_column)


@attrs.frozen
class Event:
    """One event: its spacepoints, and truth, particles and cells when known (real data may have none of them)."""

    event_id: int = attrs.field(validator=[attrs.validators.instance_of((int, np.integer)), attrs.validators.ge(0)])
    spacepoints: Spacepoints = attrs.field(validator=attrs.validators.instance_of(Spacepoints))
    truth: Truth | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Truth))
    )
    particles: Particles | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Particles))
    )
    cells: Cells | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Cells))
    )

    def __attrs_post_init__(self) -> None:
        """The tables must fit together, as :func:`~tracking_algs.io.trackml.read_event` requires of the files:
        :class:`~tracking_algs.errors.EventFormatError` naming the event, the table and the first id that does not."""
        if isinstance(self.event_id, bool):
            raise TypeError(f"Event.event_id must be an integer ≥ 0, got {self.event_id!r}")
        where = f"event {self.event_id}"
        _check_unique(self.spacepoints.hit_id, f"{where}: spacepoints.hit_id")
        if self.truth is not None and not np.array_equal(self.truth.hit_id, self.spacepoints.hit_id):
            raise EventFormatError(f"{where}: truth rows must align with spacepoints by hit_id")
        if self.particles is not None:
            _check_unique(self.particles.particle_id, f"{where}: particles.particle_id")
            if self.truth is not None:
                ids = self.truth.particle_id
                unknown = (ids != 0) & ~np.isin(ids, self.particles.particle_id)
                if unknown.any():
                    row = int(np.argmax(unknown))
                    raise EventFormatError(f"{where}: truth.particle_id {ids[row]} at row {row} is not 0 (noise) or a "
                                     "particle_id of the particles")  # fmt: skip
        if self.cells is not None:
            unknown = ~np.isin(self.cells.hit_id, self.spacepoints.hit_id)
            if unknown.any():
                row = int(np.argmax(unknown))
                raise EventFormatError(
                    f"{where}: cells.hit_id {self.cells.hit_id[row]} at row {row} is not a hit of the spacepoints"
                )

    def known_truth(self) -> Truth:
        """The truth of each spacepoint, for what cannot do without it (matching, training, validation); raises
        ``ValueError`` where the event has none (real data read without its truth file)."""
        return _known(self.truth, self.event_id, "truth")

    def known_particles(self) -> Particles:
        """The event's particles, for what cannot do without them; raises ``ValueError`` where the event has none."""
        return _known(self.particles, self.event_id, "particles")


def _check_unique(values: np.ndarray, where: str) -> None:
    """:class:`~tracking_algs.errors.EventFormatError` naming ``where``, the first value that ``values`` holds twice and
    its rows."""
    order = np.argsort(values, kind="stable")
    twice = np.flatnonzero(values[order][1:] == values[order][:-1])
    if twice.size:
        first, second = sorted(order[twice[0] : twice[0] + 2].tolist())
        raise EventFormatError(f"{where}: {values[first]} at rows {first} and {second}; expected each once")


def _known(table: C | None, event_id: int, name: str) -> C:
    if table is None:
        raise ValueError(f"event {event_id} has no {name}; a {name} file is needed here")
    return table


@attrs.frozen
class TrackCandidates:
    """Found tracks as one label per spacepoint row: ``labels[i]`` is the track id of row ``i``, -1 if unassigned
    (a label below -1 is an :class:`~tracking_algs.errors.EventFormatError` naming its row)."""

    labels: np.ndarray = attrs.field(converter=int_column)

    def __attrs_post_init__(self) -> None:
        if self.labels.ndim != 1:
            shape = list(self.labels.shape)
            raise EventFormatError(f"TrackCandidates.labels: shape {shape}; expected [N], one a spacepoint")
        below = self.labels < -1
        if below.any():
            row = int(np.argmax(below))
            raise EventFormatError(f"TrackCandidates.labels: {self.labels[row]} at row {row} ({int(below.sum())} such "
                                   "rows); expected a track id ≥ 0, or -1 for a spacepoint on no track")  # fmt: skip

    @property
    def track_ids(self) -> np.ndarray:
        """Sorted ids of the tracks (labels ≥ 0)."""
        return np.unique(self.labels[self.labels >= 0])

    def __len__(self) -> int:
        return len(self.track_ids)

    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tracks in compressed form: ``(track_ids, offsets, rows)``; the spacepoint rows of track
        ``track_ids[k]`` are ``rows[offsets[k]:offsets[k + 1]]`` (ascending row order)."""
        assigned = np.flatnonzero(self.labels >= 0)
        order = assigned[np.argsort(self.labels[assigned], kind="stable")]
        sorted_labels = self.labels[order]
        starts = np.flatnonzero(np.diff(sorted_labels, prepend=-1))  # labels are >= 0: the first row starts one
        offsets = np.append(starts, len(order))
        return sorted_labels[starts], offsets, order
