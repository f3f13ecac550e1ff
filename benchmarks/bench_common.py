"""What every benchmark script shares: interleaved timing and writing ``results/NAME.{json,md}``.

The JSON records the machine (CPU, cores, memory, package versions) and the load average when the
figures were taken, since the project's machines may be shared.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tracking_algs.commands.bench import machine_description

RESULTS = Path(__file__).resolve().parent / "results"


def time_interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds per call for each variant; every round calls each variant once, order rotated per round,
    so drifts of a shared machine hit all variants alike."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: np.empty(rounds) for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name][index] = time.perf_counter() - start
    return times


def write_results(name: str, report: dict[str, Any], table: str, output_dir: Path = RESULTS) -> None:
    """Write ``NAME.json`` (``report`` plus machine and load) and ``NAME.md`` (``table``) into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": name, "machine": machine_description(), "load_average_1min": os.getloadavg()[0], **report}
    (output_dir / f"{name}.json").write_text(json.dumps(full, indent=2) + "\n")
    (output_dir / f"{name}.md").write_text(table)
