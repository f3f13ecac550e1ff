"""Where the real TrackML data lies (``../shared/trackml``, beside the clone) and the mark of the tests that need it.

A clone without ``../shared`` skips those tests with the reason; CI (``CI`` set in the environment) runs beside
it, so there a missing file fails the tests instead of leaving the real-data checks out unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_TRACKML = Path(__file__).resolve().parents[2] / "shared" / "trackml"
REAL_DETECTORS = SHARED_TRACKML / "detectors.csv.gz"
SAMPLE = SHARED_TRACKML / "sample"
FULL = SHARED_TRACKML / "full"
#: one hits file of each kind of real event: the truth sample and a complete pile-up-200 event
REAL_HITS = [SAMPLE / "event000000001-hits.csv.gz", FULL / "event000001001-hits.csv.gz"]


def _missing() -> list[Path]:
    return [path for path in (REAL_DETECTORS, *REAL_HITS) if not path.is_file()]


@pytest.fixture(scope="session")
def real_trackml() -> Path:
    """``../shared/trackml``: skips the test where it is incomplete, or fails it under CI."""
    missing = _missing()
    if missing:
        absent = ", ".join(map(str, missing))
        message = f"the real TrackML data is not here ({absent} absent: a clone without ../shared)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI runs with ../shared beside the clone")
        pytest.skip(message)
    return SHARED_TRACKML


#: the mark of a test (or, as ``pytestmark``, a module) that reads the real TrackML data
needs_real_trackml = pytest.mark.usefixtures("real_trackml")
