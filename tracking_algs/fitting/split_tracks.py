"""Split tracks: one particle written as two tracks on one helix.

The track building can cut a particle's chain of hits in two (a missing edge, a hit taken by another chain, the two
faces of a pixel disk carrying two interleaved chains); both pieces then fit well, and the one with fewer hits holds
less than half of the particle's hits: a fake under double matching.  Where the pieces are equal, both are fakes; and
a particle built twice over the same layers gives a track and its duplicate.  Such tracks' fitted perigees agree
within their errors, which two different particles' rarely do.  :func:`redundant_pieces` finds the tracks whose
perigee agrees with that of a better track: one with more hits, or as many and a better fit.

The χ² of a difference is solved with a Cholesky factorisation written out in numpy's element-wise operations,
not LAPACK (whose kernels depend on the CPU), so that the same tracks are dropped on every machine.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from tracking_algs.fitting.helix import wrap_angle

#: Largest difference of the perigee direction (cos φ, sin φ, θ) between two tracks tried as pieces of one helix: a
#: preselection far wider than the direction errors of a 5-hit track (a few mrad)
DIRECTION_WINDOW = 0.05


def redundant_pieces(
    params: np.ndarray, cov: np.ndarray, n_hits: np.ndarray, pvalue: np.ndarray, max_chi2: float
) -> np.ndarray:
    """Mask [T] of the tracks (perigee ``params`` [T, 5], ``cov`` [T, 5, 5], ``n_hits`` [T], fit ``pvalue`` [T]) whose
    perigee agrees with that of a better track: the χ² of the difference of the two, with the sum of their
    covariances, is below ``max_chi2``, and the other has more hits, or as many and a higher p-value (or the same
    p-value and a lower index)."""
    redundant = np.zeros(len(params), dtype=bool)
    first, second = agreeing_pairs(params, cov, max_chi2)
    same_hits, same_pvalue = n_hits[first] == n_hits[second], pvalue[first] == pvalue[second]
    first_worse = (n_hits[first] < n_hits[second]) | (same_hits & (pvalue[first] < pvalue[second]))
    first_worse |= same_hits & same_pvalue & (first > second)
    redundant[np.where(first_worse, first, second)] = True
    return redundant


def agreeing_pairs(params: np.ndarray, cov: np.ndarray, max_chi2: float) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (first, second) [P] of tracks (perigee ``params`` [T, 5], ``cov`` [T, 5, 5]) whose perigees agree:
    the χ² of their difference, with the sum of their covariances, is below ``max_chi2``; first < second."""
    if len(params) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    direction = np.column_stack((np.cos(params[:, 2]), np.sin(params[:, 2]), params[:, 3]))
    pairs = cKDTree(direction).query_pairs(DIRECTION_WINDOW, output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]
    difference = params[first] - params[second]
    difference[:, 2] = wrap_angle(difference[:, 2])
    agree = chi2_of(difference, cov[first] + cov[second]) < max_chi2
    return first[agree], second[agree]


def chi2_of(difference: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """dᵀ C⁻¹ d [N] of differences ``difference`` [N, k] with covariances ``cov`` [N, k, k] (inf where C is not
    positive definite), through the Cholesky factor L of C: the χ² is |y|² for L y = d."""
    n, size = difference.shape
    factor = np.zeros((n, size, size))
    valid = np.ones(n, dtype=bool)
    for i in range(size):
        for j in range(i + 1):
            value = cov[:, i, j].copy()
            for k in range(j):
                value -= factor[:, i, k] * factor[:, j, k]
            if i == j:
                valid &= value > 0.0
                factor[:, i, i] = np.sqrt(np.where(valid, value, 1.0))
            else:
                factor[:, i, j] = value / factor[:, j, j]
    solved = np.zeros((n, size))
    for i in range(size):
        value = difference[:, i].copy()
        for k in range(i):
            value -= factor[:, i, k] * solved[:, k]
        solved[:, i] = value / factor[:, i, i]
    chi2 = np.zeros(n)
    for i in range(size):
        chi2 += solved[:, i] * solved[:, i]
    return np.where(valid, chi2, np.inf)
