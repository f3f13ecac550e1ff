"""``trkx bench``: collecting benchmark tables into docs/benchmarks.md, and rejecting unknown names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tracking_algs.cli import main


def test_doc_collects_every_table_under_its_title(tmp_path, capsys):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (results / "simulation.md").write_text("## Own title\n\n| pile-up | s/event |\n|---|---|\n| 0 | 0.03 |\n")
    (results / "fitting.md").write_text("| tracks/s |\n|---|\n| 11000 |\n")
    assert main(["bench", "--root", str(tmp_path), "--doc"]) == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## Detector simulation\n\n<!-- bench:simulation -->\n| pile-up | s/event |" in text
    assert "Own title" not in text
    fitting = "<!-- bench:fitting -->\n| tracks/s |\n|---|\n| 11000 |\n<!-- /bench:fitting -->"
    assert f"## Kalman fitter throughput\n\n{fitting}" in text
    assert "Not run yet: `trkx bench finding`" in text
    assert "cores" in text  # the machine description


def test_doc_replaces_the_marked_tables_and_keeps_the_prose_around_them(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (results / "fitting.md").write_text("| tracks/s |\n|---|\n| 12000 |\n")
    page = tmp_path / "docs" / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\nCollected 2000-01-01 on: an old machine.\n\n## Kalman fitter throughput\n\nWhat is fitted.\n\n"
        "<!-- bench:fitting -->\n| tracks/s |\n|---|\n| 9000 |\n<!-- /bench:fitting -->\n\nWhy it is so fast.\n"
    )
    assert main(["bench", "--root", str(tmp_path), "--doc"]) == 0
    text = page.read_text()
    assert "What is fitted.\n\n<!-- bench:fitting -->\n| tracks/s |\n|---|\n| 12000 |\n<!-- /bench:fitting -->" in text
    assert "\n\nWhy it is so fast.\n" in text
    for replaced in ("9000", "an old machine", "2000-01-01"):
        assert replaced not in text
    assert text.count("## Kalman fitter throughput") == 1
    assert "## GNN track finding\n\n<!-- bench:finding -->\nNot run yet" in text  # an unmarked one appended


def test_unknown_benchmark_is_an_error_listing_the_choices(tmp_path, capsys):
    (tmp_path / "benchmarks").mkdir()
    assert main(["bench", "--root", str(tmp_path), "nope"]) == 2
    assert "unknown benchmark(s) nope; choose from interface_overhead" in capsys.readouterr().err


def test_nothing_to_do_and_a_missing_script_are_refused_before_any_runs(tmp_path, capsys):
    """``trkx bench`` with nothing to do (no names, no ``--doc``), or naming a benchmark whose script is missing, is
    refused with status 2 before any script runs."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "simulation.py").write_text("open('ran', 'w')\n")
    assert main(["bench", "--root", str(tmp_path)]) == 2
    assert "trkx bench: error: nothing to do: name benchmarks to run" in capsys.readouterr().err
    assert main(["bench", "--root", str(tmp_path), "simulation", "fitting"]) == 2
    err = capsys.readouterr().err
    assert f"trkx bench: error: no benchmark script {tmp_path / 'benchmarks' / 'fitting.py'};" in err
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("table", ["benchmarks/results/fitting.md", "docs/benchmarks.md"])
def test_doc_names_a_file_that_is_not_utf8(tmp_path, capsys, table):
    """A results table or docs/benchmarks.md that is not UTF-8 is one line naming the file, status 2."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / table).write_bytes(b"| tracks/s |\n|---|\n| 11\xff000 |\n")
    assert main(["bench", "--root", str(tmp_path), "--doc"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"trkx bench: error: {tmp_path / table}: not UTF-8 text (byte 23); expected Markdown in UTF-8"


@pytest.mark.parametrize("handler", ["signal.SIG_DFL", "signal.default_int_handler"])
def test_ctrl_c_is_one_line_and_status_3(tmp_path, handler):
    """Ctrl-C at the terminal (SIGINT to ``trkx bench``'s process group) while a benchmark runs: one line, no
    traceback, status 3, also for a script that would print ``KeyboardInterrupt``'s traceback on SIGINT (it runs in
    a session of its own and is stopped with SIGTERM)."""
    (tmp_path / "benchmarks").mkdir()
    script = ["import signal, time", f"signal.signal(signal.SIGINT, {handler})", "print('started', flush=True)",
              "time.sleep(60)"]  # fmt: skip
    (tmp_path / "benchmarks" / "fitting.py").write_text("\n".join(script) + "\n")
    with subprocess.Popen(
        [sys.executable, "-u", "-m", "tracking_algs.cli", "bench", "--root", str(tmp_path), "fitting"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        assert process.stdout.readline() == "== fitting\n"
        assert process.stdout.readline() == "started\n"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert err.strip() == "trkx bench: stopped early: interrupted"


def test_results_that_cannot_be_written_are_refused_before_any_script_runs(tmp_path, capsys):
    """``benchmarks/results`` a file (or not writable): status 2 naming it, and no script runs."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "results").write_text("not a directory\n")
    (tmp_path / "benchmarks" / "simulation.py").write_text("open('ran', 'w')\n")
    assert main(["bench", "--root", str(tmp_path), "simulation"]) == 2
    err = capsys.readouterr().err
    assert "trkx bench: error: the benchmarks cannot write their results: " in err, err
    assert "exists and is not a directory" in err
    assert not (tmp_path / "ran").exists()
