"""Products of stacks of small matrices ([N, a, b] @ [N, b, c]) for the batched fitter.

``numpy.matmul`` hands every matrix of a stack to BLAS when the operands and the output have a BLAS-compatible
layout; for 5×5 matrices the per-call overhead of BLAS costs more than the product itself.  Giving ``matmul``
an output with a non-unit inner stride makes numpy use its own plain loop instead, which is 1.5–6× faster for
the fitter's shapes (5×5, 5×7, 5×2, 2×2).  The result is a view with that stride; it may be used like any
array (``np.ascontiguousarray`` gives a compact copy).
"""

from __future__ import annotations

import numpy as np


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for stacks ``a`` [N, i, k] and ``b`` [N, k, j], computed by numpy's non-BLAS loop."""
    stack = a.shape[:-2] if a.shape[:-2] == b.shape[:-2] else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = np.empty((*stack, a.shape[-2], 2 * b.shape[-1]), dtype=np.result_type(a, b))[..., ::2]
    return np.matmul(a, b, out=out)


def sandwich(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer @ inner @ outerᵀ`` for stacks of matrices (a covariance transformed by a Jacobian)."""
    return matmul(matmul(outer, inner), outer.transpose(0, 2, 1))


def transport_sandwich(jacobian: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``J P Jᵀ`` for symmetric ``cov`` P and transport Jacobians J whose rows 3 and 4 are unit rows (theta and
    q/p are constants of the motion in a solenoid field): only the first three rows of J enter a product."""
    rows = jacobian[:, :3]
    top = matmul(rows, cov)  # the first three rows of J P
    out = np.empty(cov.shape)
    out[:, :3, :3] = matmul(top, rows.transpose(0, 2, 1))
    out[:, :3, 3:] = top[:, :, 3:]
    out[:, 3:, :3] = top[:, :, 3:].transpose(0, 2, 1)
    out[:, 3:, 3:] = cov[:, 3:, 3:]
    return out
