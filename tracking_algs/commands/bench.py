"""``trkx bench [NAME ...] [--doc]``: run the benchmark scripts in ``benchmarks/`` and collect their tables.

Each script writes ``benchmarks/results/NAME.json`` and ``NAME.md``; ``--doc`` puts every such table into
``docs/benchmarks.md``, under a heading that describes this machine: between the markers ``<!-- bench:NAME -->``
and ``<!-- /bench:NAME -->`` where the page has them (the prose around them stays as written), or as a new
section at the end.  The scripts live in the source checkout (they are not installed with the package), so run
this from a clone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tracking_algs.commands.arg_types import output_directory
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.errors import TrackingError

NAME = "bench"
HELP = "run the benchmarks (ratios measured side by side) and collect the tables into docs/benchmarks.md"

#: Benchmarks in the order docs/benchmarks.md shows them, with their section titles.
TITLES: dict[str, str] = {
    "interface_overhead": "Interface overhead: iface.infer vs raw onnxruntime",
    "remote_overhead": "Local ONNX Runtime vs Triton (gRPC, gRPC + shared memory)",
    "simulation": "Detector simulation",
    "detector_comparison": "Simulated detector against real TrackML events",
    "finding": "GNN track finding",
    "event_speed": "The whole chain per event: real full events and simulated pile-up 200",
    "job_throughput": "Events per second of a whole job on the real full events",
    "graph_depth": "Graph depth: the neighbours each hit must add, by pile-up",
    "fitting": "Kalman fitter throughput",
    "serving": "Serving the tracking chain",
    "dask_scaling": "Scaling out on Dask: one job on 1, 2 and 4 workers",
}
BENCHMARKS: tuple[str, ...] = tuple(TITLES)
#: Seconds a benchmark script is given to stop after the interrupt is forwarded to it, before it is killed.
STOP_GRACE_S = 10.0
_PACKAGES = (
    "numpy",
    "onnxruntime-gpu",
    "onnxruntime",
    "tritonclient",
    "nvidia-pytriton",
    "torch",
    "scipy",
    "faiss-cpu",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx bench``."""
    choices = ", ".join(BENCHMARKS)
    parser.add_argument("names", nargs="*", default=[], metavar="NAME",
                        help=f"benchmarks to run: {choices} or all (default: none, only --doc)")  # fmt: skip
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the source checkout (default: .)")
    parser.add_argument("--doc", action="store_true", help="rewrite docs/benchmarks.md from benchmarks/results/")


def run(args: argparse.Namespace) -> int:
    """Run the chosen scripts, then optionally collect the tables."""
    root = args.root.resolve()
    if not (root / "benchmarks").is_dir():
        raise TrackingError(f"{root} has no benchmarks/ directory; run trkx bench from a source checkout")
    unknown = sorted(set(args.names) - {*BENCHMARKS, "all"})
    if unknown:
        raise TrackingError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)} or all")
    names = BENCHMARKS if "all" in args.names else tuple(args.names)
    if not names and not args.doc:
        raise TrackingError(f"nothing to do: name benchmarks to run ({', '.join(BENCHMARKS)} or all), or --doc")
    scripts = [root / "benchmarks" / f"{name}.py" for name in names]
    missing = [str(script) for script in scripts if not script.is_file()]
    if missing:
        raise TrackingError(f"no benchmark script {', '.join(missing)}; run trkx bench from a source checkout")
    if names:
        _check_writable(root / "benchmarks" / "results")
    failed = [name for name in names if _run_script(root, name) != 0]
    if args.doc:
        path = write_benchmarks_doc(root)
        print(f"wrote {path}")
    if failed:
        print(f"trkx bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _check_writable(results: Path) -> None:
    """:class:`TrackingError` before any script runs when the scripts could not write their results."""
    try:
        output_directory(str(results))
    except argparse.ArgumentTypeError as error:
        raise TrackingError(f"the benchmarks cannot write their results: {error}") from None


def _run_script(root: Path, name: str) -> int:
    """Run ``benchmarks/NAME.py`` and return its exit status. The script runs in a session of its own, so that
    Ctrl-C at the terminal reaches ``trkx bench`` only: it (or SIGTERM) is passed on to the script's process group as
    SIGTERM, which the scripts take as a quiet stop (``bench_common.run_script``), and ``KeyboardInterrupt`` raised
    here, for the one line ``trkx bench: stopped early``; a script that stops with status 3 itself was interrupted
    too."""
    script = root / "benchmarks" / f"{name}.py"
    print(f"== {name}", flush=True)
    with subprocess.Popen([sys.executable, str(script)], cwd=root, start_new_session=True) as child:
        try:
            with terminate_as_interrupt():
                status = child.wait()
        except KeyboardInterrupt:
            _stop(child)
            raise
    if status == EXIT_STOPPED:
        raise KeyboardInterrupt
    return status


def _stop(child: subprocess.Popen) -> None:
    """Pass the interrupt on to ``child`` and the processes it started (its process group, as Ctrl-C reaches a
    terminal's foreground group) as SIGTERM, and wait for it to end; SIGKILL after :data:`STOP_GRACE_S`."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # the group has ended already
            os.killpg(child.pid, signum)
        try:
            child.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def machine_description() -> str:
    """One paragraph naming this machine: CPU, cores, memory, OS, Python and the relevant package versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB memory"
    packages = []
    for package in _PACKAGES:
        try:
            packages.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {', '.join(packages)}"
    )


#: the first lines of docs/benchmarks.md, up to the machine's description
_DOC_HEAD = (
    "# Benchmarks\n\n"
    "Every figure is measured side by side in one run (ours vs the reference, interleaved), so ratios are\n"
    "comparable even on a busy machine. Regenerate with `trkx bench all --doc` from a checkout.\n\n"
)
#: the line of docs/benchmarks.md that names the machine the tables were collected on
_COLLECTED = re.compile(r"^Collected .*$", re.MULTILINE)


def write_benchmarks_doc(root: Path) -> Path:
    """Put the tables of ``benchmarks/results/*.md`` into ``docs/benchmarks.md`` (module docstring) and date it."""
    results = root / "benchmarks" / "results"
    path = root / "docs" / "benchmarks.md"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    collected = f"Collected {stamp} on: {machine_description()}."
    text = _read_text(path) if path.exists() else _DOC_HEAD + collected + "\n"
    text = _COLLECTED.sub(lambda _: collected, text, count=1)
    for name in BENCHMARKS:
        table = results / f"{name}.md"
        body = _read_text(table).strip() if table.exists() else f"Not run yet: `trkx bench {name}`."
        if body.startswith("## "):  # the script wrote its own title
            body = body.split("\n", 1)[1].strip()
        block = f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
        marked = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.DOTALL)
        found = marked.search(text)
        if found:  # the block as it is (a replacement string would read its backslashes as escapes)
            text = text[: found.start()] + block + text[found.end() :]
        else:
            script = f"Script: `benchmarks/{name}.py` (`trkx bench {name}`)."
            text = text.rstrip("\n") + f"\n\n## {TITLES[name]}\n\n{block}\n\n{script}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _read_text(path: Path) -> str:
    """A Markdown file's text; :class:`TrackingError` naming it when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TrackingError(f"{path}: not UTF-8 text (byte {error.start}); expected Markdown in UTF-8") from None
