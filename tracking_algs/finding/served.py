"""The tracking chain served as one model: its tensor contract and the client that calls it.

A served chain (the ``tracking_chain`` Python-backend model or the ``tracking_ensemble`` Triton ensemble
written by ``trkx repo add-tracking``) takes one event and returns one track label per spacepoint:

=========== ============ ========= ===========================================================
tensor      shape        dtype     content
=========== ============ ========= ===========================================================
FEATURES    [N, 8]       float64   one row per spacepoint, columns :data:`FEATURE_COLUMNS`:
                                   x, y, z (mm), volume_id, layer_id, module_id, sigma_0,
                                   sigma_1 (the two local measurement errors, mm)
HIT_ID      [N]          int64     the spacepoints' hit ids
LABELS      [N]          int64     track label of each row: 0, 1, ..., the labels of the local
                                   finder's candidates; -1 = not on any track
GNN_EDGES   [2, E]       int64     the edges the GNN scored above its cut (rows of the event,
                                   inner hit first), in the order the finder builds them
GNN_SCORES  [E]          float32   their GNN scores
=========== ============ ========= ===========================================================

A client asks for ``GNN_EDGES`` and ``GNN_SCORES`` only where it builds tracks over them again (``[fitting.selection]
rebuild_free_hits``, :mod:`~tracking_algs.finding.free_hits`); a served chain need not offer them otherwise.

``FEATURES`` carries the raw spacepoint columns, so the server runs exactly the code the local
:class:`~tracking_algs.finding.finder.TrackFinder` runs (feature computation included) on exactly the
same numbers: the labels are identical to the local finder's, not merely close. The columns are float64
because float32 positions (≈ 60 µm steps at 1 m) change the network features in their last bit for
many hits, which moves candidate edges across the graph radius; ids below 2**53 are exact in float64.

:class:`ServedTrackFinder` has the :meth:`find` of the local finder and returns the same
:class:`~tracking_algs.finding.finder.FindingResult` (without the graph's and the filter's edges, which stay on the
server; with the GNN's where it asks for them).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

import attrs
import numpy as np

from inference_iface import ConfigError, InferenceInterface, InputError, ModelError
from inference_iface.checksums import file_sha256
from inference_iface.options import unstructure
from inference_iface.signature import ModelSignature, TensorSpec
from tracking_algs.errors import EventFormatError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.model_dir import CARD_NAME, STAGES, model_path, resolve_model_dir
from tracking_algs.finding.result import FindingResult
from tracking_algs.fitting.hook import checked_fitter, close_fitter

if TYPE_CHECKING:
    from tracking_algs.fitting.hook import TrackFitter

#: Columns of the ``FEATURES`` tensor, in order.
FEATURE_COLUMNS: tuple[str, ...] = ("x", "y", "z", "volume_id", "layer_id", "module_id", "sigma_0", "sigma_1")
FEATURES, HIT_ID, LABELS = "FEATURES", "HIT_ID", "LABELS"
GNN_EDGES, GNN_SCORES = "GNN_EDGES", "GNN_SCORES"

#: ``[finding] serving`` → the served model's default name in the repository.
SERVED_MODELS: dict[str, str] = {"chain": "tracking_chain", "ensemble": "tracking_ensemble"}

#: The served chain's signature (the ``tracking_chain`` model and the ``tracking_ensemble`` ensemble).
CHAIN_SIGNATURE = ModelSignature(
    inputs=(TensorSpec(FEATURES, "float64", (-1, len(FEATURE_COLUMNS))), TensorSpec(HIT_ID, "int64", (-1,))),
    outputs=(TensorSpec(LABELS, "int64", (-1,)),),
)
#: The outputs a served chain adds for a client that builds over its GNN edges again.
EDGE_OUTPUTS = (TensorSpec(GNN_EDGES, "int64", (2, -1)), TensorSpec(GNN_SCORES, "float32", (-1,)))

_POSITIONS = ("x", "y", "z")
_IDS = ("volume_id", "layer_id", "module_id")


def chain_checksum(finding: FindingConfig) -> str:
    """The hex SHA-256 of what decides a served chain's labels: the ``finding`` options as the chain runs them (its
    ``model_dir`` and ``serving`` left out, which only say where the models lie and how they are reached) and the
    bytes of the three models and the model card in ``finding.model_dir``.  ``trkx repo add-tracking`` writes it
    into the served chain's and ensemble's configs, and a job served by them expects it (``model_checksum``), so a
    job never takes labels from a chain built with other options or models than its own."""
    model_dir = resolve_model_dir(finding.model_dir)
    options = unstructure(attrs.evolve(finding, model_dir="", serving="stages"))
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in [model_path(model_dir, stage) for stage in STAGES] + [model_dir / CARD_NAME]:
        if not path.is_file():
            raise ConfigError(f"model directory {str(model_dir)!r} has no {path.name}; a served chain runs it")
        digest.update(path.name.encode())
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def chain_inputs(spacepoints: Spacepoints) -> dict[str, np.ndarray]:
    """The ``FEATURES`` and ``HIT_ID`` tensors of one event's spacepoints."""
    columns = [getattr(spacepoints, name) for name in _POSITIONS + _IDS]
    sigma = np.asarray(spacepoints.sigma, dtype=np.float64).reshape(len(spacepoints), 2)
    features = np.column_stack([*columns, sigma]) if len(spacepoints) else np.empty((0, len(FEATURE_COLUMNS)))
    return {
        FEATURES: np.ascontiguousarray(features, dtype=np.float64),
        HIT_ID: np.ascontiguousarray(spacepoints.hit_id, dtype=np.int64),
    }


def spacepoints_from_chain(features: np.ndarray, hit_id: np.ndarray) -> Spacepoints:
    """The spacepoints sent as ``FEATURES`` and ``HIT_ID`` (the inverse of :func:`chain_inputs`).

    Raises:
        InputError: a tensor has the wrong shape, an id column holds a value that is not an integer, or a row holds
            what :class:`~tracking_algs.event.Spacepoints` refuse (an id out of range, a position that is not a
            finite number within float32's range, an error that is not positive), named by its row.
    """
    features = np.asarray(features)
    hit_id = np.asarray(hit_id)
    if features.ndim != 2 or features.shape[1] != len(FEATURE_COLUMNS):
        raise InputError(
            f"{FEATURES}: expected shape [N, {len(FEATURE_COLUMNS)}] (columns {', '.join(FEATURE_COLUMNS)}), "
            f"got {list(features.shape)}"
        )
    if hit_id.shape != (features.shape[0],):
        raise InputError(
            f"{HIT_ID}: expected shape [{features.shape[0]}] (one id per {FEATURES} row), got {list(hit_id.shape)}"
        )
    values = features.astype(np.float64, copy=False)
    ids = {}
    for name in _IDS:
        column = values[:, FEATURE_COLUMNS.index(name)]
        if not np.array_equal(column, np.round(column)):
            row = int(np.flatnonzero(column != np.round(column))[0])
            raise InputError(f"{FEATURES}: column {name!r} must hold integers; row {row} holds {column[row]!r}")
        ids[name] = column.astype(np.int64)
    try:
        return Spacepoints(
            hit_id=hit_id.astype(np.int64, copy=False),
            x=values[:, 0],
            y=values[:, 1],
            z=values[:, 2],
            **ids,
            sigma=values[:, 6:8],
        )
    except EventFormatError as error:
        raise InputError(f"{FEATURES}: {error}") from None


class ServedTrackFinder:
    """Track finding by a served chain: one ``infer`` per event through any :class:`InferenceInterface`
    (e.g. the ``triton`` backend with ``model_name = "tracking_chain"`` or ``"tracking_ensemble"``).

    ``find`` returns a :class:`FindingResult` like :meth:`TrackFinder.find`, with ``edges`` and ``scores``
    empty (with ``with_edges``: the GNN's, ``GNN_EDGES`` and ``GNN_SCORES``, under ``"gnn"``) and ``timing_ms``
    holding ``inputs`` (packing the tensors), ``served`` (the call: transfer and the whole chain on the server) and
    ``fitting`` when a fitter is set (the fit runs here, on the client's own spacepoints). The fitter is held as
    :func:`~tracking_algs.fitting.hook.checked_fitter` gives it, as :class:`TrackFinder` holds its own.
    """

    def __init__(
        self, inference: InferenceInterface, fitter: TrackFitter | None = None, with_edges: bool = False
    ) -> None:
        check_chain_signature(inference.signature, inference.describe(), with_edges)
        self.inference = inference
        self.fitter = checked_fitter(fitter, type(self).__name__)
        self.with_edges = with_edges

    def find(self, spacepoints: Spacepoints) -> FindingResult:
        """Send one event's spacepoints to the served chain; its track candidates (and fit)."""
        start = time.perf_counter()
        inputs = chain_inputs(spacepoints)
        packed = time.perf_counter()
        names = [LABELS, GNN_EDGES, GNN_SCORES] if self.with_edges else [LABELS]
        outputs = self.inference.infer(inputs, outputs=names)
        served = time.perf_counter()
        labels = np.asarray(outputs.LABELS)
        self._check_shape(LABELS, labels, [len(spacepoints)])
        edges: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}
        if self.with_edges:
            edges["gnn"], scores["gnn"] = np.asarray(outputs.GNN_EDGES), np.asarray(outputs.GNN_SCORES)
            self._check_shape(GNN_EDGES, edges["gnn"], [2, -1])
            self._check_shape(GNN_SCORES, scores["gnn"], [edges["gnn"].shape[1]])
            rows = edges["gnn"]
            if rows.size and not (rows.min() >= 0 and rows.max() < len(spacepoints)):
                where = self.inference.describe()
                raise ModelError(f"{where}: {GNN_EDGES} holds rows outside 0..{len(spacepoints) - 1}")
        timing = {"inputs": (packed - start) * 1e3, "served": (served - packed) * 1e3}
        try:
            candidates = TrackCandidates(labels=labels)
        except ValueError as error:  # labels that are not whole numbers, or below -1
            raise ModelError(f"{self.inference.describe()}: {LABELS}: {error}") from None
        fit = None
        if self.fitter is not None:
            fit = self.fitter.fit(spacepoints, candidates)
            timing["fitting"] = (time.perf_counter() - served) * 1e3
        return FindingResult(candidates=candidates, edges=edges, scores=scores, timing_ms=timing, fit=fit)

    def _check_shape(self, name: str, array: np.ndarray, expected: list[int]) -> None:
        """Raise :class:`ModelError` unless the served ``array`` has the ``expected`` shape (-1: any length)."""
        mismatched = any(want not in (-1, got) for want, got in zip(expected, array.shape, strict=False))
        if array.ndim != len(expected) or mismatched:
            raise ModelError(f"{self.inference.describe()}: {name} has shape {list(array.shape)}, expected {expected}")

    def close(self) -> None:
        """Release the inference interface and the fitter's resources."""
        self.inference.close()
        close_fitter(self.fitter)

    def __enter__(self) -> ServedTrackFinder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_chain_signature(signature: ModelSignature, where: str, with_edges: bool = False) -> None:
    """Raise :class:`ModelError` unless ``signature`` has the served chain's tensors (:data:`CHAIN_SIGNATURE`, with
    the :data:`EDGE_OUTPUTS` too where ``with_edges``) by name, dtype and rank; the sizes of fixed dimensions are
    checked on each call's arrays."""
    outputs = CHAIN_SIGNATURE.outputs + (EDGE_OUTPUTS if with_edges else ())
    for kind, wanted, have in (
        ("input", CHAIN_SIGNATURE.inputs, signature.inputs),
        ("output", outputs, signature.outputs),
    ):
        found = {spec.name: spec for spec in have}
        for spec in wanted:
            got = found.get(spec.name)
            if got is None or got.dtype != spec.dtype or len(got.shape) != len(spec.shape):
                raise ModelError(
                    f"{where} is not a served tracking chain: {kind} {spec.name} should be {spec.dtype} "
                    f"{list(spec.shape)}, the model has {got!r}"
                )
