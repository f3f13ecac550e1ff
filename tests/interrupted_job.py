"""``trkx run`` with a fault at a set point: SIGKILL (or another signal) to a process as the job reaches a given event.

Usage: ``python tests/interrupted_job.py KILL_AT[:MARKER] PID[/SIGNAL] run CONFIG --simulate N ...`` runs the ``trkx``
command line given after ``PID``; when the job's simulation source is asked for event ``KILL_AT``, the process ``PID``
is sent ``SIGNAL`` (a name without ``SIG``: ``INT``, ``TERM``; default ``KILL``, no clean-up) first: ``0`` for the
process that loads the event (the job's own with ``--jobs 1``, else the worker process running the event), ``client``
for the job's own process (``trkx run``, wherever the event is loaded), ``group`` for the process group of the process
that loads the event (the job's, with its worker processes and multiprocessing's resource tracker), a negative number
for another process group (say, a Triton server the job is using, with its backend stubs). With ``:MARKER``, only the
first load of event ``KILL_AT`` kills: it creates the file ``MARKER`` (holding the id of the process that loaded the
event), and a later load, say a Dask worker's retry of the event, finds it and carries on. Events before ``KILL_AT``
are finished and saved, none after it, at every run whatever the machine's speed (one process, ``--jobs 1``); ``trkx
run ... --resume`` continues the job.

The settings travel with the source (its fields), so they reach every process that loads events: the job's worker
pool and Dask workers, which load this file as the module ``interrupted_job`` (it must be on their ``sys.path``, as it
is for processes started by the job or by a test of this directory).
"""

from __future__ import annotations

import os
import signal
import sys

import attrs

from tracking_algs.cli import main
from tracking_algs.event import Event
from tracking_algs.job import sources

#: ``KILL["pid"]`` for the process group of the process that loads the event
GROUP = -(2**31)
#: (event id, process id, marker file, signal) of the kill, set from the command line before the job builds its source
KILL: dict[str, int | str] = {"at": -1, "pid": 0, "marker": "", "signal": int(signal.SIGKILL)}


def _settings(at: str, target: str) -> dict[str, int | str]:
    event, _, marker = at.partition(":")
    pid, _, name = target.partition("/")
    process = GROUP if pid == "group" else os.getpid() if pid == "client" else int(pid)
    return {"at": int(event), "pid": process, "marker": marker, "signal": int(signal.Signals[f"SIG{name or 'KILL'}"])}


@attrs.frozen
class KillingSource(sources.SimulationSource):
    """The job's simulation source, sending ``kill_signal`` to ``kill_pid`` before it loads event ``kill_at`` (only
    the first time when ``marker`` names a file)."""

    kill_at: int = attrs.field(factory=lambda: int(KILL["at"]), kw_only=True)
    kill_pid: int = attrs.field(factory=lambda: int(KILL["pid"]), kw_only=True)
    marker: str = attrs.field(factory=lambda: str(KILL["marker"]), kw_only=True)
    kill_signal: int = attrs.field(factory=lambda: int(KILL["signal"]), kw_only=True)

    def load(self, event_id: int) -> Event:
        """Simulate ``event_id``, signalling the chosen process first when it is the chosen event."""
        if event_id == self.kill_at and self._first_time():
            os.kill(-os.getpgrp() if self.kill_pid == GROUP else self.kill_pid or os.getpid(), self.kill_signal)
        return super().load(event_id)

    def _first_time(self) -> bool:
        if not self.marker:
            return True
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        return True


if __name__ == "__main__":
    import interrupted_job  # this file as a module, so that worker processes find the source's class by its name

    interrupted_job.KILL.update(_settings(sys.argv[1], sys.argv[2]))
    sources.SimulationSource = interrupted_job.KillingSource
    sys.exit(main(sys.argv[3:]))
