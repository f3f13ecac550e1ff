"""``trkx bench``: collecting benchmark tables into docs/benchmarks.md, and rejecting unknown names."""

from __future__ import annotations

from tracking_algs.cli import main


def test_doc_collects_every_table_under_its_title(tmp_path, capsys):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (results / "simulation.md").write_text("## Own title\n\n| pile-up | s/event |\n|---|---|\n| 0 | 0.03 |\n")
    (results / "fitting.md").write_text("| tracks/s |\n|---|\n| 11000 |\n")
    assert main(["bench", "--root", str(tmp_path), "--doc"]) == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## Detector simulation\n\n| pile-up | s/event |" in text
    assert "Own title" not in text
    assert "## Kalman fitter throughput\n\n| tracks/s |" in text
    assert "Not run yet: `trkx bench finding`" in text
    assert "cores" in text  # the machine description


def test_unknown_benchmark_is_an_error_listing_the_choices(tmp_path, capsys):
    (tmp_path / "benchmarks").mkdir()
    assert main(["bench", "--root", str(tmp_path), "nope"]) == 2
    assert "unknown benchmark(s) nope; choose from interface_overhead" in capsys.readouterr().err
