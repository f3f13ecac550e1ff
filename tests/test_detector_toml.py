"""Detector descriptions in TOML: the shipped TrackML file, round trips, and simulating another detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracking_algs.cli import main
from tracking_algs.errors import EventFormatError
from tracking_algs.geometry import BeamPipe, Detector, Surface, trackml_detector
from tracking_algs.io.trackml import read_event

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "detectors" / "trackml.toml"


def two_layer_detector() -> Detector:
    return Detector(
        surfaces=(
            Surface(1, 2, "tracker", "barrel", 100.0, (-500.0, 500.0), 0.01, (0.02, 0.1), modules=(20, 5)),
            Surface(1, 4, "tracker", "barrel", 300.0, (-800.0, 800.0), 0.0, (0.05, 0.5), modules=(40, 8)),
        ),
        bfield_t=1.5,
        beam_pipe=BeamPipe(radius=20.0, x_over_x0=0.0),
    )


def test_shipped_file_is_the_trackml_detector():
    assert Detector.from_toml(SHIPPED) == trackml_detector()


@pytest.mark.parametrize("detector", [trackml_detector(), trackml_detector(3.8), two_layer_detector()])
def test_toml_round_trip(tmp_path, detector):
    path = tmp_path / "detector.toml"
    path.write_text(detector.to_toml())
    assert Detector.from_toml(path) == detector


def test_simulate_another_detector_from_toml(tmp_path, capsys):
    path = tmp_path / "detector.toml"
    path.write_text(two_layer_detector().to_toml())
    argv = ["simulate", "--events", "1", "--pileup", "2", "--seed", "1", "--output", str(tmp_path / "out"),
            "--detector", str(path), "--set", "noise_fraction=0", "--set", "hit_inefficiency=0"]  # fmt: skip
    assert main(argv) == 0
    event = read_event(tmp_path / "out", 0, two_layer_detector())
    assert set(event.spacepoints.layer_id.tolist()) == {2, 4}
    np.testing.assert_allclose(np.sort(np.unique(np.round(event.spacepoints.r))), [100.0, 300.0])
    assert np.all(event.truth.particle_id > 0)
    with pytest.raises(EventFormatError, match="volume_id"):
        read_event(tmp_path / "out", 0)  # the TrackML detector has no volume 1


def test_simulate_rejects_unknown_settings(tmp_path, capsys):
    argv = ["simulate", "--events", "1", "--output", str(tmp_path), "--set", "noise_frac=2"]
    assert main(argv) == 2
    assert "unknown key(s) noise_frac; valid keys are pileup" in capsys.readouterr().err
