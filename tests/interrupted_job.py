"""``trkx run`` with a fault at a set point: SIGKILL to a process as the job reaches a given event.

Usage: ``python tests/interrupted_job.py KILL_AT PID run CONFIG --simulate N ...`` runs the ``trkx`` command line
given after ``PID``; when the job asks its simulation source for event ``KILL_AT``, the process ``PID`` is sent
SIGKILL (no clean-up) first: ``0`` for the job's own process, ``group`` for the job's process group (its worker
processes and multiprocessing's resource tracker too), a negative number for another process group (say, a Triton
server the job is using, with its backend stubs).  Events
before ``KILL_AT`` are finished and saved, none after it, at every run whatever the machine's speed (one process,
``--jobs 1``); ``trkx run ... --resume`` continues the job.
"""

from __future__ import annotations

import os
import signal
import sys

import attrs

from tracking_algs.cli import main
from tracking_algs.event import Event
from tracking_algs.job import sources

#: The environment variable that carries ``KILL_AT:PID`` to the job's worker processes, which import this module
#: afresh (``--jobs N``: the source travels to them pickled, its class by reference).
VARIABLE = "INTERRUPTED_JOB_KILL"
#: ``KILL["pid"]`` for the job's own process group
GROUP = -(2**31)


def _kill_settings() -> dict[str, int]:
    at, _, pid = os.environ.get(VARIABLE, "-1:0").partition(":")
    return {"at": int(at), "pid": GROUP if pid == "group" else int(pid)}


#: (event id, process id) of the kill
KILL = _kill_settings()


@attrs.frozen
class KillingSource(sources.SimulationSource):
    """The job's simulation source, sending SIGKILL to ``KILL["pid"]`` before it loads event ``KILL["at"]``."""

    def load(self, event_id: int) -> Event:
        """Simulate ``event_id``, killing the chosen process first when it is the chosen event."""
        if event_id == KILL["at"]:
            os.kill(-os.getpgrp() if KILL["pid"] == GROUP else KILL["pid"] or os.getpid(), signal.SIGKILL)
        return super().load(event_id)


if __name__ == "__main__":
    os.environ[VARIABLE] = f"{sys.argv[1]}:{sys.argv[2]}"
    KILL.update(_kill_settings())
    sources.SimulationSource = KillingSource
    sys.exit(main(sys.argv[3:]))
