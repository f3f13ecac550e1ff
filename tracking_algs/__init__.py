"""GNN track finding, fitting, simulation and performance, built on :mod:`inference_iface`.

Importing the package before numpy pins numpy to the kernels every x86-64 CPU runs alike (:mod:`tracking_algs.simd`),
so that a job gives the same results on every machine.
"""

from tracking_algs.simd import pin_numpy_dispatch

pin_numpy_dispatch()
