"""numpy's large arrays on ordinary memory pages: ``NUMPY_MADVISE_HUGEPAGE=0`` set before numpy is loaded.

On Linux numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every array of 4 MiB or
more.  The chain makes and drops arrays of tens to hundreds of MiB at every stage of every event (pairs, triplets,
the fitter's batches), and the kernel clears each 2 MiB huge page when the array first touches it; on the 2-core
virtual machine of ``docs/benchmarks.md`` that kernel time was half to two thirds of what a real full event's track
building took and a third of its graph construction (docs/benchmarks.md, "Memory pages").  With ordinary pages the
same arrays cost a fraction of it.  Where arrays come from in memory changes no result.

numpy reads ``NUMPY_MADVISE_HUGEPAGE`` once, when it is first imported, so :func:`keep_numpy_off_huge_pages` must run
before that (the package's ``__init__`` calls it, as it pins numpy's kernels); worker processes inherit the variable.
This module must not import numpy.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "NUMPY_MADVISE_HUGEPAGE"


def keep_numpy_off_huge_pages() -> bool:
    """Keep numpy's arrays off transparent huge pages in this process and its children, unless the user set
    ``NUMPY_MADVISE_HUGEPAGE`` already or numpy is loaded.  Returns whether the variable was set here."""
    if VARIABLE in os.environ or "numpy" in sys.modules:
        return False
    os.environ[VARIABLE] = "0"
    return True
