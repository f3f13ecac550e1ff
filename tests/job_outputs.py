"""The reproducibility contract of ``trkx run``, as a check on two output directories.

``tracks.csv`` must be identical byte for byte (labels and hit assignment).  In ``fitted_tracks.csv`` the rows
(which tracks were fitted and kept by the selection) and the discrete columns (``ndf``, ``n_hits``, ``n_outliers``,
``status``) must be identical; the floating-point columns agree within :data:`FIT_RTOL` of the value, or of the
column's median magnitude for values near zero (a covariance term that cancels to almost nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Relative tolerance of the fitted floats between runs (docs/configuration.md, "Reproducibility").
FIT_RTOL = 1e-9
#: Columns of fitted_tracks.csv that must be identical.
FIT_DISCRETE = ("event_id", "track_id", "ndf", "n_hits", "n_outliers", "status")


def _table(path: Path) -> dict[str, np.ndarray]:
    header = path.read_text().splitlines()[0].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return {name: data[:, k] for k, name in enumerate(header)}


def assert_same_results(produced: Path, reference: Path) -> None:
    """Fail unless the job outputs in ``produced`` meet the reproducibility contract against ``reference``."""
    assert (produced / "tracks.csv").read_bytes() == (reference / "tracks.csv").read_bytes(), "tracks.csv differs"
    got, want = _table(produced / "fitted_tracks.csv"), _table(reference / "fitted_tracks.csv")
    assert list(got) == list(want), "fitted_tracks.csv has other columns"
    for name in FIT_DISCRETE:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"fitted_tracks.csv column {name}")
    for name in set(want) - set(FIT_DISCRETE):
        scale = float(np.median(np.abs(want[name]))) if len(want[name]) else 0.0
        np.testing.assert_allclose(got[name], want[name], rtol=FIT_RTOL, atol=FIT_RTOL * scale,
                                   err_msg=f"fitted_tracks.csv column {name}")  # fmt: skip
