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

import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Iterator


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
    would die mid-event with a traceback of its own. Call it from the process's main thread. A SIGINT that arrived
    while the worker started with it held (:func:`sigint_blocked`) is dropped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def interrupt_tasks_only() -> None:
    """Have SIGINT interrupt this worker process only within :func:`interruptible_task`, and ignore it otherwise (a
    SIGINT that arrived while the worker started with it held, :func:`sigint_blocked`, included). Ctrl-C reaches the
    workers with the process that started them: a task then ends at once, and a pool worker hands its
    ``KeyboardInterrupt`` back as the task's outcome, while a worker that waits for a task, or imports its modules,
    would end with a traceback of its own. Call it from the process's main thread."""
    signal.signal(signal.SIGINT, _interrupt_running_task)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


#: whether this worker process runs a task that SIGINT interrupts (:func:`interruptible_task`)
_RUNNING_TASK = [False]


def _interrupt_running_task(signum: int, frame: object) -> None:
    if _RUNNING_TASK[0]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible_task() -> Iterator[None]:
    """Within the block, SIGINT interrupts this worker (after :func:`interrupt_tasks_only`)."""
    _RUNNING_TASK[0] = True
    try:
        yield
    finally:
        _RUNNING_TASK[0] = False


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread within the block (its signal mask), so that the worker processes started in it begin
    with SIGINT blocked (a thread's signal mask passes to the processes it starts, through ``exec`` too) until they call
    :func:`leave_interrupts_to_parent` or :func:`interrupt_tasks_only`: a Ctrl-C while a worker still imports its
    modules would end it with a traceback. A SIGINT for this process that arrives meanwhile is not lost: another
    thread takes it, or this one as the block ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
