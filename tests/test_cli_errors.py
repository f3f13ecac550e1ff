"""``trkx`` on bad arguments and awkward input, through the real command line.

Every bad argument, job option or input ends with one line ``trkx COMMAND: error: ...`` naming it, exit status 2
and nothing written; a job whose events (some or all) failed writes its report and exits 4; tiny events and events
far outside the detector give a report like any other; TrackML events read gzipped as the challenge distributes them.
Jobs run the shipped models on real ONNX Runtime sessions.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import attrs
import numpy as np
import pytest
from real_trackml import SAMPLE, needs_real_trackml

from tracking_algs.cli import main
from tracking_algs.commands.run import EXIT_EVENTS_FAILED, EXIT_STOPPED
from tracking_algs.geometry import TRACKML_TOML
from tracking_algs.io.trackml import event_path, read_event, write_event
from tracking_algs.modules import DETECTORS_COLUMNS, trackml_modules, write_detectors_csv
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "local_onnx.toml")
TINY = SimulationConfig(pileup=1)


def _run(*args: str) -> int:
    return main(["run", CONFIG, "--no-progress", *args])


def _error_line(capsys, command: str = "run") -> str:
    """The one line of stderr, which must be a ``trkx COMMAND: error:`` line (no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"trkx {command}: error: "), lines[0]
    return lines[0]


def _take(columns, rows: np.ndarray):
    return attrs.evolve(
        columns, **{field.name: getattr(columns, field.name)[rows] for field in attrs.fields(type(columns))}
    )


def _tiny_event(event_id: int = 0, hits: int | None = None):
    event = simulate_event(TINY, seed=2_000_700, event_id=event_id)
    if hits is None:
        return event
    rows = np.arange(hits)
    return attrs.evolve(event, spacepoints=_take(event.spacepoints, rows), truth=_take(event.truth, rows))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


# --- exit status 2: bad arguments, options and input, nothing written ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--simulate", "0"], "argument --simulate: expected an integer ≥ 1, got 0"),
        (["--simulate", "-2"], "argument --simulate: expected an integer ≥ 1, got -2"),
        (["--simulate", "two"], "argument --simulate: expected an integer ≥ 1, got 'two'"),
        (["--simulate", "1", "--jobs", "0"], "argument --jobs: expected an integer ≥ 1, got 0"),
        (["--simulate", "1", "--jobs", "-1"], "argument --jobs: expected an integer ≥ 1, got -1"),
        (["--simulate", "1", "--set", "job.seed=-3"], "--set job.seed=-3: 'seed' must be >= 0: -3"),
        (["--simulate", "1", "--set", "job.jobs=0"], "--set job.jobs=0: 'jobs' must be >= 1: 0"),
        (["--set", "job.events=0"], "--set job.events=0: 'events' must be >= 1: 0"),
        (["--simulate", "1", "--set", "performance.min_hits=0"], "'min_hits' must be >= 1: 0 @ $.performance"),
        (
            ["--simulate", "1", "--set", "finding.graph.radius=abc"],
            "--set finding.graph.radius=abc: expected a number, got 'abc'",
        ),
        (["--simulate", "1", "--set", "finding.model_dir=nowhere"], "[finding] model_dir 'nowhere' does not exist"),
        (["--simulate", "1", "--set", "job.detector=nowhere.toml"], "[job] detector 'nowhere.toml' does not exist"),
        (["--simulate", "1", "--set", "finding.gnn.cut"], "override 'finding.gnn.cut' must look like dotted.key=value"),
    ],
)
def test_bad_arguments_and_options_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, expected):
    output = tmp_path / "out"
    assert _run(*args, "--output", str(output)) == 2
    line = _error_line(capsys)
    assert expected in line
    assert CONFIG not in line  # a bad --set value is the override's fault, not the file's
    assert not output.exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_model_file_that_cannot_be_loaded_leaves_no_output(tmp_path, capsys, jobs):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "tracking_algs" / "finding" / "shipped", models)
    (models / "gnn.onnx").write_bytes(b"not an ONNX model\n")
    output, existing = tmp_path / "out", tmp_path / "existing"
    existing.mkdir()
    for target in (output, existing):
        args = ["--simulate", "1", "--set", "simulation.pileup=1", "--set", f"finding.model_dir='{models}'"]
        assert _run(*args, "--jobs", jobs, "--output", str(target)) == 2
        assert f"ONNX model file '{models / 'gnn.onnx'}' cannot be loaded" in _error_line(capsys)
    assert not output.exists()
    assert list(existing.iterdir()) == []


@pytest.mark.parametrize(("stage", "other"), [("embedding", "filter"), ("gnn", "embedding"), ("filter", "gnn")])
def test_a_model_of_another_stage_is_refused_before_any_event(tmp_path, capsys, stage, other):
    """A model file of one stage put in the place of another's loads, but cannot serve the stage: the job refuses it
    before any event, naming the stage, the file and the tensors each side has."""
    models = tmp_path / "models"
    shutil.copytree(ROOT / "tracking_algs" / "finding" / "shipped", models)
    shutil.copyfile(models / f"{other}.onnx", models / f"{stage}.onnx")
    output = tmp_path / "out"
    args = ["--simulate", "1", "--set", "simulation.pileup=1", "--set", f"finding.model_dir='{models}'"]
    assert _run(*args, "--output", str(output)) == 2
    line = _error_line(capsys)
    assert f"the model of stage {stage!r} (onnxruntime " in line
    assert f"model='{models / f'{stage}.onnx'}'" in line
    assert "is it another stage's model?" in line
    assert not output.exists()


def test_missing_or_empty_input_directory_is_named_with_what_was_looked_for(tmp_path, capsys):
    output = tmp_path / "out"
    absent = tmp_path / "absent"
    assert _run("--input", str(absent), "--output", str(output)) == 2
    line = _error_line(capsys)
    assert f"--input '{absent}' does not exist" in line
    assert "eventNNNNNNNNN-hits.csv or eventNNNNNNNNN-hits.csv.gz" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no events here\n")
    (empty / "event000000005-hits.csv").mkdir()  # a directory named like a hits file is not an event
    assert _run("--input", str(empty), "--output", str(output)) == 2
    line = _error_line(capsys)
    assert f"--input '{empty}' holds no events: no file named eventNNNNNNNNN-hits.csv or" in line
    assert not output.exists()


def test_an_input_directory_that_cannot_be_read_is_named_with_the_reason(tmp_path):
    """An input directory the user may not list is not reported as empty. Root reads any directory, so under root
    the job runs without the capabilities that let it (``setpriv``), as another user would."""
    events = tmp_path / "events"
    write_event(events, simulate_event(TINY, seed=1, event_id=0))
    events.chmod(0)
    script = Path(sys.executable).with_name("trkx")
    trkx = [str(script)] if script.is_file() else [sys.executable, "-m", "tracking_algs.cli"]
    user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    argv = [*user, *trkx, "run", CONFIG, "--input", str(events), "--output", str(tmp_path / "out")]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    finally:
        events.chmod(0o755)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == f"trkx run: error: --input '{events}' cannot be read (Permission denied)"
    assert not (tmp_path / "out").exists()


def test_missing_config_and_output_that_is_a_file_are_named(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.toml"), "--simulate", "1", "--output", str(tmp_path / "o")]) == 2
    assert "argument config: job options file" in _error_line(capsys)
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    assert _run("--simulate", "1", "--output", str(taken)) == 2
    assert f"argument --output: '{taken}' exists and is not a directory" in _error_line(capsys)
    assert taken.read_text() == "a file\n"
    assert not (tmp_path / "o").exists()
    assert _run("--simulate", "1", "--output", "") == 2  # not the current directory
    assert "argument --output: an empty path; expected a directory to write into" in _error_line(capsys)
    assert _run("--simulate", "1", "--output", str(taken / "below")) == 2
    assert f"'{taken}' is a file, not a directory; it cannot hold one" in _error_line(capsys)


def test_a_bad_value_in_the_file_is_blamed_on_the_file(tmp_path, capsys):
    config = tmp_path / "job.toml"
    config.write_text("[job]\nseed = -1\n")
    assert main(["run", str(config), "--simulate", "1", "--output", str(tmp_path / "out")]) == 2
    assert f"trkx run: error: {config}: 'seed' must be >= 0: -1" in _error_line(capsys)


def test_exit_status_and_stderr_of_the_console_script(tmp_path):
    """The installed entry point as a user runs it: status 2, one line, no traceback."""
    script = Path(sys.executable).with_name("trkx")
    trkx = [str(script)] if script.is_file() else [sys.executable, "-m", "tracking_algs.cli"]
    for argv in (["run", CONFIG, "--simulate", "0", "--output", str(tmp_path / "out")],
                 ["simulate", "--events", "1", "--seed", "-3", "--output", str(tmp_path / "sim")]):  # fmt: skip
        done = subprocess.run([*trkx, *argv], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"trkx {argv[0]}: error: argument ")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "sim").exists()


def test_running_out_of_memory_is_one_line_and_status_3(tmp_path):
    """Values within their bounds that need more memory than the machine has (here 1.5 GiB of address space: a
    million particles an event) stop the command with one line, status 3, no traceback, and no event half-written."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, 3 * 2**29))

    script = Path(sys.executable).with_name("trkx")
    trkx = [str(script)] if script.is_file() else [sys.executable, "-m", "tracking_algs.cli"]
    output = tmp_path / "sim"
    argv = ["simulate", "--events", "1", "--pileup", "1000", "--set", "particles_per_interaction=1000", "--output",
            str(output)]  # fmt: skip
    single_threaded = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    done = subprocess.run([*trkx, *argv], capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=limited, env={**os.environ, **single_threaded})  # fmt: skip
    assert done.returncode == EXIT_STOPPED, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("trkx simulate: stopped early: out of memory ("), line
    assert not list(output.glob("event*"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seed", "-3"], "argument --seed: expected an integer ≥ 0, got -3"),
        (["--events", "0"], "argument --events: expected an integer ≥ 1, got 0"),
        (["--events", "-1"], "argument --events: expected an integer ≥ 1, got -1"),
        (["--pileup", "-1"], "argument --pileup: expected a finite number ≥ 0, got -1"),
        (["--pileup", "nan"], "argument --pileup: expected a finite number ≥ 0, got nan"),
        (["--pileup", "1e300"], "'pileup' must be <= 1000.0: 1e+300"),
        (["--detector", "nowhere.toml"], "argument --detector: detector file 'nowhere.toml' does not exist"),
        (["--set", "noise_frac=0"], "--set noise_frac=0: unknown key(s) noise_frac"),
        (["--set", "geometry=modules", "--set", "step_tolerance_mm=-1"], "error: --set step_tolerance_mm=-1: 'step_"),
        (["--set", "pileup=5"], "--set pileup=5 and --pileup both set pileup; give one of them"),
        (["--no-signal", "--set", "signal=true"], "--set signal=true and --no-signal both set signal; give one"),
    ],
)
def test_simulate_rejects_bad_arguments(tmp_path, capsys, args, expected):
    output = tmp_path / "sim"
    argv = ["simulate", "--events", "1", "--pileup", "1", "--output", str(output), *args]
    assert main(argv) == 2
    assert expected in _error_line(capsys, "simulate")
    assert not output.exists()


@pytest.mark.parametrize(
    ("detector", "geometry", "expected"),
    [
        (
            "detectors.csv",
            "cylinders",
            "is a module geometry, simulated with geometry=modules; --set geometry=cylinders",
        ),
        (str(TRACKML_TOML), "modules", "is a cylinder description, which geometry=modules does not use"),
    ],
)
def test_simulate_refuses_a_detector_file_of_the_other_geometry(tmp_path, capsys, detector, geometry, expected):
    """``--detector detectors.csv`` with ``--set geometry=cylinders``, and a detector TOML with ``--set
    geometry=modules``, are refused (status 2), as a job's ``[detector] file`` with a cylinder simulation is:
    the simulation would ignore the file."""
    detectors = tmp_path / detector  # the TOML's absolute path stays as it is
    if detector == "detectors.csv":
        write_detectors_csv(detectors, trackml_modules())
    output = tmp_path / "out"
    argv = ["simulate", "--events", "1", "--output", str(output), "--detector", str(detectors)]
    assert main([*argv, "--set", f"geometry={geometry}"]) == 2
    assert f"--detector {detectors} {expected}" in _error_line(capsys, "simulate")
    assert not output.exists()


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (None, "no modules; expected one row per module after the header"),
        ("8,2,1,32,0,0,0,0,1,1,0,0,0,1,0,0.15,8.4,8.4,36,0,0.05625", "row 1 (line 2), column 'pitch_u': 0.0 is not a "
                                                                    "positive number"),
        ("8,2,1,32,0,0,0,0,0,0,0,0,0,0,0,0.15,8.4,8.4,36,0.05,0.05625", "row 1 (line 2), columns 'rot_xu',"),
        ("8,2,1,1e300,0,0,0,0,1,1,0,0,0,1,0,0.15,8.4,8.4,36,0.05,0.05625", "row 1 (line 2), column 'cx': 1e+300 is "
                                                                           "not a coordinate within float32's range"),
        ("99,2,1,32,0,0,0,0,1,1,0,0,0,1,0,0.15,8.4,8.4,36,0.05,0.05625", "row 1 (line 2), columns 'volume_id',"
                                                                        "'layer_id': (99, 2) is not a layer of the "
                                                                        "TrackML detector"),
    ],
)  # fmt: skip
def test_a_detectors_csv_of_unusable_modules_is_refused_before_any_work(tmp_path, capsys, row, expected):
    """``trkx simulate --detector`` and a job's ``[detector] file`` read the modules before anything is written."""
    detectors = tmp_path / "detectors.csv"
    detectors.write_text("\n".join([",".join(DETECTORS_COLUMNS), *([row] if row else [])]) + "\n")
    output = tmp_path / "out"
    assert main(["simulate", "--events", "1", "--output", str(output), "--detector", str(detectors)]) == 2
    assert f"{detectors}: {expected}" in _error_line(capsys, "simulate")
    options = ["--set", f"detector.file={detectors}", "--set", "simulation.geometry=modules"]
    assert _run("--simulate", "1", "--output", str(output), *options) == 2
    assert f"{detectors}: {expected}" in _error_line(capsys)
    assert not output.exists()


def test_simulated_noise_in_a_volume_the_modules_lack_is_refused_before_any_work(tmp_path, capsys):
    """A job that simulates on modules refuses noise in a volume without modules as it starts (it used to fail every
    event, status 4, with an output directory of empty results)."""
    output = tmp_path / "out"
    options = ["--set", "simulation.geometry=modules", "--set", "simulation.module_noise_volumes=[8,99]",
               "--set", "simulation.module_noise_per_particle_hit=[0.1,0.2]"]  # fmt: skip
    assert _run("--simulate", "1", "--output", str(output), *options) == 2
    assert "module_noise_volumes: the modules have no volume 99 for its noise" in _error_line(capsys)
    assert not output.exists()


@pytest.mark.parametrize(
    ("file_text", "override", "expected"),
    [
        ("seed = -1\n", None, "train.toml: 'seed' must be >= 0: -1 @ $"),
        ("", "embedding.hidden=[64,0]", "--set embedding.hidden=[64,0]: 'hidden' must be > 0: 0 @ $.embedding"),
        ("", "filter.radius_efficiency=1.5", "--set filter.radius_efficiency=1.5: 'radius_efficiency' must be <= 1.0"),
        ("", "gnn.learning_rate=0", "--set gnn.learning_rate=0: 'learning_rate' must be > 0.0: 0"),
        ("[data]\nenergy_loss = true\n", "data.energy_loss=yes", "--set data.energy_loss=yes: expected true or false"),
        ("", "data.validation_pileups=[-1]", "--set data.validation_pileups=[-1]: 'validation_pileups' must be >= 0.0"),
        ("", "data.pileups=[200,1e9]", "--set data.pileups=[200,1e9]: 'pileups' must be <= 1000.0"),
        ("", "gnn.iterations=1000000", "--set gnn.iterations=1000000: 'iterations' must be <= 1000: 1000000"),
    ],
)
def test_train_rejects_bad_options_before_training(tmp_path, capsys, file_text, override, expected):
    """A bad training option is one error line naming the file or the override that brought it in, before any
    event is simulated (a negative seed reached numpy's generator as a traceback)."""
    config = tmp_path / "train.toml"
    config.write_text(file_text)
    output = tmp_path / "models"
    argv = ["train", str(config), "--output", str(output), *(["--set", override] if override else [])]
    assert main(argv) == 2
    assert expected in _error_line(capsys, "train")
    assert not output.exists()


def test_repo_rejects_bad_counts_before_writing(tmp_path, capsys):
    repository = tmp_path / "repo"
    argv = ["repo", "add-tracking", "--repository", str(repository), "--serving", "models", "--instances", "0"]
    assert main(argv) == 2
    assert "argument --instances: expected an integer ≥ 1, got 0" in _error_line(capsys, "repo add-tracking")
    assert not repository.exists()


@pytest.mark.parametrize("serving", ["chain", "ensemble"])
def test_repo_needs_the_model_card_before_writing(tmp_path, capsys, serving):
    """The served chain and the ensemble take their working point from the model card: a model directory without
    one is refused before the repository is touched."""
    models = tmp_path / "models"
    models.mkdir()
    for stage in ("embedding", "filter", "gnn"):
        shutil.copyfile(ROOT / "tracking_algs" / "finding" / "shipped" / f"{stage}.onnx", models / f"{stage}.onnx")
    repository = tmp_path / "repo"
    argv = ["repo", "add-tracking", "--repository", str(repository), "--serving", serving, "--model-dir", str(models)]
    assert main(argv) == 2
    assert f"model directory {str(models)!r} has no model_card.json" in _error_line(capsys, "repo add-tracking")
    assert not repository.exists()


def test_version_and_run_help_document_the_exit_statuses(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"trkx {version('inference-iface')}"
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status:" in text
    for status in ("0  every event was processed", "2  bad argument", "3  stopped early", "4  the job finished"):
        assert status in text
    assert (EXIT_STOPPED, EXIT_EVENTS_FAILED) == (3, 4)


# --- exit status 4: the job finished, some or all events failed -----------------------------------------------------


def _break_hits(directory: Path, event_id: int) -> None:
    """Put a fraction into an integer column of one event's hits (read as 7 before, an error now)."""
    path = event_path(directory, event_id, "hits")
    header, first, *rows = path.read_text().splitlines()
    fields = first.split(",")
    fields[4] = "7.5"
    path.write_text("\n".join([header, ",".join(fields), *rows]) + "\n")


def test_some_events_failed_exit_4_with_the_report_of_the_others(tmp_path, capsys):
    events = tmp_path / "events"
    for event_id in range(2):
        write_event(events, _tiny_event(event_id))
    _break_hits(events, 1)
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == EXIT_EVENTS_FAILED
    assert "1 of 2 events failed" in capsys.readouterr().err
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [0]
    (failure,) = performance["failed_events"]
    assert failure["event_id"] == 1
    assert failure["stage"] == "read"
    assert "event000000001-hits.csv: row 1 (line 2), column 'volume_id': '7.5' is not a valid int64" in failure["error"]
    assert {row["event_id"] for row in _rows(output / "tracks.csv")} == {"0"}


def test_every_event_failed_is_exit_4_with_a_report(tmp_path, capsys):
    events = tmp_path / "events"
    write_event(events, _tiny_event(0))
    _break_hits(events, 0)
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == EXIT_EVENTS_FAILED
    assert "the only event failed" in capsys.readouterr().err
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == []
    assert [failure["event_id"] for failure in performance["failed_events"]] == [0]
    assert _rows(output / "tracks.csv") == []


# --- the report works for any number of tracks, zero included -------------------------------------------------------


def _assert_full_report(output: Path) -> dict:
    performance = json.loads((output / "performance.json").read_text())
    for name in ("efficiency_vs_pt", "efficiency_vs_eta", "fake_rate_vs_eta", "pulls", "resolution_vs_pt", "timing"):
        assert (output / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    return performance


def test_an_event_of_ten_hits_gives_a_report(tmp_path):
    events = tmp_path / "events"
    write_event(events, _tiny_event(hits=10))
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == 0
    performance = _assert_full_report(output)
    assert performance["events"] == [0]
    assert performance["failed_events"] == []
    assert len(_rows(output / "tracks.csv")) == 10
    assert performance["fitting"]["n_fitted"] == 0
    assert performance["fitting"]["resolution_vs_pt"]["d0 [mm]"] == [None] * 5


def test_hits_far_outside_the_detector_give_a_report(tmp_path):
    event = _tiny_event()
    spacepoints = event.spacepoints
    far = attrs.evolve(spacepoints, x=spacepoints.x * 1000 + 5e5, y=spacepoints.y * 1000, z=spacepoints.z * 1000)
    events = tmp_path / "events"
    write_event(events, attrs.evolve(event, spacepoints=far))
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == 0
    performance = _assert_full_report(output)
    assert performance["events"] == [0]
    assert len(_rows(output / "tracks.csv")) == len(far.hit_id)


# --- TrackML events as distributed: .csv.gz --------------------------------------------------------------------------


def test_gzipped_simulated_event_runs_like_the_plain_one(tmp_path, capsys):
    events = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "2", "--seed", "3", "--output", str(events)]) == 0
    event = read_event(events, 0)
    plain = tmp_path / "plain"
    assert _run("--input", str(events), "--output", str(plain)) == 0
    for path in sorted(events.glob("*.csv")):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    output = tmp_path / "out"
    assert _run("--input", str(events), "--output", str(output)) == 0
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [0]
    assert "tracking" in performance  # the gzipped truth was read
    hits = sorted(int(row["hit_id"]) for row in _rows(output / "tracks.csv"))
    assert hits == sorted(event.spacepoints.hit_id.tolist())
    assert (output / "tracks.csv").read_bytes() == (plain / "tracks.csv").read_bytes()


@needs_real_trackml
def test_real_trackml_sample_event_runs(tmp_path):
    """The challenge's own gzipped files (with cells and an extra particles column) through the whole job."""
    output = tmp_path / "out"
    assert _run("--input", str(SAMPLE), "--output", str(output)) == 0
    performance = _assert_full_report(output)
    assert performance["events"] == [1]
    assert performance["tracking"]["n_tracks"] > 0
    assert len(_rows(output / "tracks.csv")) == 5527
