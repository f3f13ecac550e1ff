"""End to end: ``trkx run`` on simulated events with the shipped models and local ONNX Runtime.

Real files in, real ONNX Runtime sessions, real output files checked column by column; an interrupted
job (SIGKILL) resumed with ``--resume`` gives the same files as an uninterrupted one; a bad event is
reported and skipped while the others finish.

The physics floors here only show that the trained chain is at work (untrained models give no matched
track; the floors lie well below what three pile-up-5 events give); the acceptance figures are measured on
held-out events by benchmarks/physics_validation.py and reported in docs/physics.md.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from job_outputs import assert_same_results

from inference_iface import cores as inference_cores
from inference_iface.shared_memory import SHM, remove_unmapped
from tracking_algs.cli import main
from tracking_algs.commands.run import EXIT_EVENTS_FAILED, EXIT_STOPPED
from tracking_algs.cores import core_slices
from tracking_algs.event import Event
from tracking_algs.geometry import trackml_detector
from tracking_algs.io.trackml import event_path, list_events, read_event, write_event
from tracking_algs.job.report import FITTED_COLUMNS
from tracking_algs.job.semaphores import RECORD as SEMAPHORES_RECORD
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local_onnx.toml"
SMALL = ["simulation.pileup=5", "job.seed=2000000"]


def _run(*args: str) -> int:
    return main(["run", str(CONFIG), "--no-progress", *args])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("job")
    assert _run("--simulate", "3", "--output", str(output), *[f"--set={item}" for item in SMALL]) == 0
    return output


def test_job_writes_every_documented_file(finished_job):
    for name in ("tracks.csv", "fitted_tracks.csv", "performance.json"):
        assert (finished_job / name).stat().st_size > 0, name
    for name in ("efficiency_vs_pt", "efficiency_vs_eta", "fake_rate_vs_eta", "pulls", "timing"):
        assert (finished_job / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_tracks_csv_lists_every_hit_once(finished_job):
    rows = _rows(finished_job / "tracks.csv")
    assert list(rows[0]) == ["event_id", "hit_id", "track_id"]
    config = SimulationConfig(pileup=5)
    for event_id in range(3):
        event = simulate_event(config, seed=2_000_000, event_id=event_id)
        hits = sorted(int(row["hit_id"]) for row in rows if int(row["event_id"]) == event_id)
        assert hits == sorted(event.spacepoints.hit_id.tolist())
    assert {int(row["track_id"]) for row in rows} - {-1}, "no track was found"


def test_fitted_tracks_have_the_documented_columns_and_no_nan(finished_job):
    rows = _rows(finished_job / "fitted_tracks.csv")
    assert list(rows[0]) == ["event_id", *FITTED_COLUMNS]
    assert len(FITTED_COLUMNS) == 1 + 5 + 15 + 5
    values = np.array([[float(row[name]) for name in FITTED_COLUMNS] for row in rows])
    assert np.isfinite(values).all()
    tracks = _rows(finished_job / "tracks.csv")
    track_ids = {(row["event_id"], row["track_id"]) for row in tracks if row["track_id"] != "-1"}
    # after the selection by the fit, the fitted tracks are exactly the tracks, each with the hits its fit used
    assert {(row["event_id"], row["track_id"]) for row in rows} == track_ids
    sizes = {key: 0 for key in track_ids}
    for row in tracks:
        if row["track_id"] != "-1":
            sizes[(row["event_id"], row["track_id"])] += 1
    assert all(sizes[(row["event_id"], row["track_id"])] == int(row["n_hits"]) for row in rows)
    assert all(int(row["status"]) == 0 and int(row["n_hits"]) >= 5 for row in rows)


def test_performance_json_reports_metrics_timing_and_backend(finished_job):
    performance = json.loads((finished_job / "performance.json").read_text())
    assert performance["events"] == [0, 1, 2]
    tracking = performance["tracking"]
    # 1.0 / 0 % here; 0.99 / 0 % with the job seeds 2 000 001 and 2 000 002
    assert 0.9 < tracking["efficiency"] <= 1.0
    assert 0.0 <= tracking["fake_rate"] < 0.05
    for stage in ("graph", "filter", "gnn"):
        assert 0.0 < performance["edges"][stage]["efficiency"] <= 1.0
        assert 0.0 < performance["edges"][stage]["purity"] <= 1.0
    for stage in ("graph", "filter", "gnn", "building", "fitting"):
        stats = performance["timing_ms"][stage]
        assert 0.0 <= stats["min"] <= stats["mean"] <= stats["max"]
    assert all("onnxruntime" in text for text in performance["backend"].values())
    assert set(performance["fitting"]["pulls"]) == {"d0", "z0", "phi", "theta", "qop"}
    # the candidates as built, before the selection by the fit, are reported too
    candidates = performance["tracking_candidates"]
    assert candidates["n_tracks"] >= tracking["n_tracks"]
    assert candidates["n_fake"] >= tracking["n_fake"]
    # what the selection keeps of the particles the candidates found, and what it finds beyond them
    kept = tracking["kept_by_selection"]
    assert kept["n_matched_candidates"] == candidates["n_matched"]
    assert kept["n_kept"] + kept["n_gained"] == tracking["n_matched"]
    assert kept["fraction"] == kept["n_kept"] / kept["n_matched_candidates"]
    # the written tracks fitted above the particles' pT threshold, a subset of them
    above = tracking["fitted_above_pt_min"]
    assert above["pt_min"] == 1.0
    assert 0 < above["n_tracks"] < tracking["n_tracks"]
    assert above["n_fake"] <= tracking["n_fake"]


def test_resume_after_kill_gives_identical_results(finished_job, tmp_path):
    """A job killed (SIGKILL) as it reaches its third event keeps the two it finished; ``--resume`` processes the
    third only and writes the results of the uninterrupted job."""
    output = tmp_path / "killed"
    sets = [f"--set={item}" for item in SMALL]
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", "0", "run", str(CONFIG),
               "--simulate", "3", "--output", str(output), "--no-progress", *sets]  # fmt: skip
    killed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(path.name for path in (output / "events").glob("*.npz")) == [
        "event000000000.npz",
        "event000000001.npz",
    ]
    assert not (output / "tracks.csv").exists()
    finished = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (output / "events").glob("*.npz")}
    assert _run("--simulate", "3", "--output", str(output), "--resume", *[f"--set={item}" for item in SMALL]) == 0
    assert_same_results(output, finished_job)
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in finished} == finished  # not processed again


@pytest.mark.parametrize(("target", "jobs"), [("group/INT", "1"), ("group/INT", "2"), ("client/TERM", "1")])
def test_an_interrupted_job_stops_cleanly_and_resumes(finished_job, tmp_path, target, jobs):
    """Ctrl-C (SIGINT to the process group: the job and its workers) or SIGTERM as the job reaches its third event:
    no traceback, status 3, the report of the events it finished written; ``--resume`` finishes the job with the
    results of the uninterrupted one."""
    output = tmp_path / "interrupted"
    sets = [f"--set={item}" for item in SMALL]
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", target, "run", str(CONFIG),
               "--simulate", "3", "--jobs", jobs, "--output", str(output), "--no-progress", *sets]  # fmt: skip
    stopped = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                             start_new_session=True, timeout=600)  # fmt: skip
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "stopped early: interrupted" in stopped.stderr
    finished = json.loads((output / "performance.json").read_text())["events"]
    if jobs == "1":  # the job's own process loads event 2: events 0 and 1 are saved before the signal
        assert finished == [0, 1]
    else:  # a worker loads it, while the other may be running any event (its result is not waited for)
        assert set(finished) <= {0, 1}
    written = {int(row["event_id"]) for row in _rows(output / "tracks.csv")}
    assert written == set(finished)
    assert _run("--simulate", "3", "--output", str(output), "--resume", *sets) == 0
    assert_same_results(output, finished_job)


def test_a_resume_that_would_read_other_files_is_refused(tmp_path, monkeypatch, capsys):
    """Options naming a file by a relative path, resumed from another directory where that path is another file, or
    after the file changed: the job would compute with other inputs, so ``--resume`` is refused (status 2), naming
    the option; from the first directory, with the file as it was, it resumes."""
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, field in ((first, 2.0), (second, 1.5)):
        directory.mkdir()
        (directory / "detector.toml").write_text(trackml_detector(field).to_toml())
    output = tmp_path / "out"
    sets = [f"--set={item}" for item in SMALL] + ["--set=job.detector=detector.toml"]
    monkeypatch.chdir(first)
    assert _run("--simulate", "1", "--output", str(output), *sets) == 0
    monkeypatch.chdir(second)
    assert _run("--simulate", "1", "--output", str(output), "--resume", *sets) == 2
    assert "files.job.detector:" in capsys.readouterr().err
    monkeypatch.chdir(first)
    (first / "detector.toml").write_text(trackml_detector(1.5).to_toml())
    assert _run("--simulate", "1", "--output", str(output), "--resume", *sets) == 2
    assert "files.job.detector:" in capsys.readouterr().err
    (first / "detector.toml").write_text(trackml_detector(2.0).to_toml())
    assert _run("--simulate", "1", "--output", str(output), "--resume", *sets) == 0


def test_a_killed_worker_stops_the_job_which_resumes(finished_job, tmp_path):
    """A worker process killed (SIGKILL, as the out-of-memory killer does) mid-job: status 3 and a message, no
    traceback; ``--resume`` finishes the job with the results of the uninterrupted one."""
    output = tmp_path / "worker_killed"
    sets = [f"--set={item}" for item in SMALL]
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", "0", "run", str(CONFIG),
               "--simulate", "3", "--jobs", "2", "--output", str(output), "--no-progress", *sets]  # fmt: skip
    stopped = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                             timeout=600)  # fmt: skip
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "a worker process ended abruptly" in stopped.stderr
    assert _run("--simulate", "3", "--output", str(output), "--resume", *sets) == 0
    assert_same_results(output, finished_job)


@pytest.mark.parametrize("resumed_jobs", ["2", "1"])
def test_a_job_killed_with_its_workers_leaves_no_semaphores_once_resumed(finished_job, tmp_path, resumed_jobs):
    """SIGKILL to the process group of a ``--jobs 2`` job (its workers and multiprocessing's resource tracker with
    it) leaves the worker pool's named semaphores in /dev/shm; the next job removes them, and ``--resume`` finishes
    with the results of the uninterrupted job. The semaphores are those the killed job recorded: the test suite's
    other process makes and holds semaphores of its own meanwhile, which a resume must leave alone."""
    output = tmp_path / "killed"
    sets = [f"--set={item}" for item in SMALL]
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", "group", "run", str(CONFIG),
               "--simulate", "3", "--jobs", "2", "--output", str(output), "--no-progress", *sets]  # fmt: skip
    killed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                            start_new_session=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    record = output / "events" / SEMAPHORES_RECORD
    leaked = set(json.loads(record.read_text())["names"]) & {path.name for path in SHM.glob("sem.mp-*")}
    assert leaked, "the killed pool left no semaphore: nothing to test"
    assert _run("--simulate", "3", "--jobs", resumed_jobs, "--output", str(output), "--resume", *sets) == 0
    assert not record.exists()
    assert remove_unmapped(leaked) == []  # none of them is left unless a live process maps it
    assert_same_results(output, finished_job)


def test_parallel_workers_give_identical_results(finished_job, tmp_path):
    output = tmp_path / "parallel"
    assert _run("--simulate", "3", "--jobs", "2", "--output", str(output), *[f"--set={item}" for item in SMALL]) == 0
    assert_same_results(output, finished_job)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_job_on_one_core_in_another_environment_gives_identical_results(finished_job, tmp_path):
    """The job in a process allowed one core (one thread of each pool), with another ``PYTHONHASHSEED``, the BLAS and
    OpenMP thread variables at 1, run from another directory, a path with a space, writing to a relative one."""
    workdir = tmp_path / "a directory"
    workdir.mkdir()
    one_core = min(os.sched_getaffinity(0))
    threads = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")
    env = os.environ | threads | {"PYTHONHASHSEED": "4242"}
    command = [sys.executable, "-m", "tracking_algs.cli", "run", str(CONFIG), "--simulate", "3", "--output", "out put",
               "--no-progress", *[f"--set={item}" for item in SMALL]]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {one_core}),
                          capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_same_results(workdir / "out put", finished_job)


def test_a_job_spread_over_more_cores_than_the_machine_has_gives_identical_results(finished_job, tmp_path, monkeypatch):
    """Every pool sized by ``usable_cores`` (the graph's KD-tree shares, the building's slices, ONNX Runtime's
    intra-op threads) sized as on a 5-core machine: the thread layout of a larger machine gives the same results."""
    for name in ("tracking_algs.cores", "tracking_algs.finding.graph", "tracking_algs.finding.building",
                 "tracking_algs.fitting.kalman", "backends.onnxruntime"):  # fmt: skip
        importlib.import_module(name)
    patched = [module for module in list(sys.modules.values())
               if getattr(module, "usable_cores", None) is inference_cores.usable_cores]  # fmt: skip
    assert len(patched) >= 5
    for module in patched:
        monkeypatch.setattr(module, "usable_cores", lambda: 5)
    assert len(core_slices(5)) == 5
    output = tmp_path / "five_cores"
    assert _run("--simulate", "3", "--output", str(output), *[f"--set={item}" for item in SMALL]) == 0
    assert_same_results(output, finished_job)


def test_rerun_without_resume_into_a_used_directory_is_refused(finished_job, capsys):
    assert _run("--simulate", "3", "--output", str(finished_job), *[f"--set={item}" for item in SMALL]) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_event_is_reported_and_skipped(tmp_path):
    events = tmp_path / "events"
    config = SimulationConfig(pileup=2)
    for event_id in range(3):
        write_event(events, simulate_event(config, seed=2_000_100, event_id=event_id))
    hits = event_path(events, 1, "hits")
    lines = hits.read_text().splitlines()
    hits.write_text("\n".join([lines[0], lines[1].replace(lines[1].split(",")[1], "nan", 1), *lines[2:]]) + "\n")
    assert list_events(events) == [0, 1, 2]
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == EXIT_EVENTS_FAILED
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [0, 2]
    (failure,) = performance["failed_events"]
    assert failure["event_id"] == 1
    assert failure["stage"] == "read"
    assert "hits.csv" in failure["error"]
    good = read_event(events, 2)
    written = np.array([int(row["event_id"]) for row in _rows(output / "tracks.csv")])
    assert int((written == 2).sum()) == len(good.spacepoints)


def test_an_event_of_noise_alone_has_no_efficiency(tmp_path, capsys):
    """Truth of noise only and a particles file of its header alone: the job writes the event and reports no
    efficiency and no resolution (``null`` in performance.json, "n/a" in the summary), not 0 or NaN."""
    events = tmp_path / "events"
    write_event(events, simulate_event(SimulationConfig(pileup=2), seed=2_000_300, event_id=0))
    truth = event_path(events, 0, "truth")
    header, *rows = truth.read_text().splitlines()
    truth.write_text("\n".join([header, *(",".join([row.split(",")[0], "0", *row.split(",")[2:]]) for row in rows)]))
    particles = event_path(events, 0, "particles")
    particles.write_text(particles.read_text().splitlines()[0] + "\n")
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == 0
    tracking = json.loads((output / "performance.json").read_text())["tracking"]
    assert tracking["efficiency"] is None
    assert tracking["efficiency_pt_gt_0p5"] is None
    assert tracking["fake_rate"] == 1.0 or tracking["n_tracks"] == 0
    summary = capsys.readouterr().out
    assert re.search(r"resolution d0 / z0 \(pure tracks\)\s*│ n/a / n/a", summary), summary
    assert not re.search(r"\bnan\b", summary, re.IGNORECASE), summary


def test_an_event_of_one_particle_reports_its_track_but_no_widths(tmp_path, capsys):
    """An event holding one fast particle's hits alone: the job finds and fits its track, and reports neither pull
    widths nor resolutions, which one track cannot give (no 0.00 widths, no NaN), in performance.json or the
    summary."""
    event = simulate_event(SimulationConfig(pileup=0), seed=2_000_301, event_id=0)
    fast = event.particles.particle_id[event.particles.pt > 2.0]
    ids, counts = np.unique(event.truth.particle_id[np.isin(event.truth.particle_id, fast)], return_counts=True)
    chosen = ids[np.argmax(counts)]  # the fast particle with the most hits
    rows = np.flatnonzero(event.truth.particle_id == chosen)
    particle = event.particles.take(np.flatnonzero(event.particles.particle_id == chosen))
    events, output = tmp_path / "events", tmp_path / "out"
    write_event(events, Event(0, event.spacepoints.take(rows), event.truth.take(rows), particle))
    assert _run("--input", str(events), "--output", str(output)) == 0
    performance = json.loads((output / "performance.json").read_text())
    assert performance["tracking"]["efficiency"] == 1.0
    fitting = performance["fitting"]
    assert fitting["n_pure_matched_ok"] == 1
    assert fitting["pulls_pure"] == {}
    assert set(fitting["resolution_pure"].values()) == {None}
    summary = capsys.readouterr().out
    assert "pull widths" not in summary
    assert re.search(r"resolution q/pT \(pure tracks\)\s*│ n/a", summary), summary
    assert not re.search(r"\bnan\b", summary, re.IGNORECASE), summary


def test_failed_events_hold_their_output_and_their_records_follow_the_input(tmp_path, capsys):
    """An output whose job only failed still holds that job: another job there without ``--resume`` is refused and
    the record kept.  Resumed once the bad event is gone from the input, the job drops its record (nothing is left
    to retry) and exits 0 with the events it has."""
    events = tmp_path / "events"
    for event_id in range(2):
        write_event(events, simulate_event(SimulationConfig(pileup=2), seed=2_000_200, event_id=event_id))
    event_path(events, 1, "hits").write_text("hit_id,x\n")
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    for kind in ("hits", "truth", "particles"):
        event_path(events, 1, kind).rename(event_path(bad_only, 1, kind))
    output = tmp_path / "out"
    assert _run("--input", str(bad_only), "--output", str(output)) == EXIT_EVENTS_FAILED
    assert [
        failure["event_id"] for failure in json.loads((output / "performance.json").read_text())["failed_events"]
    ] == [1]
    capsys.readouterr()
    assert _run("--simulate", "1", "--output", str(output), "--set=simulation.pileup=0") == 2
    assert "already holds results of a job" in capsys.readouterr().err
    assert (output / "events" / "event000000001.failed.json").is_file()
    for kind in ("hits", "truth", "particles"):
        event_path(bad_only, 1, kind).unlink()
    for kind in ("hits", "truth", "particles"):
        event_path(events, 0, kind).rename(event_path(bad_only, 0, kind))
    assert _run("--input", str(bad_only), "--output", str(output), "--resume") == 0
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [0]
    assert performance["failed_events"] == []


def test_a_resumed_report_covers_the_events_its_input_holds(tmp_path):
    """Resumed after an event's files left the input, the job reports the events the input holds (``tracks.csv``,
    ``performance.json``) and keeps the finished fragment of the other; with its files back, the next resume
    reports it again, as the first run did, without processing it again."""
    events = tmp_path / "events"
    for event_id in range(3):
        write_event(events, simulate_event(SimulationConfig(pileup=2), seed=2_000_400, event_id=event_id))
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == 0
    first = (output / "tracks.csv").read_bytes()
    aside = tmp_path / "aside"
    aside.mkdir()
    for kind in ("hits", "cells", "truth", "particles"):
        if event_path(events, 1, kind).exists():
            event_path(events, 1, kind).rename(event_path(aside, 1, kind))
    assert _run("--input", str(events), "--output", str(output), "--resume") == 0
    assert json.loads((output / "performance.json").read_text())["events"] == [0, 2]
    assert {row["event_id"] for row in _rows(output / "tracks.csv")} == {"0", "2"}
    fragment = output / "events" / "event000000001.npz"
    assert fragment.is_file()
    finished = fragment.stat().st_mtime_ns
    for path in aside.iterdir():
        path.rename(events / path.name)
    assert _run("--input", str(events), "--output", str(output), "--resume") == 0
    assert json.loads((output / "performance.json").read_text())["events"] == [0, 1, 2]
    assert (output / "tracks.csv").read_bytes() == first
    assert fragment.stat().st_mtime_ns == finished


def test_fits_of_found_pure_tracks_have_unit_pulls(tmp_path):
    """Unit pulls on tracks the GNN found (not truth tracks): one held-out pile-up-50 event through
    finding and fitting; the job's own report of the tracks whose hits all come from the matched particle."""
    output = tmp_path / "pileup50"
    assert _run("--simulate", "1", "--output", str(output), "--set=simulation.pileup=50", "--set=job.seed=1003100") == 0
    fitting = json.loads((output / "performance.json").read_text())["fitting"]
    assert fitting["pull_min_ndf"] == 3
    assert fitting["n_pulls_pure"] > 500
    # a mean of N unit pulls scatters by 1/sqrt(N): 4 standard errors, not a limit one event's draw decides
    bound = 4.0 / np.sqrt(fitting["n_pulls_pure"])
    for name, pulls in fitting["pulls_pure"].items():
        assert abs(pulls["mean"]) < bound, name
        assert abs(pulls["std"] - 1.0) < 0.1, name
    assert abs(fitting["pvalue_mean_pure"] - 0.5) < 0.05


@pytest.mark.slow
def test_pileup_200_event_end_to_end(tmp_path):
    """One held-out pile-up-200 event (≈100k spacepoints) through finding and fitting (about a minute)."""
    output = tmp_path / "pileup200"
    overrides = ["--set=simulation.pileup=200", "--set=job.seed=2000500"]
    assert _run("--simulate", "1", "--output", str(output), *overrides) == 0
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [0]
    assert performance["edges"]["graph"]["count"] > 1e5
    assert 0.3 < performance["tracking"]["efficiency"] <= 1.0
    rows = _rows(output / "fitted_tracks.csv")
    assert len(rows) > 1000
    assert np.isfinite([[float(row[name]) for name in FITTED_COLUMNS] for row in rows]).all()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_unreachable_server_stops_the_job_with_a_report(tmp_path, capsys, jobs):
    """No server at the configured address: exit status 3, the failure recorded, the same with workers."""
    output = tmp_path / "no_server"
    remote = str(ROOT / "configs" / "remote_triton.toml")
    sets = ["inference.triton.url=127.0.0.1:1", "inference.triton.connect_timeout_s=1", "inference.triton.timeout_s=2"]
    argv = ["run", remote, "--simulate", "2", "--jobs", jobs, "--output", str(output), "--no-progress"]
    assert main(argv + [f"--set={item}" for item in sets]) == 3
    assert "--resume" in capsys.readouterr().err
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == []
    (failure,) = performance["failed_events"]
    assert failure["stage"] == "backend"
    assert "BackendUnavailableError" in failure["error"]
