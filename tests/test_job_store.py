"""The job's output store and report under faults: a full disk while a fragment is written, damaged fragments and
failure records found as a job resumes (unreadable, arrays that do not fit together, of another event, values of the
wrong kinds), files in ``events/`` named otherwise, fragments whose options are lost, two jobs in one output, a report
stopped half-way or with something in its way, and the ``--resume`` refusal naming the options that differ.

Real files in ``tmp_path``; the store-level tests save small made-up events, the job-level ones run ``trkx run`` on
two simulated pile-up-2 events with the shipped models.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import pytest
from job_outputs import assert_same_results

from inference_iface.errors import ConfigError
from tracking_algs.cli import main
from tracking_algs.job import report
from tracking_algs.job.store import LOCK_FILE, EventFailure, EventResult, ResultStore
from tracking_algs.job_options import load_job_options

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local_onnx.toml"
SMALL = ["--simulate", "2", "--set=simulation.pileup=2"]
OPTIONS = {
    "options": {"simulation": {"pileup": 5, "seed": 1}, "finding": {"graph": {"radius": 0.1, "k_max": 8}}},
    "source": {"simulate": 3, "seed": 7},
}


def _run(*args: str) -> int:
    return main(["run", str(CONFIG), "--no-progress", *args])


def _result(event_id: int, hits: int = 1000) -> EventResult:
    labels = np.random.default_rng(event_id).integers(-1, 20, hits)
    return EventResult(event_id=event_id, hit_id=np.arange(1, hits + 1), track_label=labels,
                       timing_ms={"graph": 1.0 + event_id}, edges={"graph": {"count": 10.0}})  # fmt: skip


def _store(output: Path, events: range, options: dict = OPTIONS) -> ResultStore:
    """A store in ``output`` holding ``events``, its lock released."""
    with ResultStore(output) as store:
        store.prepare(options, resume=False)
        for event_id in events:
            store.save(_result(event_id))
    return store


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}  # fmt: skip


def _flip(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def _rewrite(path: Path, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    """Write the fragment ``path`` again, whole (its CRCs right), with its arrays as ``change`` leaves them."""
    with np.load(path) as data:
        arrays = dict(data)
    change(arrays)
    np.savez(path, **arrays)


def _assert_removed(err: str, events: Path, removed: list[tuple[str, str]]) -> None:
    """Fail unless ``err`` holds one line per file of ``removed`` (its name in ``events``, a word of why), in order,
    each saying that the file is removed and its event processed again."""
    lines = err.splitlines()
    assert len(lines) == len(removed), lines
    for line, (name, why) in zip(lines, removed, strict=True):
        assert line.startswith(f"trkx run: {events / name} cannot be read ("), line
        assert why in line, line
        assert line.endswith("removed, its event is processed again"), line


# ---- a fragment written on a full disk


FULL_DISK = """
import resource, signal, sys
import numpy as np
from tracking_algs.job.store import EventResult, ResultStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the limit: EFBIG, as ENOSPC on a full disk
store = ResultStore(sys.argv[1])
store.events_dir.mkdir(parents=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
try:
    store.save(EventResult(0, np.arange(100_000), np.zeros(100_000, int), {"graph": 1.0}, {}))
except OSError as error:
    print(error.errno)
"""


def test_a_fragment_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    """A write that fails half-way (the file size limit stands for a full disk) raises the OSError alone: no
    temporary file is left, and nothing on stderr (a half-written zip file's clean-up printed a traceback)."""
    output = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(output)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(errno.EFBIG)
    assert done.stderr == ""
    assert list((output / "events").iterdir()) == []


INTERRUPTED_SAVE = """
import signal, sys
import numpy as np
from tracking_algs.commands.interrupts import terminate_as_interrupt
from tracking_algs.job.store import EventResult, ResultStore

class Interrupting:
    \"\"\"Fitted values that send the signal named on the command line to this process as the store reads them.\"\"\"

    def __array__(self, dtype=None, copy=None):
        signal.raise_signal(getattr(signal, sys.argv[2]))
        return np.arange(5.0)

store = ResultStore(sys.argv[1])
store.events_dir.mkdir(parents=True)
fitted = {"before": np.zeros(5), "interrupting": Interrupting(), "after": np.ones(5)}
with terminate_as_interrupt():
    try:
        store.save(EventResult(0, np.arange(10), np.zeros(10, int), {"graph": 1.0}, {}, fitted=fitted))
    except KeyboardInterrupt:
        print("interrupted", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_an_interrupt_while_a_fragment_is_written_waits_for_it(tmp_path, signal_name):
    """Ctrl-C or SIGTERM (as a job takes it) that arrives while the store writes a finished event's fragment stops
    the job once the fragment is whole: the event is kept, the interrupt is raised after, the handlers are back, and
    nothing is printed (an interrupted zip writer complained on stderr as it was collected)."""
    output = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_SAVE, str(output), signal_name], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert (done.stdout, done.stderr) == ("interrupted True\n", "")
    (result,) = ResultStore(output).results()
    assert result.fitted.keys() == {"before", "interrupting", "after"}
    np.testing.assert_array_equal(result.fitted["interrupting"], np.arange(5.0))


# ---- damaged fragments and failure records


def test_resume_removes_damaged_fragments_and_failure_records(tmp_path, capsys):
    """Truncated, emptied and changed fragments (a changed array fails its CRC) and a failure record that does not
    parse are removed as the job resumes, each named on stderr; their events are processed again. A failure record
    beside a fragment of its event is stale and goes too; the other files are kept."""
    output = tmp_path / "out"
    store = _store(output, range(5))
    store.save_failure(EventFailure(4, "process", "stale: the event was saved after"))
    store.save_failure(EventFailure(5, "read", "a bad file"))
    store.save_failure(EventFailure(6, "read", "a bad file too"))
    events = output / "events"
    truncated = events / "event000000000.npz"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    (events / "event000000001.npz").write_bytes(b"")
    _flip(events / "event000000002.npz", 2000)  # inside the hit_id array
    (events / "event000000005.failed.json").write_text('{"event_id": 5, "stage"')
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {3, 4}
        assert [failure.event_id for failure in resumed.failures()] == [6]
        assert [result.event_id for result in resumed.results()] == [3, 4]
    _assert_removed(capsys.readouterr().err, events, [("event000000000.npz", "BadZipFile"),
                    ("event000000001.npz", "EOFError"), ("event000000002.npz", "CRC"),
                    ("event000000005.failed.json", "JSON")])  # fmt: skip


#: Fitted tracks and truth as a job saves them (4 fitted tracks, 6 particles, 5 found tracks), for the checks that
#: each group of arrays is of one length.
FITTED = {"track_id": np.arange(4), "chi2": np.ones(4), "ndf": np.full(4, 3)}
TRUTH = {"particle_id": np.arange(1, 7), "particle_pt": np.ones(6), "track_id": np.arange(5), "track_eta": np.zeros(5),
         "fit_true_params": np.zeros((4, 5)), "fit_pure": np.ones(4, bool), "candidates.track_id": np.arange(7),
         "candidates.track_eta": np.zeros(7)}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "change", "why"),
    [
        ("track_label", lambda array: array[:-5], "track_label holds 995 values, hit_id 1000"),
        ("hit_id", lambda array: array.astype(float), "hit_id and track_label must be 1-D integer arrays"),
        ("track_label", lambda array: array[:, None], "hit_id and track_label must be 1-D integer arrays"),
        ("fitted.chi2", lambda array: array[:-1], "fitted.chi2 holds 3 values, fitted.track_id 4"),
        ("fitted.ndf", lambda array: array[0], "fitted.ndf is a single value"),
        ("truth.fit_pure", lambda array: array[:-1], "truth.fit_pure holds 3 values, fitted.track_id 4"),
        ("truth.particle_pt", lambda array: array[:-1], "truth.particle_pt holds 5 values, truth.particle_id 6"),
        ("truth.track_eta", lambda array: array[1:], "truth.track_eta holds 4 values, truth.track_id 5"),
        ("truth.candidates.track_eta", lambda array: array[:-2], "truth.candidates.track_eta holds 5 values"),
    ],
)
def test_resume_removes_fragments_whose_arrays_do_not_fit_together(tmp_path, capsys, key, change, why):
    """A fragment written whole (its CRCs right) whose arrays do not fit together (an array of another length than
    the others of its group, hit ids that are no integers) is removed as the job resumes, named on stderr with the
    arrays that differ, and its event processed again: the report would fail on it, at every resume."""
    output = tmp_path / "out"
    store = _store(output, range(1))
    store.save(attrs.evolve(_result(1), fitted=FITTED, truth=TRUTH))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {0, 1}  # the groups as saved fit together
    capsys.readouterr()
    fragment = output / "events" / "event000000001.npz"
    _rewrite(fragment, lambda arrays: arrays.update({key: change(arrays[key])}))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {0}
    _assert_removed(capsys.readouterr().err, fragment.parent, [(fragment.name, f"ValueError: {why}")])


def test_resume_removes_fragments_that_lack_an_array_or_hold_another(tmp_path, capsys):
    """A fragment names its arrays: one without an array it was written with (the report would need it) or with one
    more is removed as the job resumes, named on stderr, and its event processed again."""
    output = tmp_path / "out"
    with ResultStore(output) as store:
        store.prepare(OPTIONS, resume=False)
        for event_id in range(3):
            store.save(attrs.evolve(_result(event_id), fitted=FITTED, truth=TRUTH))
    events = output / "events"
    _rewrite(events / "event000000001.npz", lambda arrays: arrays.pop("fitted.chi2"))
    _rewrite(events / "event000000002.npz", lambda arrays: arrays.update({"fitted.extra": np.zeros(4)}))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {0}
        assert len(next(resumed.results()).fitted["chi2"]) == 4
    _assert_removed(capsys.readouterr().err, events, [
        ("event000000001.npz", "ValueError: it lacks the array(s) fitted.chi2 that it was written with"),
        ("event000000002.npz", "ValueError: its arrays are not those it was written with"),
    ])  # fmt: skip


def _set_meta(arrays: dict[str, np.ndarray], **changes: object) -> None:
    """Change the entries of a fragment's metadata (``None``: remove it)."""
    meta = json.loads(arrays["meta"].tobytes()) | changes
    meta = {key: value for key, value in meta.items() if value is not None}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def test_resume_removes_fragments_of_another_event_or_an_earlier_format(tmp_path, capsys):
    """A fragment copied or renamed to another event's name, one whose hits are not as many as its metadata counts,
    and one of a ``trkx run`` before fragments named their event and hit count, are removed as the job resumes, each
    named on stderr; their events are processed again."""
    output = tmp_path / "out"
    _store(output, range(5))
    events = output / "events"
    shutil.copyfile(events / "event000000000.npz", events / "event000000001.npz")
    (events / "event000000002.npz").rename(events / "event000000005.npz")
    _rewrite(
        events / "event000000003.npz",
        lambda arrays: arrays.update(hit_id=arrays["hit_id"][:-5], track_label=arrays["track_label"][:-5]),
    )
    _rewrite(events / "event000000004.npz", lambda arrays: _set_meta(arrays, event_id=None, hits=None))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {0}
        assert [result.event_id for result in resumed.results()] == [0]
    _assert_removed(capsys.readouterr().err, events, [
        ("event000000001.npz", "it holds event 0, not event 1"),
        ("event000000003.npz", "its metadata counts 1000 hits, its arrays 995"),
        ("event000000004.npz", "no event and hit count (a fragment of an earlier trkx run)"),
        ("event000000005.npz", "it holds event 2, not event 5"),
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (
            {"event_id": "three", "stage": "read", "error": "x"},
            "OptionKindError: 'event_id' must be an integer, got 'three'",
        ),
        ({"event_id": None, "stage": "read", "error": "x"}, "OptionKindError: 'event_id' must be an integer, got None"),
        ({"event_id": True, "stage": "read", "error": "x"}, "OptionKindError: 'event_id' must be an integer, got True"),
        ({"event_id": 3.0, "stage": "read", "error": "x"}, "OptionKindError: 'event_id' must be an integer, got 3.0"),
        ({"event_id": 3, "stage": 1, "error": "x"}, "OptionKindError: 'stage' must be a string, got 1"),
        ({"event_id": 3, "stage": "read", "error": None}, "OptionKindError: 'error' must be a string, got None"),
        ({"event_id": -3, "stage": "read", "error": "x"}, "ValueError: 'event_id' must be >= 0: -3"),
        ({"event_id": 4, "stage": "read", "error": "x"}, "ValueError: it records event 4, not event 3"),
    ],
)
def test_resume_removes_failure_records_of_wrong_kinds_or_another_event(tmp_path, capsys, record, why):
    """A failure record whose values are of the wrong kinds, or that records another event than its name's, is removed
    as the job resumes, named on stderr, and its event processed again: the job's report and the forgetting of the
    events that left the input would fail on it, at every resume."""
    output = tmp_path / "out"
    _store(output, range(3))
    record_file = output / "events" / "event000000003.failed.json"
    record_file.write_text(json.dumps(record))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.failures() == []
        resumed.forget_failures_outside([0, 1])
    _assert_removed(capsys.readouterr().err, record_file.parent, [(record_file.name, why)])


def test_files_not_named_as_the_store_names_them_are_no_events(tmp_path, capsys):
    """Files in ``events/`` not named as the store names them (a copy's name, an id of other than nine digits) are
    no part of the store: a resumed job keeps them, neither reads nor reports them, and processes the events whose
    files are missing again."""
    output = tmp_path / "out"
    _store(output, range(3))
    events = output / "events"
    shutil.copyfile(events / "event000000000.npz", events / "event000000000 (copy).npz")
    (events / "event000000001.npz").rename(events / "event1.npz")
    shutil.copyfile(events / "event000000002.npz", events / "event0000000002.npz")
    (events / "event2.failed.json").write_text(json.dumps({"event_id": 2, "stage": "read", "error": "x"}))
    with ResultStore(output) as resumed:
        resumed.prepare(OPTIONS, resume=True)
        assert resumed.finished_ids() == {0, 2}
        assert resumed.failures() == []
        assert [result.event_id for result in resumed.results()] == [0, 2]
    assert capsys.readouterr().err == ""
    assert sorted(path.name for path in events.iterdir()) == [
        "event000000000 (copy).npz", "event000000000.npz", "event0000000002.npz", "event000000002.npz", "event1.npz",
        "event2.failed.json",
    ]  # fmt: skip


def test_a_new_job_leaves_the_temporaries_of_a_killed_one_no_more(tmp_path):
    """A job killed while it wrote a fragment left its temporary file: it is no event, and the next job removes it."""
    output = tmp_path / "out"
    _store(output, range(1))
    (output / "events" / "event000000001.npz.tmp").write_bytes(b"PK\x03\x04 half")
    with ResultStore(output) as store:
        store.prepare(OPTIONS, resume=True)
    assert sorted(path.name for path in (output / "events").iterdir()) == ["event000000000.npz"]


# ---- the job's options


@pytest.mark.parametrize("resume", [False, True])
def test_fragments_without_job_options_are_refused(tmp_path, resume):
    """Fragments whose ``job_options.json`` is gone belong to a job whose options are lost: refused, with or without
    ``--resume``, and nothing changes."""
    output = tmp_path / "out"
    _store(output, range(2))
    (output / "job_options.json").unlink()
    before = _files(output)
    other = {**OPTIONS, "source": {"simulate": 5, "seed": 7}}
    with pytest.raises(ConfigError, match=r"options are lost .* choose another --output or remove .*events"):
        ResultStore(output).prepare(other, resume=resume)
    assert _files(output) == before


def test_resume_names_the_options_that_differ(tmp_path):
    """The refusal names the first differing options (dotted, as ``--set`` names them), with both values."""
    output = tmp_path / "out"
    _store(output, range(1))
    changed = json.loads(json.dumps(OPTIONS))
    changed["options"]["simulation"]["pileup"] = 2
    with pytest.raises(ConfigError, match=r"\(simulation\.pileup: 5 in the job, 2 now\); resume with the same"):
        ResultStore(output).prepare(changed, resume=True)
    changed["options"]["finding"]["graph"] = {"radius": 0.2, "k_max": 8, "eps": 0.5}
    changed["source"]["simulate"] = 4
    expected = ("finding.graph.eps: absent in the job, 0.5 now; finding.graph.radius: 0.1 in the job, 0.2 now; "
                "simulation.pileup: 5 in the job, 2 now; 1 more")  # fmt: skip
    with pytest.raises(ConfigError, match=f"\\({expected}\\)") as refused:
        ResultStore(output).prepare(changed, resume=True)
    assert "\n" not in str(refused.value)
    (output / "job_options.json").write_text('{"options": ')
    with pytest.raises(ConfigError, match=r"job_options\.json cannot be read"):
        ResultStore(output).prepare(OPTIONS, resume=True)


# ---- one job at a time


def test_a_second_job_is_refused_while_the_first_holds_the_output(tmp_path):
    output = tmp_path / "out"
    first = ResultStore(output)
    first.prepare(OPTIONS, resume=False)
    before = _files(output)
    other = {**OPTIONS, "source": {"simulate": 5, "seed": 7}}
    for options, resume in ((other, False), (OPTIONS, True)):
        with pytest.raises(ConfigError, match=f"another job is running in {output}"):
            ResultStore(output).prepare(options, resume=resume)
    assert _files(output) == before
    first.close()
    with ResultStore(output) as second:
        second.prepare(other, resume=False)


def test_the_lock_ends_with_the_process_that_holds_it(tmp_path):
    """A job killed (SIGKILL, no clean-up) holds its output no more."""
    output = tmp_path / "out"
    holder = "import sys, time\nfrom tracking_algs.job.store import ResultStore\n" \
             "store = ResultStore(sys.argv[1])\nstore.prepare({}, resume=False)\nprint('locked', flush=True)\n" \
             "time.sleep(600)\n"  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", holder, str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError, match="another job is running"):
            ResultStore(output).prepare({}, resume=False)
    finally:
        process.kill()
        process.wait()
    with ResultStore(output) as store:
        store.prepare({}, resume=False)


def test_a_discarded_new_job_removes_its_output_and_lock(tmp_path):
    """A new job that cannot start removes what it made, its lock file too; the next job locks a new one."""
    output = tmp_path / "out"
    with ResultStore(output) as store:
        store.prepare(OPTIONS, resume=False)
        store.discard_if_unused(remove_output=True)
        assert not output.exists()
        with ResultStore(output) as next_job:
            next_job.prepare(OPTIONS, resume=False)
            assert (output / LOCK_FILE).is_file()


def test_a_file_system_without_locks_runs_the_job_unlocked(tmp_path, monkeypatch, capsys):
    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with ResultStore(tmp_path / "out") as store:
        store.prepare(OPTIONS, resume=False)
    assert "cannot lock" in capsys.readouterr().err


# ---- the report


def test_an_event_saved_after_its_failure_is_no_failure_any_more(tmp_path):
    """An event that failed and then finished (on ``--resume``) is reported finished, not failed as well."""
    store = _store(tmp_path / "out", range(1))
    store.save_failure(EventFailure(1, "read", "a damaged file"))
    assert [failure.event_id for failure in store.failures()] == [1]
    store.save(_result(1))
    assert store.failures() == []
    assert store.finished_ids() == {0, 1}


def test_the_report_counts_each_events_tracks_and_averages_its_timings_and_edges(tmp_path):
    """Hand-made events: their tracks (labels ≥ 0, the unassigned −1 no track), the per-stage and total times (the
    total of an event is the sum of its stages) and the edge figures, the mean over the events."""
    store = _store(tmp_path / "out", range(0))
    store.save(EventResult(0, np.arange(1, 5), np.array([-1, 0, 0, 1]), {"graph": 1.0, "gnn": 2.0},
                           {"graph": {"count": 10.0, "efficiency": 0.9}}))  # fmt: skip
    store.save(EventResult(1, np.arange(1, 3), np.array([-1, -1]), {"graph": 3.0, "gnn": 4.0},
                           {"graph": {"count": 20.0, "efficiency": 0.7}}))  # fmt: skip
    performance = report.write_report(store, load_job_options(CONFIG))
    assert performance["tracks_per_event"] == [2, 0]
    assert performance["timing_ms"]["total"] == {"mean": 5.0, "std": 2.0, "min": 3.0, "max": 7.0}
    assert performance["timing_ms"]["gnn"] == {"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0}
    assert performance["edges"]["graph"] == {"count": 15.0, "efficiency": pytest.approx(0.8)}


def test_a_report_stopped_while_written_leaves_the_previous_one(tmp_path, monkeypatch):
    """Stopped while it writes (here a plot fails), the report leaves the previous files as they were."""
    store = _store(tmp_path / "out", range(1))
    options = load_job_options(CONFIG)
    report.write_report(store, options)
    before = _files(store.output)
    store.save(_result(1))

    def full_disk(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report, "plot_timing", full_disk)
    with pytest.raises(OSError, match="No space left"):
        report.write_report(store, options)
    assert {name: data for name, data in _files(store.output).items() if not name.startswith("events/")} == {
        name: data for name, data in before.items() if not name.startswith("events/")
    }
    assert not (store.output / report.STAGING).exists()


def test_a_report_stopped_while_moved_into_place_has_no_performance_json(tmp_path, monkeypatch):
    """Stopped between two renames, the report has no ``performance.json``: one means that the files beside it are
    of the same run. The next report is whole again."""
    store = _store(tmp_path / "out", range(1))
    options = load_job_options(CONFIG)
    report.write_report(store, options)
    store.save(_result(1))
    renames = []

    def replace(source: Path, target: Path) -> None:
        if renames:
            raise KeyboardInterrupt
        renames.append(target)
        os.rename(source, target)

    monkeypatch.setattr(report.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(store, options)
    monkeypatch.undo()
    assert renames == [store.output / "tracks.csv"]
    assert not (store.output / "performance.json").exists()
    assert not (store.output / report.STAGING).exists()
    performance = report.write_report(store, options)
    assert performance["events"] == json.loads((store.output / "performance.json").read_text())["events"] == [0, 1]
    assert {line.split(",")[0] for line in (store.output / "tracks.csv").read_text().splitlines()[1:]} == {"0", "1"}


@pytest.mark.parametrize("kind", ["file", "link to a directory", "dangling link"])
def test_a_report_removes_what_stands_where_it_stages(tmp_path, kind):
    """Whatever stands at ``.report.tmp``, where the report is staged (a file, a link), is removed, not the target of
    a link, and the report written: it was refused, at every resume."""
    store = _store(tmp_path / "out", range(1))
    staging = store.output / report.STAGING
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("kept")
    if kind == "file":
        staging.write_text("in the way")
    else:
        staging.symlink_to(elsewhere if kind == "link to a directory" else tmp_path / "nowhere")
    assert report.write_report(store, load_job_options(CONFIG))["events"] == [0]
    assert json.loads((store.output / "performance.json").read_text())["events"] == [0]
    assert not os.path.lexists(staging)
    assert [path.name for path in elsewhere.iterdir()] == ["kept.txt"]


def test_a_directory_in_the_way_of_a_report_file_is_named(tmp_path):
    """A directory where a report file goes: the error names that file (not the staged one) and what is in the way;
    once it is removed, the report is written."""
    store = _store(tmp_path / "out", range(1))
    options = load_job_options(CONFIG)
    in_the_way = store.output / "tracks.csv"
    in_the_way.mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        report.write_report(store, options)
    assert (refused.value.filename, refused.value.strerror) == (str(in_the_way), "a directory is in the way; remove it")
    assert not (store.output / report.STAGING).exists()
    in_the_way.rmdir()
    report.write_report(store, options)
    assert in_the_way.is_file()


# ---- real jobs


@pytest.fixture(scope="module")
def small_job(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("job") / "out"
    assert _run(*SMALL, "--output", str(output)) == 0
    assert not (output / report.STAGING).exists()
    return output


def test_resume_processes_damaged_fragments_again(small_job, tmp_path, capsys):
    """A truncated fragment and one with changed bytes: ``--resume`` names them, processes their events again and
    writes the results of the undamaged job."""
    output = tmp_path / "out"
    shutil.copytree(small_job, output)
    truncated = output / "events" / "event000000000.npz"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    changed = output / "events" / "event000000001.npz"
    _flip(changed, changed.stat().st_size // 2)
    capsys.readouterr()
    assert _run(*SMALL, "--output", str(output), "--resume") == 0
    err = capsys.readouterr().err
    assert f"{truncated} cannot be read" in err
    assert f"{changed} cannot be read" in err
    assert "Traceback" not in err
    assert_same_results(output, small_job)


def test_a_job_whose_options_are_lost_is_refused(small_job, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(small_job, output)
    (output / "job_options.json").unlink()
    before = _files(output)
    for resume in ([], ["--resume"]):
        capsys.readouterr()
        assert _run("--simulate", "3", "--set=simulation.pileup=2", "--output", str(output), *resume) == 2
        err = capsys.readouterr().err
        assert err.startswith("trkx run: error: ")
        assert "options are lost" in err
    assert _files(output) == before


def test_resume_with_other_options_names_them(small_job, capsys):
    assert _run("--simulate", "2", "--set=simulation.pileup=3", "--output", str(small_job), "--resume") == 2
    assert "(simulation.pileup: 2.0 in the job, 3.0 now)" in capsys.readouterr().err


def test_a_second_job_in_the_output_of_a_running_one_is_refused(tmp_path, capsys):
    """While a job holds the output, another is refused (status 2) and changes nothing; once it ends, it runs."""
    output = tmp_path / "out"
    running = ResultStore(output)
    running.prepare(OPTIONS, resume=False)
    before = _files(output)
    assert _run(*SMALL, "--output", str(output)) == 2
    assert f"another job is running in {output}" in capsys.readouterr().err
    assert _files(output) == before
    running.close()
    assert _run(*SMALL, "--output", str(output)) == 0


def test_resume_processes_fragments_that_do_not_fit_or_hold_another_event_again(small_job, tmp_path, capsys):
    """A fragment written again with an array cut short, and one copied over another event's: ``--resume`` names
    them, processes their events again and writes the results of the undamaged job (the first failed the report with
    a traceback at every resume, the second was reported as the other event)."""
    output = tmp_path / "out"
    shutil.copytree(small_job, output)
    cut, copied = output / "events" / "event000000000.npz", output / "events" / "event000000001.npz"
    shutil.copyfile(cut, copied)
    _rewrite(cut, lambda arrays: arrays.update(track_label=arrays["track_label"][:-5]))
    capsys.readouterr()
    assert _run(*SMALL, "--output", str(output), "--resume") == 0
    err = capsys.readouterr().err
    assert f"{cut} cannot be read (ValueError: track_label holds " in err
    assert f"{copied} cannot be read (ValueError: it holds event 0, not event 1)" in err
    assert "Traceback" not in err
    assert_same_results(output, small_job)


def test_resume_retries_the_event_of_a_failure_record_of_wrong_kinds(small_job, tmp_path, capsys):
    """A failure record whose event id is no integer: ``--resume`` names it, processes its event again and writes
    the results of the undamaged job (it failed with a traceback at every resume)."""
    output = tmp_path / "out"
    shutil.copytree(small_job, output)
    (output / "events" / "event000000001.npz").unlink()
    record = output / "events" / "event000000001.failed.json"
    record.write_text(json.dumps({"event_id": "one", "stage": "read", "error": "x"}))
    capsys.readouterr()
    assert _run(*SMALL, "--output", str(output), "--resume") == 0
    err = capsys.readouterr().err
    assert f"{record} cannot be read (OptionKindError: 'event_id' must be an integer, got 'one')" in err
    assert "Traceback" not in err
    assert json.loads((output / "performance.json").read_text())["failed_events"] == []
    assert_same_results(output, small_job)


def test_resume_writes_the_report_past_what_stands_in_its_way(small_job, tmp_path, capsys):
    """A file at ``.report.tmp`` (where the report is staged) is removed; a directory at ``tracks.csv`` stops the job
    (status 3) with one line naming it, and once it is removed ``--resume`` writes the report."""
    output = tmp_path / "out"
    shutil.copytree(small_job, output)
    (output / "performance.json").unlink()
    (output / report.STAGING).write_text("in the way")
    (output / "tracks.csv").unlink()
    (output / "tracks.csv").mkdir()
    capsys.readouterr()
    assert _run(*SMALL, "--output", str(output), "--resume") == 3
    err = capsys.readouterr().err
    assert f"cannot write the report ({output / 'tracks.csv'}: a directory is in the way; remove it)" in err
    assert "Traceback" not in err
    assert not (output / report.STAGING).exists()
    (output / "tracks.csv").rmdir()
    assert _run(*SMALL, "--output", str(output), "--resume") == 0
    assert_same_results(output, small_job)
