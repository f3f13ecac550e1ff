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
