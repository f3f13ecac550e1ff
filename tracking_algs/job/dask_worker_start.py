"""The start of a Dask worker process of the job's own ``LocalCluster``, given to its nannies as a preload: the worker
leaves Ctrl-C to the job (:func:`~tracking_algs.worker_lifetime.leave_interrupts_to_parent`), as the workers of the
local pool do, so that an interrupted job stops them itself instead of each dying with a traceback of its own.

Workers of a cluster that the job only connects to (``[job] scheduler``) belong to whoever started them and keep
their own handling of signals.
"""

from __future__ import annotations

from distributed import Worker

from tracking_algs.worker_lifetime import leave_interrupts_to_parent


def dask_setup(worker: Worker) -> None:
    """Dask's preload hook, run in the worker process's main thread as the worker starts (restarted ones too)."""
    leave_interrupts_to_parent()
