"""From surface crossings to measured hits: inefficiency, Gaussian smearing, noise hits and module ids."""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.geometry import Detector


@attrs.frozen
class Hits:
    """Measured hits before ordering: surface index, measured and true position, true momentum, particle row
    (-1 for noise) and local resolution [M, 2]."""

    surface: np.ndarray
    measured: np.ndarray
    true_position: np.ndarray
    true_momentum: np.ndarray
    particle: np.ndarray
    sigma: np.ndarray

    def take(self, rows: np.ndarray) -> Hits:
        """The selected rows (an index array or a mask) of every column."""
        return Hits(*(getattr(self, f.name)[rows] for f in attrs.fields(Hits)))

    @classmethod
    def concatenate(cls, parts: list[Hits]) -> Hits:
        """One set holding every part's rows in order."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in attrs.fields(cls)))


def surface_arrays(detector: Detector) -> dict[str, np.ndarray]:
    """Per-surface arrays: ``barrel`` flag, ``position``, ``extent`` [S, 2], ``resolution`` [S, 2]."""
    surfaces = detector.surfaces
    return {
        "barrel": np.array([s.kind == "barrel" for s in surfaces]),
        "position": np.array([s.position for s in surfaces], dtype=np.float64),
        "extent": np.array([s.extent for s in surfaces], dtype=np.float64).reshape(-1, 2),
        "resolution": np.array([s.resolution for s in surfaces], dtype=np.float64).reshape(-1, 2),
    }


def smear(
    position: np.ndarray, surface: np.ndarray, detector: Detector, rng: np.random.Generator, enabled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Measured positions [M, 3] and their local errors [M, 2]: Gaussian in (r·phi, z) on barrels and in
    (r·phi, r) on disks, with each surface's resolution; the measurement stays on its surface."""
    arrays = surface_arrays(detector)
    sigma = arrays["resolution"][surface]
    if not enabled:
        return position.copy(), sigma
    barrel = arrays["barrel"][surface]
    noise = rng.normal(size=(len(position), 2)) * sigma
    r = np.hypot(position[:, 0], position[:, 1])
    phi = np.arctan2(position[:, 1], position[:, 0]) + noise[:, 0] / r
    r_measured = np.where(barrel, r, r + noise[:, 1])
    z_measured = np.where(barrel, position[:, 2] + noise[:, 1], position[:, 2])
    return np.column_stack((r_measured * np.cos(phi), r_measured * np.sin(phi), z_measured)), sigma


def noise_hits(n: int, detector: Detector, rng: np.random.Generator) -> Hits:
    """``n`` noise hits spread uniformly over the sensitive area of all surfaces."""
    arrays = surface_arrays(detector)
    low, high = arrays["extent"].T
    barrel = arrays["barrel"]
    area = np.where(barrel, 2.0 * np.pi * arrays["position"] * (high - low), np.pi * (high**2 - low**2))
    surface = rng.choice(len(area), size=n, p=area / area.sum())
    phi = rng.uniform(-np.pi, np.pi, size=n)
    u = rng.uniform(size=n)
    lo, hi = low[surface], high[surface]
    on_barrel = barrel[surface]
    r = np.where(on_barrel, arrays["position"][surface], np.sqrt(lo**2 + u * (hi**2 - lo**2)))
    z = np.where(on_barrel, lo + u * (hi - lo), arrays["position"][surface])
    position = np.column_stack((r * np.cos(phi), r * np.sin(phi), z))
    return Hits(
        surface=surface,
        measured=position,
        true_position=position.copy(),
        true_momentum=np.zeros((n, 3)),
        particle=np.full(n, -1, dtype=np.int64),
        sigma=arrays["resolution"][surface],
    )


def module_ids(measured: np.ndarray, surface: np.ndarray, detector: Detector) -> np.ndarray:
    """Module id of each hit from :meth:`Surface.module_id` (azimuth and z on barrels, r on disks)."""
    result = np.zeros(len(surface), dtype=np.int64)
    phi = np.arctan2(measured[:, 1], measured[:, 0])
    r = np.hypot(measured[:, 0], measured[:, 1])
    for index in np.unique(surface):
        rows = surface == index
        spec = detector.surfaces[index]
        along = measured[rows, 2] if spec.kind == "barrel" else r[rows]
        result[rows] = spec.module_id(phi[rows], along)
    return result
