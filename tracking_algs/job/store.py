"""The job's output directory: one fragment file per finished event, so a job can stop and resume.

``OUT/events/event{ID:09d}.npz`` holds one finished event (written to a temporary name, then renamed,
so a fragment is either whole or absent); ``OUT/events/event{ID:09d}.failed.json`` records an event
that could not be processed and why. ``OUT/job_options.json`` keeps the effective options; a resumed
job must use the same ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from inference_iface.errors import ConfigError


@attrs.frozen
class EventResult:
    """Everything the job keeps of one event.

    ``fitted`` holds the fitted-track columns (empty without fitting); ``truth`` holds the arrays the
    performance report needs (per particle, per track, per fitted track); ``edges`` maps each stage to
    its edge count and, with truth, edge efficiency and purity; ``backend`` describes each neural stage's
    inference backend.
    """

    event_id: int
    hit_id: np.ndarray
    track_label: np.ndarray
    timing_ms: dict[str, float]
    edges: dict[str, dict[str, float]]
    backend: dict[str, str] = attrs.Factory(dict)
    fitted: dict[str, np.ndarray] = attrs.Factory(dict)
    truth: dict[str, np.ndarray] = attrs.Factory(dict)


@attrs.frozen
class EventFailure:
    """An event the job skipped: its id, the stage it failed in and the error message."""

    event_id: int
    stage: str
    error: str


class ResultStore:
    """Reads and writes the per-event fragments under one output directory."""

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.events_dir = self.output / "events"

    def prepare(self, options: Mapping[str, Any], resume: bool) -> None:
        """Create the directory; on ``resume`` check the options match, otherwise refuse to mix old fragments (of
        events finished or failed).

        The checks come first: a refused job leaves ``output`` as it was.
        """
        if self.output.exists() and not self.output.is_dir():
            raise ConfigError(f"--output {str(self.output)!r} exists and is not a directory")
        options_file = self.output / "job_options.json"
        text = json.dumps(options, indent=2, sort_keys=True)
        if options_file.exists():
            if not resume and self.events_dir.is_dir() and any(self.events_dir.glob("event*")):
                raise ConfigError(
                    f"{self.output} already holds results of a job; pass --resume to continue it or choose "
                    "another --output"
                )
            if resume and options_file.read_text() != text:
                raise ConfigError(
                    f"--resume: the job options differ from those of the job in {self.output}; resume with the "
                    f"same options (see {options_file})"
                )
        self.events_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(options_file, text.encode())

    def discard_if_unused(self, remove_output: bool) -> None:
        """Undo :meth:`prepare` of a new job that saved nothing: remove ``job_options.json`` and ``events/`` (and,
        with ``remove_output``, the output directory) when nothing else is in them (used when the job cannot
        start)."""
        if any(self.events_dir.glob("*")):
            return
        (self.output / "job_options.json").unlink(missing_ok=True)
        for directory in (self.events_dir, self.output) if remove_output else (self.events_dir,):
            try:
                directory.rmdir()  # only when empty
            except OSError:
                return

    def finished_ids(self) -> set[int]:
        """Ids of events with a complete fragment."""
        return {int(path.stem.removeprefix("event")) for path in self.events_dir.glob("event*.npz")}

    def forget_failures_outside(self, event_ids: Collection[int]) -> None:
        """Remove the failure records of the events not in ``event_ids`` (a resumed job's input that no longer holds
        them: nothing is left to retry, and the report speaks of the input as it is)."""
        keep = set(event_ids)
        for failure in self.failures():
            if failure.event_id not in keep:
                self._fragment(failure.event_id, ".failed.json").unlink(missing_ok=True)

    def save(self, result: EventResult) -> None:
        """Write one event's fragment atomically and forget any earlier failure of it."""
        meta = {"timing_ms": result.timing_ms, "edges": result.edges, "backend": result.backend}
        arrays = {
            "hit_id": result.hit_id,
            "track_label": result.track_label,
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        arrays |= {f"fitted.{key}": value for key, value in result.fitted.items()}
        arrays |= {f"truth.{key}": value for key, value in result.truth.items()}
        path = self._fragment(result.event_id, ".npz")
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
        self._fragment(result.event_id, ".failed.json").unlink(missing_ok=True)

    def save_failure(self, failure: EventFailure) -> None:
        """Record that an event was skipped."""
        _atomic_write(self._fragment(failure.event_id, ".failed.json"), json.dumps(attrs.asdict(failure)).encode())

    def results(self) -> Iterator[EventResult]:
        """Every finished event, in event-id order."""
        for event_id in sorted(self.finished_ids()):
            with np.load(self._fragment(event_id, ".npz")) as data:
                meta = json.loads(data["meta"].tobytes())
                yield EventResult(
                    event_id=event_id,
                    hit_id=data["hit_id"],
                    track_label=data["track_label"],
                    timing_ms=meta["timing_ms"],
                    edges=meta["edges"],
                    backend=meta["backend"],
                    fitted=_section(data, "fitted."),
                    truth=_section(data, "truth."),
                )

    def failures(self) -> list[EventFailure]:
        """Every skipped event, in event-id order."""
        paths = sorted(self.events_dir.glob("event*.failed.json"))
        return [EventFailure(**json.loads(path.read_text())) for path in paths]

    def _fragment(self, event_id: int, suffix: str) -> Path:
        return self.events_dir / f"event{event_id:09d}{suffix}"


def _section(data: Any, prefix: str) -> dict[str, np.ndarray]:
    return {key.removeprefix(prefix): data[key] for key in data.files if key.startswith(prefix)}


def _atomic_write(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
