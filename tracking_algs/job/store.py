"""The job's output directory: one fragment file per finished event, so a job can stop and resume.

``OUT/events/event{ID:09d}.npz`` holds one finished event (built in memory, written to a temporary name, then
renamed, so a fragment is either whole or absent; its metadata names the event and its hit count, so a fragment
copied to another event's name is found out); ``OUT/events/event{ID:09d}.failed.json`` records an event that could
not be processed and why. Other names in ``OUT/events`` are no part of the store. ``OUT/job_options.json`` keeps the
effective options; a resumed job must use the same ones. A job holds an exclusive lock on ``OUT/.job.lock`` while it
runs, so that a second job in ``OUT`` is refused.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import sys
import weakref
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from inference_iface.errors import ConfigError
from inference_iface.options import describe_differences, integer, option_differences, text
from tracking_algs.io.atomic import interrupts_held, write_atomically

#: The effective options of the job in an output directory.
OPTIONS_FILE = "job_options.json"
#: The file a running job holds an exclusive lock (``flock``) on, in the output directory.
LOCK_FILE = ".job.lock"
#: What reading a damaged fragment raises (truncated, emptied, bytes changed: a CRC or header that does not match;
#: arrays that do not fit together, another event's fragment: :func:`_check_fragment`).
_DAMAGED = (zipfile.BadZipFile, EOFError, ValueError, KeyError, TypeError, zlib.error)


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
    """An event the job skipped: its id, the stage it failed in and the error message.

    Raises ``TypeError`` or ``ValueError`` for an id that is not an integer ≥ 0, or a stage or error that is not a
    string (a failure record changed by hand: :meth:`ResultStore.remove_unreadable` removes it).
    """

    event_id: int = attrs.field(validator=[integer, attrs.validators.ge(0)])
    stage: str = attrs.field(validator=text)
    error: str = attrs.field(validator=text)


class ResultStore:
    """Reads and writes the per-event fragments under one output directory.

    :meth:`prepare` locks the directory for the job; :meth:`close` (or the end of a ``with`` block on the store)
    releases the lock, as does the end of the process, however it ends.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.events_dir = self.output / "events"
        self._unlock: weakref.finalize | None = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock :meth:`prepare` took (nothing when there is none; also done when the store is
        garbage-collected)."""
        if self._unlock is not None:
            self._unlock()

    def prepare(self, options: Mapping[str, Any], resume: bool) -> None:
        """Create the directory and lock it for this job; on ``resume`` check the options match, otherwise refuse to
        mix old fragments (of events finished or failed). A resumed job's unreadable fragments and failure records are
        removed, each named on stderr, and their events processed again (:meth:`remove_unreadable`).

        Raises :class:`ConfigError` when another job holds the directory, when it holds fragments without
        ``job_options.json`` (a job whose options are lost) and for the refusals above. The checks come first: a
        refused job leaves ``output`` as it was.
        """
        if self.output.exists() and not self.output.is_dir():
            raise ConfigError(f"--output {str(self.output)!r} exists and is not a directory")
        text = json.dumps(options, indent=2, sort_keys=True)
        self._check(text, resume)
        self.output.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check(text, resume)  # again under the lock: a job that ended meanwhile may have changed the output
            for temporary in self.events_dir.glob("event*.tmp"):  # of a job killed while it wrote a fragment
                temporary.unlink(missing_ok=True)
            if self._holds_events():
                for line in self.remove_unreadable():
                    print(f"trkx run: {line}", file=sys.stderr)
            self.events_dir.mkdir(exist_ok=True)
            write_atomically(self.output / OPTIONS_FILE, text.encode())
        except BaseException:
            self.close()
            raise

    def remove_unreadable(self) -> list[str]:
        """Remove the fragments that cannot be read whole (truncated, emptied, changed: every array is read, so the
        zip's CRCs are checked), whose arrays do not fit together or that hold another event (:meth:`_load`), and the
        failure records that do not parse or record another event, so that their events are processed again; returns
        one line per file removed, naming it and why. A failure record beside a fragment of its event (left by a job
        stopped between saving the one and removing the other) is removed too, without a word."""
        removed = []
        finished = set()
        for event_id, path in sorted(self._event_files(".npz").items()):
            try:
                self._load(event_id)
                finished.add(event_id)
            except _DAMAGED as error:
                removed.append(_remove(path, error))
        for event_id, path in sorted(self._event_files(".failed.json").items()):
            try:
                _read_failure(path, event_id)
            except (ValueError, TypeError) as error:
                removed.append(_remove(path, error))
                continue
            if event_id in finished:
                path.unlink()
        return removed

    def discard_if_unused(self, remove_output: bool) -> None:
        """Undo :meth:`prepare` of a new job that saved nothing: remove ``job_options.json`` and ``events/`` (and,
        with ``remove_output``, the output directory) when nothing else is in them (used when the job cannot
        start)."""
        if any(self.events_dir.glob("*")):
            return
        (self.output / OPTIONS_FILE).unlink(missing_ok=True)
        (self.output / LOCK_FILE).unlink(missing_ok=True)  # safe while locked: :meth:`_lock` checks what it locked
        for directory in (self.events_dir, self.output) if remove_output else (self.events_dir,):
            try:
                directory.rmdir()  # only when empty
            except OSError:
                return

    def finished_ids(self) -> set[int]:
        """Ids of events with a complete fragment."""
        return set(self._event_files(".npz"))

    def forget_failures_outside(self, event_ids: Collection[int]) -> None:
        """Remove the failure records of the events not in ``event_ids`` (a resumed job's input that no longer holds
        them: nothing is left to retry, and the report speaks of the input as it is)."""
        keep = set(event_ids)
        for failure in self.failures():
            if failure.event_id not in keep:
                self._fragment(failure.event_id, ".failed.json").unlink(missing_ok=True)

    def save(self, result: EventResult) -> None:
        """Write one event's fragment atomically and forget any earlier failure of it; Ctrl-C or SIGTERM meanwhile
        waits until both are done (:func:`~tracking_algs.io.atomic.interrupts_held`)."""
        arrays = {"hit_id": result.hit_id, "track_label": result.track_label}
        arrays |= {f"fitted.{key}": value for key, value in result.fitted.items()}
        arrays |= {f"truth.{key}": value for key, value in result.truth.items()}
        meta = {"event_id": result.event_id, "hits": len(result.hit_id), "arrays": sorted(arrays),
                "timing_ms": result.timing_ms, "edges": result.edges, "backend": result.backend}  # fmt: skip
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with interrupts_held():  # milliseconds: a finished event is kept whole, then the interrupt stops the job
            content = io.BytesIO()  # in memory: a write that fails (a full disk) leaves no half-written zip behind
            np.savez(content, **arrays)
            write_atomically(self._fragment(result.event_id, ".npz"), content.getvalue())
            self._fragment(result.event_id, ".failed.json").unlink(missing_ok=True)

    def save_failure(self, failure: EventFailure) -> None:
        """Record that an event was skipped."""
        with interrupts_held():
            write_atomically(
                self._fragment(failure.event_id, ".failed.json"), json.dumps(attrs.asdict(failure)).encode()
            )

    def results(self, among: Collection[int] | None = None) -> Iterator[EventResult]:
        """Every finished event (of those in ``among``, when given), in event-id order."""
        finished = self.finished_ids() if among is None else self.finished_ids() & set(among)
        for event_id in sorted(finished):
            yield self._load(event_id)

    def failures(self) -> list[EventFailure]:
        """Every skipped event, in event-id order."""
        return [_read_failure(path, event_id) for event_id, path in sorted(self._event_files(".failed.json").items())]

    def _load(self, event_id: int) -> EventResult:
        """One event's fragment, every array read and checked (so a damaged one raises one of :data:`_DAMAGED`):
        ``ValueError`` when its arrays do not fit together or its metadata does not name event ``event_id`` and its
        hit count (:func:`_check_fragment`)."""
        with np.load(self._fragment(event_id, ".npz")) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        _check_fragment(arrays, meta, event_id)
        return EventResult(
            event_id=event_id,
            hit_id=arrays["hit_id"],
            track_label=arrays["track_label"],
            timing_ms=meta["timing_ms"],
            edges=meta["edges"],
            backend=meta["backend"],
            fitted=_section(arrays, "fitted."),
            truth=_section(arrays, "truth."),
        )

    def _check(self, text: str, resume: bool) -> None:
        """Refuse (:class:`ConfigError`) to start a job with the options ``text`` in the output as it is now."""
        options_file = self.output / OPTIONS_FILE
        if not options_file.exists():
            if self._holds_events():
                raise ConfigError(
                    f"{self.events_dir} holds the events of a job whose options are lost (no {options_file}); "
                    f"choose another --output or remove {self.events_dir}"
                )
            return
        if not resume and self._holds_events():
            raise ConfigError(
                f"{self.output} already holds results of a job; pass --resume to continue it or choose another --output"
            )
        if resume:
            try:
                recorded = json.loads(options_file.read_bytes())
            except ValueError as error:
                raise ConfigError(
                    f"--resume: {options_file} cannot be read ({error}); choose another --output or remove "
                    f"{options_file} and {self.events_dir}"
                ) from None
            differences = option_differences(recorded, json.loads(text))
            if differences:
                raise ConfigError(
                    f"--resume: the job options differ from those of the job in {self.output} "
                    f"({describe_differences(differences, 'in the job')}); resume with the same options (see "
                    f"{options_file})"
                )

    def _lock(self) -> None:
        """Hold an exclusive lock on :data:`LOCK_FILE` until :meth:`close`; :class:`ConfigError` when another job
        holds it. On a file system without locks the job runs unlocked, and says so."""
        path = self.output / LOCK_FILE
        while self._unlock is None:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)  # not inherited by worker processes
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.path.samestat(os.fstat(descriptor), os.stat(path)):  # else removed as it was locked: again
                    self._unlock = weakref.finalize(self, os.close, descriptor)
            except BlockingIOError:
                raise ConfigError(
                    f"another job is running in {self.output}; wait for it to end or choose another --output"
                ) from None
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                print(f"trkx run: cannot lock {path} ({error.strerror}); start no other job in {self.output} while "
                      "this one runs", file=sys.stderr)  # fmt: skip
                self._unlock = weakref.finalize(self, os.close, descriptor)
            finally:
                if self._unlock is None:
                    os.close(descriptor)

    def _holds_events(self) -> bool:
        """Whether the output holds fragments (of events finished or failed)."""
        return bool(self._event_files(".npz") or self._event_files(".failed.json"))

    def _event_files(self, suffix: str) -> dict[int, Path]:
        """The files named as :meth:`_fragment` names them with ``suffix``, by event id; other names (``event1.npz``,
        a copy's ``event000000001 (1).npz``) are no part of the store."""
        files = {}
        for path in self.events_dir.glob(f"event*{suffix}"):
            digits = path.name.removeprefix("event").removesuffix(suffix)
            if digits.isascii() and digits.isdigit() and path == self._fragment(int(digits), suffix):
                files[int(digits)] = path
        return files

    def _fragment(self, event_id: int, suffix: str) -> Path:
        return self.events_dir / f"event{event_id:09d}{suffix}"


def _section(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}


def _check_fragment(arrays: Mapping[str, np.ndarray], meta: Any, event_id: int) -> None:
    """Raise ``ValueError`` unless a fragment's ``arrays`` fit together and its ``meta`` names event ``event_id``, the
    fragment's hit count and its arrays: ``hit_id`` and ``track_label`` are 1-D integer arrays, and the arrays of each
    :func:`_group` are of one length. A fragment of a ``trkx run`` before the metadata named them fails too."""
    hit_id, track_label = arrays["hit_id"], arrays["track_label"]
    if any(array.ndim != 1 or array.dtype.kind not in "iu" for array in (hit_id, track_label)):
        raise ValueError("hit_id and track_label must be 1-D integer arrays")
    if not isinstance(meta, dict) or "event_id" not in meta or "hits" not in meta:
        raise ValueError("its metadata names no event and hit count (a fragment of an earlier trkx run)")
    if type(meta["event_id"]) is not int or meta["event_id"] != event_id:
        raise ValueError(f"it holds event {meta['event_id']!r}, not event {event_id}")
    if type(meta["hits"]) is not int or meta["hits"] != len(hit_id):
        raise ValueError(f"its metadata counts {meta['hits']!r} hits, its arrays {len(hit_id)}")
    if meta.get("arrays") != sorted(arrays):
        missing = sorted(set(meta.get("arrays") or ()) - set(arrays))
        raise ValueError(f"it lacks the array(s) {', '.join(missing)} that it was written with" if missing
                         else "its arrays are not those it was written with")  # fmt: skip
    first: dict[str, tuple[str, int]] = {}
    for name, array in arrays.items():
        if array.ndim == 0:
            raise ValueError(f"{name} is a single value, not an array")
        group, length = _group(name), len(array)
        other, other_length = first.setdefault(group, (name, length))
        if length != other_length:
            raise ValueError(f"{name} holds {length} values, {other} {other_length}")


def _group(name: str) -> str:
    """The group of a fragment's array ``name``: the arrays of one group hold a value each for the same things, so are
    of one length: ``hit_id`` and ``track_label`` per hit; ``fitted.*`` and ``truth.fit_*`` per fitted track;
    ``truth.particle_*`` per particle, ``truth.track_*`` per found track, and the same under ``truth.candidates.``."""
    section, _, column = name.rpartition(".")
    if section == "fitted" or column.startswith("fit_"):
        return "fitted"
    return f"{section}.{column.partition('_')[0]}" if section else "hits"


def _read_failure(path: Path, event_id: int) -> EventFailure:
    """The failure record ``path`` of event ``event_id``; ``ValueError`` or ``TypeError`` when it does not parse or
    records another event."""
    failure = EventFailure(**json.loads(path.read_bytes()))
    if failure.event_id != event_id:
        raise ValueError(f"it records event {failure.event_id}, not event {event_id}")
    return failure


def _remove(path: Path, error: Exception) -> str:
    """Remove a damaged file; the line that says so."""
    path.unlink()
    why = " ".join(f"{type(error).__name__}: {error}".split())
    return f"{path} cannot be read ({why}); removed, its event is processed again"
