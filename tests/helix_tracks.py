"""An independent generator of helix tracks for the fitter tests (no code shared with the fitter).

Tracks start on the z axis at ``z0`` (d0 = 0), so a crossing at transverse radius r lies at turning angle
psi = 2·asin(r / 2R) and azimuth phi0 − h·psi/2 (h = +1 for clockwise, i.e. positive charge in +B).
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.geometry import HELIX_CONSTANT, Detector


@attrs.frozen
class Tracks:
    """Generated tracks: their ``spacepoints`` and ``candidates`` (label = track index), the true perigee
    ``params`` [T, 5] and per hit the ``track`` index, the surface ``kind`` ("barrel"/"endcap"), the true
    ``direction`` azimuth at the hit and the true ``position`` [H, 3]."""

    spacepoints: Spacepoints
    candidates: TrackCandidates
    params: np.ndarray
    track: np.ndarray
    kind: np.ndarray
    direction: np.ndarray
    position: np.ndarray


def helix_tracks(
    detector: Detector,
    phi0: np.ndarray,
    theta: np.ndarray,
    pt: np.ndarray,
    charge: np.ndarray,
    z0: np.ndarray,
    rng: np.random.Generator | None = None,
) -> Tracks:
    """Noiseless crossings of each track (within half a turn) with every surface of ``detector``, smeared with
    each surface's resolution when ``rng`` is given.  Arrays of length T (scalars broadcast)."""
    phi0, theta, pt, charge, z0 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in
                                                        (phi0, theta, pt, charge, z0)))  # fmt: skip
    radius = pt / (HELIX_CONSTANT * abs(detector.bfield_t))
    handed = charge * np.sign(detector.bfield_t)
    cot = np.cos(theta) / np.sin(theta)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("track", "r", "psi", "z", "surface")}
    for index, surface in enumerate(detector.surfaces):
        if surface.kind == "barrel":
            r = np.full(len(pt), surface.position)
            with np.errstate(invalid="ignore"):
                psi = 2.0 * np.arcsin(r / (2.0 * radius))
            z = z0 + radius * psi * cot
            inside = (z >= surface.extent[0]) & (z <= surface.extent[1])
        else:
            z = np.full(len(pt), surface.position)
            with np.errstate(divide="ignore", invalid="ignore"):
                psi = (surface.position - z0) / (cot * radius)
            r = 2.0 * radius * np.sin(0.5 * np.clip(psi, 0.0, np.pi))
            inside = (r >= surface.extent[0]) & (r <= surface.extent[1])
        hit = np.isfinite(psi) & (psi > 0.0) & (psi < np.pi) & inside
        for name, value in (("track", np.flatnonzero(hit)), ("r", r[hit]), ("psi", psi[hit]), ("z", z[hit]),
                            ("surface", np.full(hit.sum(), index))):  # fmt: skip
            columns[name].append(value)
    track, r, psi, z, surface_index = (np.concatenate(columns[name]) for name in columns)
    position_phi = phi0[track] - handed[track] * psi / 2.0
    direction = np.angle(np.exp(1j * (phi0[track] - handed[track] * psi)))
    surfaces = detector.surfaces
    sigma = np.array([surfaces[i].resolution for i in surface_index], dtype=np.float64).reshape(-1, 2)
    barrel = np.array([surfaces[i].kind == "barrel" for i in surface_index], dtype=bool)
    true_position = np.column_stack((r * np.cos(position_phi), r * np.sin(position_phi), z))
    if rng is not None:
        noise = rng.normal(size=(len(r), 2)) * sigma
        position_phi = position_phi + noise[:, 0] / r
        z = np.where(barrel, z + noise[:, 1], z)
        r = np.where(barrel, r, r + noise[:, 1])
    spacepoints = Spacepoints(
        hit_id=np.arange(1, len(r) + 1),
        x=r * np.cos(position_phi),
        y=r * np.sin(position_phi),
        z=z,
        volume_id=[surfaces[i].volume_id for i in surface_index],
        layer_id=[surfaces[i].layer_id for i in surface_index],
        module_id=np.zeros(len(r), dtype=np.int64),
        sigma=sigma,
    )
    params = np.column_stack((np.zeros(len(pt)), z0, np.angle(np.exp(1j * phi0)), theta, charge * np.sin(theta) / pt))
    return Tracks(spacepoints, TrackCandidates(track), params, track, np.where(barrel, "barrel", "endcap"),
                  direction, true_position)  # fmt: skip
