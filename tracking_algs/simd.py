"""One numpy code path on every x86-64 CPU: numpy's AVX-512 kernels switched off before numpy is loaded.

numpy picks, at import, the fastest kernel its CPU supports for many functions.  On CPUs with AVX-512, numpy 1.26
computes the float64 transcendental functions the chain uses (``arctan2``, ``arcsin``, ``tan``, ``power``, ``exp``,
``log``, …) with SVML or its own AVX-512 code, which round the last bit differently from the AVX2 and scalar code
other CPUs run; it also sorts with ``x86-simd-sort``, which orders equal keys differently.  With these kernels off,
an AVX-512 CPU runs the same code as an AVX2 one and the job's floating-point results agree bit for bit.

numpy reads ``NPY_DISABLE_CPU_FEATURES`` once, when it is first imported, so :func:`pin_numpy_dispatch` must run
before that: the ``trkx`` entry point and the test suite call it first thing.  Worker processes and the Triton
server inherit the variable.  This module must not import numpy.
"""

from __future__ import annotations

import os
import sys

#: numpy's dispatch targets (numpy 1.x names) that use AVX-512 instructions.
AVX512_TARGETS = ("AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL",
                  "AVX512_ICL")  # fmt: skip
VARIABLE = "NPY_DISABLE_CPU_FEATURES"


def pin_numpy_dispatch() -> bool:
    """Switch numpy's AVX-512 kernels off for this process and its children, unless the user set
    ``NPY_DISABLE_CPU_FEATURES`` already or numpy is loaded (then this process and the children it starts keep one
    setting, the one numpy already uses).  Returns whether the variable was set here."""
    if VARIABLE in os.environ or "numpy" in sys.modules:
        return False
    os.environ[VARIABLE] = " ".join(AVX512_TARGETS)
    return True
