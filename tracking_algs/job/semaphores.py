"""The named semaphores of a job's worker pool, recorded so that a job killed with its process group can have them
removed by the next job in its output directory.

A job with worker processes (``--jobs N``) uses multiprocessing's queues and locks, each a named POSIX semaphore
(``/dev/shm/sem.mp-*``). Python's resource tracker unlinks them when the job ends; SIGKILL to the job's whole process
group kills the tracker too, and the files stay. The job therefore records the names its pool created, with its
process id; the next job in the directory (``--resume``) removes those of a dead job that no process maps.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from inference_iface.shared_memory import names, process_alive, remove_unmapped

#: The record, in the job's ``events/`` directory.
RECORD = "worker-semaphores.json"
PATTERN = "sem.mp-*"


def remove_those_of_a_dead_job(directory: Path) -> list[str]:
    """Remove the semaphores recorded in ``directory`` by a job that is no longer running; the names removed."""
    record = directory / RECORD
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    if process_alive(int(data.get("pid", 0))):
        return []
    removed = remove_unmapped(data.get("names", []))
    record.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def recorded(directory: Path) -> Iterator[Callable[[], None]]:
    """A block whose semaphores are recorded in ``directory``: call the function it yields once the pool's workers
    have started; the record goes when the block ends, which a SIGKILL prevents.  (A semaphore another process made
    meanwhile may be recorded too; it is never removed while that process maps it.)"""
    before = names(PATTERN)

    def record() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        created = sorted(names(PATTERN) - before)
        (directory / RECORD).write_text(json.dumps({"pid": os.getpid(), "names": created}))

    try:
        yield record
    finally:
        (directory / RECORD).unlink(missing_ok=True)
