"""The start of a Dask worker process of the job's own ``LocalCluster``, given to its nannies as a preload: the worker
leaves Ctrl-C to the job (:func:`~tracking_algs.worker_lifetime.leave_interrupts_to_parent`), as the workers of the
local pool do, so that an interrupted job stops them itself instead of each dying with a traceback of its own; and,
as the job closes the cluster, the worker does not warn of the event it was running (the job reports the
interruption and keeps the events it finished).

Workers of a cluster that the job only connects to (``[job] scheduler``) belong to whoever started them and keep
their own handling of signals and their own log.
"""

from __future__ import annotations

import logging

from distributed import Worker

from tracking_algs.job.dask_logs import STATE_MACHINE_LOGGER, ClosingWorkerFilter
from tracking_algs.worker_lifetime import leave_interrupts_to_parent


def dask_setup(worker: Worker) -> None:
    """Dask's preload hook, run in the worker process's main thread as the worker starts (restarted ones too)."""
    leave_interrupts_to_parent()
    logging.getLogger(STATE_MACHINE_LOGGER).addFilter(ClosingWorkerFilter(worker))
