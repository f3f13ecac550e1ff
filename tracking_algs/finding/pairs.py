"""Geometric compatibility of candidate hit pairs.

At pile-up 200 a hit has hundreds of neighbours inside the embedding radius, so the ``k_max`` nearest of them
are mostly hits no track of interest could join to it. :class:`PairGeometry` removes those before the cap,
with three cuts on the pair alone (each can be switched off in :class:`~tracking_algs.finding.config.PairCuts`):

- both hits on one layer (a track crosses a layer once, apart from loopers), unless they are an *overlap pair*:
  on different modules of the layer and at most ``max_overlap_mm`` apart, as where one particle crosses two
  overlapping modules (28 % of the particle-layer pairs of real TrackML events); an overlap pair skips the two
  cuts below, which hits millimetres apart cannot measure;
- the circle through the beam line (the origin in x-y) and both hits bends more than a track of ``min_pt_gev``:
  pT ≈ 0.3 · B · R with R = r₁ r₂ d / (2 |x₁ y₂ − y₁ x₂|), d the transverse distance of the hits, B the field of
  the detector (without a field nothing bends and the cut is off);
- the straight line through both hits in r-z meets the beam line at |z₀| > ``max_z0_mm``.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.event import Spacepoints
from tracking_algs.finding.config import PairCuts
from tracking_algs.geometry import HELIX_CONSTANT, trackml_detector


class PairGeometry:
    """The hit columns the :class:`PairCuts` need (float32: the cuts are coarse), for one event; ``bfield_t`` is
    the field of the detector the hits are from (None: that of the default, :func:`trackml_detector`)."""

    def __init__(self, spacepoints: Spacepoints, cuts: PairCuts, bfield_t: float | None = None) -> None:
        self.cuts = cuts
        self.bfield_t = trackml_detector().bfield_t if bfield_t is None else float(bfield_t)
        self.x = np.asarray(spacepoints.x, dtype=np.float32)
        self.y = np.asarray(spacepoints.y, dtype=np.float32)
        self.z = np.asarray(spacepoints.z, dtype=np.float32)
        self.r = np.hypot(self.x, self.y)
        self.layer = spacepoints.layer_key
        self.module = np.asarray(spacepoints.module_id)

    def overlap(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Boolean mask over the pairs of hit rows that are overlap pairs: one layer, different modules, at most
        ``cuts.max_overlap_mm`` apart (all False when that is 0)."""
        shape = np.broadcast_shapes(np.shape(first), np.shape(second))
        if self.cuts.max_overlap_mm <= 0:
            return np.zeros(shape, dtype=bool)
        near = (self.x[first] - self.x[second]) ** 2 + (self.y[first] - self.y[second]) ** 2
        near += (self.z[first] - self.z[second]) ** 2
        near = near <= np.float32(self.cuts.max_overlap_mm) ** 2
        return near & (self.layer[first] == self.layer[second]) & (self.module[first] != self.module[second])

    def compatible(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Boolean mask over the pairs (``first[i]``, ``second[i]``) of hit rows that pass every cut (``first`` and
        ``second`` broadcast against each other: a column of hits and a block of their partners, say)."""
        cuts = self.cuts
        keep = np.ones(np.broadcast_shapes(np.shape(first), np.shape(second)), dtype=bool)
        overlap = self.overlap(first, second) if cuts.different_layers else np.zeros_like(keep)
        if cuts.different_layers:
            keep &= self.layer[first] != self.layer[second]
        if cuts.min_pt_gev > 0 or cuts.max_z0_mm > 0:
            x1, y1, r1 = self.x[first], self.y[first], self.r[first]
            x2, y2, r2 = self.x[second], self.y[second], self.r[second]
        if cuts.min_pt_gev > 0 and self.bfield_t != 0:
            # R ≥ R_min  ⇔  r₁ r₂ d ≥ 2 R_min |x₁ y₂ − y₁ x₂| (no division: pairs on one radial line pass)
            min_radius = cuts.min_pt_gev / (HELIX_CONSTANT * abs(self.bfield_t))
            chord = np.hypot(x2 - x1, y2 - y1)
            keep &= r1 * r2 * chord >= 2 * min_radius * np.abs(x1 * y2 - y1 * x2)
        if cuts.max_z0_mm > 0:
            # |z₁ − r₁ (z₂ − z₁)/(r₂ − r₁)| ≤ z₀max, multiplied through by |r₂ − r₁| (pairs at one radius fail)
            z1, z2 = self.z[first], self.z[second]
            keep &= np.abs(z1 * (r2 - r1) - r1 * (z2 - z1)) <= cuts.max_z0_mm * np.abs(r2 - r1)
        return keep | overlap
