"""numpy pinned to the kernels every x86-64 CPU runs alike, and kept off transparent huge pages, in every process a job
starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tracking_algs import huge_pages
from tracking_algs.simd import AVX512_TARGETS, VARIABLE


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in (VARIABLE, huge_pages.VARIABLE)} | env
    return subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", code], env=environment,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_importing_the_package_first_switches_numpys_avx512_kernels_off():
    """The variable is set before numpy loads (importing the package loads no numpy: numpy reads the variable once, at
    its own import), every name is one numpy knows (an unknown one makes numpy warn at import, an error here), and
    numpy then reports the AVX-512 features off whatever the CPU has (on a CPU without them, off in any case)."""
    probe = _python(
        "import os, sys, tracking_algs\nprint('numpy' in sys.modules)\nimport numpy\n"
        "from numpy.core._multiarray_umath import __cpu_features__ as features\n"
        f"print(os.environ[{VARIABLE!r}]); print(any(features[name] for name in {AVX512_TARGETS!r}))"
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[:3] == ["False", " ".join(AVX512_TARGETS), "False"]


def test_a_users_setting_and_an_earlier_numpy_are_left_alone():
    """A variable the user set wins; with numpy loaded first, the process and the children it starts keep numpy's
    own choice (no variable), so parent and worker processes always agree."""
    own = _python(f"import os, tracking_algs; print(os.environ[{VARIABLE!r}])", **{VARIABLE: "AVX512F"})
    assert own.stdout.strip() == "AVX512F", own.stderr
    late = _python(f"import os, numpy, tracking_algs; print({VARIABLE!r} in os.environ)")
    assert late.stdout.strip() == "False", late.stderr


#: numpy's own switch of its huge-page requests; it returns the setting it replaces (numpy has no public getter)
HUGE_PAGES_NOW = "numpy.core.multiarray._set_madvise_hugepage(True)"


def test_importing_the_package_first_keeps_numpys_arrays_off_huge_pages():
    probe = _python(
        f"import os, tracking_algs, numpy\nprint(os.environ[{huge_pages.VARIABLE!r}]); print({HUGE_PAGES_NOW})"
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["0", "False"]


def test_a_users_huge_page_setting_and_an_earlier_numpy_are_left_alone():
    own = _python(f"import os, tracking_algs, numpy\nprint({HUGE_PAGES_NOW})", **{huge_pages.VARIABLE: "1"})
    assert own.stdout.strip() == "True", own.stderr
    late = _python(
        f"import os, numpy, tracking_algs\nprint({huge_pages.VARIABLE!r} in os.environ); print({HUGE_PAGES_NOW})"
    )
    assert late.stdout.split() == ["False", "True"], late.stderr
