"""Worker processes that end with the process that started them, and leave Ctrl-C to it.

A worker of a ``multiprocessing`` pool waits for its next task on a pipe that its sibling workers hold open as
well, so it never sees that pipe close when the process that started the pool dies: a job killed by SIGKILL or by
the kernel's out-of-memory killer would leave its workers behind, each holding its memory (half a gigabyte for a
fitting worker of a real event), its cores and its semaphores.  :func:`end_with_parent`, called first thing in a
worker, makes the worker exit as soon as its parent has ended, however it ended.

The worker waits, in a daemon thread, on its parent's sentinel (``multiprocessing.parent_process()``): the read end
of a pipe whose write end only the parent holds, which the kernel closes when the parent's process ends.  Linux's
``PR_SET_PDEATHSIG`` would do the same for one platform but fires when the *thread* that started the child ends, so
a pool started from a thread that finishes before the pool does (a Dask task's, a Triton model's) would lose its
workers; the sentinel belongs to the process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import signal
import threading


def end_with_parent() -> None:
    """Have this process exit (status 1, without clean-up: its parent, which collected its results, is gone) as
    soon as the process that started it ends; at once if that has happened already.  No effect in a process that
    ``multiprocessing`` did not start."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    threading.Thread(target=_exit_when_ended, args=(parent,), name="end-with-parent", daemon=True).start()


def _exit_when_ended(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent's sentinel closes: when its process has ended
    os._exit(1)


def leave_interrupts_to_parent() -> None:
    """Ignore SIGINT in this worker process. Ctrl-C in a terminal reaches the whole process group, the job's workers
    with it; the job (the parent) stops them and writes what they finished, where a worker interrupted on its own
    would die mid-event with a traceback of its own. Call it from the process's main thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
