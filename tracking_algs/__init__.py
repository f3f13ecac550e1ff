"""GNN track finding, fitting, simulation and performance, built on :mod:`inference_iface`.

Importing the package before numpy pins numpy to the kernels every x86-64 CPU runs alike (:mod:`tracking_algs.simd`),
so that a job gives the same results on every machine, and keeps numpy's large arrays off transparent huge pages
(:mod:`tracking_algs.huge_pages`), which cost the chain more kernel time than they save.
"""

from tracking_algs.huge_pages import keep_numpy_off_huge_pages
from tracking_algs.simd import pin_numpy_dispatch

pin_numpy_dispatch()
keep_numpy_off_huge_pages()
