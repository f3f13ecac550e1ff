"""Detector descriptions in TOML: the shipped TrackML file, round trips, and simulating another detector."""

from __future__ import annotations

import numpy as np
import pytest

from inference_iface import ConfigError
from tracking_algs.cli import main
from tracking_algs.errors import EventFormatError
from tracking_algs.geometry import TRACKML_TOML, BeamPipe, Detector, Surface, trackml_detector
from tracking_algs.io.trackml import read_event


def two_layer_detector() -> Detector:
    return Detector(
        surfaces=(
            Surface(1, 2, "tracker", "barrel", 100.0, (-500.0, 500.0), 0.01, (0.02, 0.1), modules=(20, 5)),
            Surface(1, 4, "tracker", "barrel", 300.0, (-800.0, 800.0), 0.0, (0.05, 0.5), modules=(40, 8)),
        ),
        bfield_t=1.5,
        beam_pipe=BeamPipe(radius=20.0, x_over_x0=0.0),
    )


def test_the_default_detector_is_the_shipped_file_as_its_header_describes_it():
    detector = trackml_detector()
    assert detector == Detector.from_toml(TRACKML_TOML)
    assert detector.bfield_t == 2.0
    volumes = {kind: {s.volume_id for s in detector.surfaces if s.kind == kind} for kind in ("barrel", "endcap")}
    assert volumes == {"barrel": {8, 13, 17}, "endcap": {7, 9, 12, 14, 16, 18}}
    assert len(detector.surfaces) == 48
    pitches = {"pixel": (0.05, 0.05), "short_strip": (0.08, 1.2), "long_strip": (0.12, 10.8)}
    for surface in detector.surfaces:
        assert surface.resolution == tuple(pitch / np.sqrt(12) for pitch in pitches[surface.subsystem])
        modules = (max(16, int(surface.position / 4)), 14) if surface.kind == "barrel" else (48, 4)
        assert surface.modules == modules
        assert (surface.position < 0) == (surface.volume_id in (7, 12, 16))
    assert trackml_detector(3.8) == Detector(detector.surfaces, bfield_t=3.8, beam_pipe=detector.beam_pipe)


def test_to_toml_writes_the_shipped_file():
    """The writer gives the shipped file's data, line for line (its header comment aside)."""
    text = TRACKML_TOML.read_text()
    data = "\n".join(line for line in text.splitlines() if not line.startswith("#")).lstrip("\n") + "\n"
    assert trackml_detector().to_toml() == data


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
    error = capsys.readouterr().err
    assert "unknown key(s) noise_frac; valid keys are " in error
    assert all(f" {key}," in error for key in ("geometry", "pileup", "noise_fraction"))


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        ("extent = [-500.0, 500.0]", "extent = [500.0, -500.0]", "'extent' must be two finite numbers [low, high]"),
        ("resolution = [0.02, 0.1]", "resolution = [-0.02, 0.1]", "'resolution' must be two finite numbers above 0"),
        ("x_over_x0 = 0.01", "x_over_x0 = -0.01", "'x_over_x0' must be >= 0.0: -0.01"),
        ("modules = [20, 5]", "modules = [0, 5]", "'modules' must be two module counts of 1 or more"),
        ("position = 100.0", "position = 0.0", "'position' of a barrel is its radius and must be above 0 mm"),
        ('kind = "barrel"', 'kind = "tube"', "expected one of 'barrel', 'endcap', got 'tube'"),
        ("bfield_t = 1.5", "bfield_t = 0.0", "'bfield_t' must not be 0"),
        ("layer_id = 4", "layer_id = 2", "one surface per (volume_id, layer_id); repeated: (1, 2)"),
    ],
)
def test_simulate_refuses_a_detector_whose_surfaces_cannot_be_followed(tmp_path, capsys, line, replacement, message):
    """A detector file with a surface no particle could be followed onto is refused before any output is made,
    naming the file, the key and the surface."""
    text = two_layer_detector().to_toml()
    assert line in text
    path = tmp_path / "detector.toml"
    path.write_text(text.replace(line, replacement, 1))
    output = tmp_path / "out"
    assert main(["simulate", "--events", "1", "--pileup", "0", "--output", str(output), "--detector", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"trkx simulate: error: detector file {str(path)!r}: "), error
    assert message in error
    assert "@ $" in error
    assert not output.exists()


def test_a_detector_without_surfaces_is_refused(tmp_path):
    path = tmp_path / "detector.toml"
    path.write_text("surfaces = []\n")
    with pytest.raises(ConfigError, match=r"Length of 'surfaces' must be >= 1: 0"):
        Detector.from_toml(path)
