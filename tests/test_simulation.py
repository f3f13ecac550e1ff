"""Simulation: determinism, event content and counts (physics checks in test_simulation_physics.py)."""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import sys

import attrs
import numpy as np
import pytest

from tracking_algs.cli import main
from tracking_algs.io.trackml import event_path, list_events, read_event, write_event
from tracking_algs.simulation import SimulationConfig, simulate_event, simulate_events


def test_same_seed_same_event_different_seed_different():
    config = SimulationConfig(pileup=5)
    a, b = simulate_event(config, 4, 2), simulate_event(config, 4, 2)
    assert np.array_equal(a.spacepoints.x, b.spacepoints.x)
    assert np.array_equal(a.truth.particle_id, b.truth.particle_id)
    c = simulate_event(config, 5, 2)
    assert len(c.spacepoints) != len(a.spacepoints) or not np.array_equal(c.spacepoints.x, a.spacepoints.x)


@pytest.mark.parametrize(("seed", "event_id", "name", "value"),
                         [(-3, 0, "seed", "-3"), (4, -1, "event_id", "-1"), (4.0, 0, "seed", "4.0"),
                          (True, 0, "seed", "True")])  # fmt: skip
def test_a_seed_or_event_id_that_is_not_an_integer_from_0_is_refused_naming_it(seed, event_id, name, value):
    with pytest.raises(ValueError, match=rf"^simulation {name} must be an integer ≥ 0, got {value}$"):
        simulate_event(SimulationConfig(pileup=1), seed, event_id)
    assert simulate_event(SimulationConfig(pileup=1), np.int64(4), np.int64(0)).event_id == 0


def test_simulate_events_matches_simulate_event():
    config = SimulationConfig(pileup=2)
    events = list(simulate_events(config, 9, 3))
    assert [e.event_id for e in events] == [0, 1, 2]
    single = simulate_event(config, 9, 2)
    assert np.array_equal(events[2].spacepoints.z, single.spacepoints.z)


def test_event_content_is_consistent():
    event = simulate_event(SimulationConfig(pileup=10, noise_fraction=0.1), 1)
    sp, truth, particles = event.spacepoints, event.truth, event.particles
    assert np.array_equal(sp.hit_id, np.arange(1, len(sp) + 1))
    order = np.lexsort((sp.module_id, sp.layer_id, sp.volume_id))
    assert np.array_equal(order, np.arange(len(sp)))  # ordered by volume, layer, module
    noise = truth.particle_id == 0
    assert noise.sum() == pytest.approx(0.1 * (~noise).sum(), abs=1)
    assert np.all(truth.weight[noise] == 0)
    assert truth.weight.sum() == pytest.approx(1.0)
    ids, counts = np.unique(truth.particle_id[~noise], return_counts=True)
    nhits = dict(zip(particles.particle_id.tolist(), particles.nhits.tolist(), strict=True))
    assert all(nhits[i] == c for i, c in zip(ids.tolist(), counts.tolist(), strict=True))
    assert sum(nhits.values()) == (~noise).sum()
    assert np.all(np.isin(particles.q, [-1, 1]))
    assert len(np.unique(particles.particle_id)) == len(particles)
    assert sp.sigma.shape == (len(sp), 2)


def test_pileup_200_counts_are_in_the_trackml_range():
    event = simulate_event(SimulationConfig(pileup=200), 0)
    assert 8_000 <= len(event.particles) <= 13_000
    assert 80_000 <= len(event.spacepoints) <= 130_000
    assert 0.4 <= np.mean(event.particles.pt) <= 0.7


def test_cli_writes_identical_files_for_the_same_seed(tmp_path, capsys):
    for name in ("a", "b"):
        argv = ["simulate", "--events", "2", "--pileup", "3", "--seed", "5", "--output", str(tmp_path / name)]
        assert main(argv) == 0
    assert list_events(tmp_path / "a") == [0, 1]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert match == names
    assert not mismatch
    assert not errors
    assert len(read_event(tmp_path / "a", 1).spacepoints) > 0
    assert "event 1:" in capsys.readouterr().out


def test_a_noise_volume_named_twice_and_a_negative_event_count_are_refused():
    """A volume named twice in ``module_noise_volumes`` had its two rates added unseen; ``simulate_events`` gave no
    event for a negative count and one for ``True``."""
    with pytest.raises(ValueError, match=r"module_noise_volumes names volume 8 more than once; give each once"):
        SimulationConfig(geometry="modules", module_noise_volumes=(8, 8), module_noise_per_particle_hit=(0.1, 0.1))
    for n in (-1, True, 1.0):
        with pytest.raises(ValueError, match=re.escape(f"simulate_events: n must be an integer ≥ 0, got {n!r}")):
            list(simulate_events(SimulationConfig(pileup=0.0), 1, n))
    assert list(simulate_events(SimulationConfig(pileup=0.0), 1, 0)) == []


def test_an_event_whose_write_fails_leaves_none_of_its_files(tmp_path):
    """``write_event`` puts the event's files in place once all are written: one whose truth file's name is taken by
    a directory leaves no file of the event (no hits without their truth), and the other events stay as they were."""
    config = SimulationConfig(pileup=2)
    write_event(tmp_path, simulate_event(config, 9, 0))
    before = sorted(path.name for path in tmp_path.iterdir())
    event_path(tmp_path, 1, "truth").mkdir()
    with pytest.raises(OSError, match=r"(?i)is a directory"):
        write_event(tmp_path, simulate_event(config, 9, 1))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*before, event_path(tmp_path, 1, "truth").name])
    assert list_events(tmp_path) == [0]


def test_an_event_written_again_replaces_every_file_of_its_id_and_a_failed_write_keeps_them(tmp_path):
    """An event written over one of the same id replaces all its files: a part it lacks (truth, particles, cells) and
    a gzipped twin are removed, so that another event's truth is not read back as its own. A write that fails part-way
    (here a directory in the way of the particles) leaves the earlier event whole, byte for byte; it used to remove
    every file of the id."""
    first = simulate_event(SimulationConfig(pileup=2), 9, 0)
    write_event(tmp_path, first)
    names = [path.name for path in tmp_path.iterdir()]
    kept = {name: (tmp_path / name).read_bytes() for name in names}
    shifted = attrs.evolve(first.spacepoints, x=first.spacepoints.x + 1.0)
    (tmp_path / "event000000000-particles.csv.tmp").mkdir()  # the particles cannot be written
    with pytest.raises(OSError, match=r"(?i)is a directory"):
        write_event(tmp_path, attrs.evolve(first, spacepoints=shifted))
    (tmp_path / "event000000000-particles.csv.tmp").rmdir()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == kept
    (tmp_path / "event000000000-cells.csv.gz").write_bytes(b"")  # a twin of another form
    write_event(tmp_path, attrs.evolve(first, spacepoints=shifted, truth=None, particles=None))
    assert [path.name for path in tmp_path.iterdir()] == ["event000000000-hits.csv"]
    again = read_event(tmp_path, 0)
    assert again.truth is None
    assert again.particles is None
    np.testing.assert_array_equal(again.spacepoints.x, shifted.x)


def test_simulate_writes_into_an_output_only_events_of_its_own_options(tmp_path, capsys):
    """An output records the seed and options of its events (``simulation.json``): the same command again, or with more
    events, writes the same files (event 0 byte for byte); another seed or pile-up, or an output holding events with
    no record, is refused (status 2, nothing written), naming what differs."""
    output = tmp_path / "events"
    argv = ["simulate", "--pileup", "1", "--seed", "4", "--output", str(output)]
    assert main([*argv, "--events", "1"]) == 0
    hits = event_path(output, 0, "hits").read_bytes()
    assert main([*argv, "--events", "2"]) == 0
    assert list_events(output) == [0, 1]
    assert event_path(output, 0, "hits").read_bytes() == hits
    capsys.readouterr()
    assert main(["simulate", "--events", "3", "--pileup", "2", "--seed", "5", "--output", str(output)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (
        f"trkx simulate: error: --output {output} holds events simulated with other options (seed: 4 there, 5 now; "
        "simulation.pileup: 1.0 there, 2.0 now); simulate into another --output, or with the same options"
    )
    assert list_events(output) == [0, 1]
    (output / "simulation.json").unlink()
    assert main([*argv, "--events", "1"]) == 2
    assert "holds events that trkx simulate did not record (simulation.json is missing)" in capsys.readouterr().err
    assert not (output / "simulation.json").exists()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_simulate_stopped_mid_way_keeps_whole_events_and_says_so(tmp_path, signal_name):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM on ``trkx simulate``: status 3, one
    line naming the events kept, no traceback, and every event left is whole (no hits without their truth)."""
    output = tmp_path / "events"
    argv = ["simulate", "--events", "1000", "--pileup", "50", "--output", str(output)]
    with subprocess.Popen(
        [sys.executable, "-u", "-m", "tracking_algs.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        assert process.stdout.readline().startswith("event 0:")  # one event written; the next ones on their way
        os.killpg(process.pid, getattr(signal, signal_name))
        out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    kept = re.fullmatch(
        rf"trkx simulate: stopped early: interrupted; events 0 to (\d+) \((\d+) of 1000\) are written whole in "
        rf"{re.escape(str(output))}, none half-written; the same command writes the same files again",
        line,
    )
    assert kept, line
    finished = int(kept[2])
    assert int(kept[1]) == finished - 1
    assert finished - 1 <= len(out.splitlines()) <= finished  # "event N: ..." follows its files
    assert list_events(output) == list(range(finished))
    for event_id in range(finished):
        event = read_event(output, event_id)
        assert event.truth is not None
        assert event.particles is not None


# --- options out of range: refused while the options are read, naming the key -----------------------------------


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("pt_min_gev=20", ("pt_min_gev", "pt_spectrum_p0_gev")),  # used to draw for ever (acceptance 1e-6)
        ("pt_spectrum_p0_gev=1e-6", ("pt_min_gev", "pt_spectrum_p0_gev")),
        ("pt_spectrum_power=1e300", ("pt_min_gev", "pt_spectrum_power")),
        ("eta_max=1000", ("eta_max",)),  # used to write pz = -inf
        ("signal_jet_eta_max=1000", ("signal_jet_eta_max",)),
        ("signal_jet_width=1e300", ("signal_jet_width",)),
        ("signal_pt_slope_gev=1e300", ("signal_pt_slope_gev",)),
        ("noise_fraction=1e15", ("noise_fraction",)),  # used to end in a MemoryError
        ("signal_jets=1000000000000", ("signal_jets",)),
        ("signal_tracks_per_jet=100000000000", ("signal_tracks_per_jet",)),
        ("hadronic_multiplicity=1e18", ("hadronic_multiplicity",)),
        ("cell_charge_sharing_mm=1e6", ("cell_charge_sharing_mm",)),
        ("kshorts_per_particle=1e15", ("kshorts_per_particle",)),
        ("lambdas_per_particle=1e9", ("lambdas_per_particle",)),
        ("photons_per_particle=1e9", ("photons_per_particle",)),
        ("module_noise_per_particle_hit=[1e15,0,0,0,0,0,0,0,0]", ("module_noise_per_particle_hit",)),
    ],
)
@pytest.mark.timeout(60)
def test_simulate_refuses_an_option_out_of_range_at_once_naming_it(tmp_path, capsys, setting, named):
    output = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "0", "--seed", "1", "--output", str(output),
                 "--set", setting]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert error.startswith(f"trkx simulate: error: --set {setting}: ")
    assert all(key in error for key in named), error
    assert not list(output.glob("event*"))


def test_the_default_pt_threshold_keeps_most_of_the_spectrum():
    """The share above ``pt_min_gev`` (checked against the sampler) is far above the least taken, so the default
    events are drawn as before (test_cylinder_simulation_unchanged pins them)."""
    from tracking_algs.simulation.config import MIN_PT_ACCEPTANCE, pt_acceptance
    from tracking_algs.simulation.generator import sample_minimum_bias_pt

    config = SimulationConfig()
    share = pt_acceptance(config.pt_spectrum_p0_gev, config.pt_spectrum_power, config.pt_min_gev)
    assert share > 100 * MIN_PT_ACCEPTANCE
    b = np.random.default_rng(0).beta(2.0, config.pt_spectrum_power - 2.0, size=200_000)
    assert np.mean(b / (1.0 - b) > 2.0) == pytest.approx(pt_acceptance(1.0, config.pt_spectrum_power, 2.0), rel=0.05)
    threshold = SimulationConfig(pt_min_gev=4.0)  # acceptance 1.6e-3: still taken, and drawn quickly
    assert np.all(sample_minimum_bias_pt(np.random.default_rng(1), 100, threshold) >= 4.0)
