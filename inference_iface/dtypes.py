"""Canonical tensor dtype names and their numpy equivalents.

The interface names dtypes with numpy's spelling (``"float32"``, ``"int64"``, ``"bool"``), plus
``"bfloat16"`` (held by numpy through ``ml_dtypes`` when it is installed) and ``"bytes"`` for
variable-length strings (Triton ``BYTES``, ONNX ``tensor(string)``), held in numpy ``object`` arrays.
Backends translate between these names and their own (``"FP32"``, ``"tensor(float)"``).
"""

from __future__ import annotations

import functools

import numpy as np

from inference_iface.errors import InputError

#: Every dtype name the interface knows, in a stable order.
DTYPE_NAMES: tuple[str, ...] = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "bytes",
)


def _bfloat16() -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with onnx
        return None
    return np.dtype(ml_dtypes.bfloat16)


@functools.cache
def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds tensors of dtype ``name``.

    Raises:
        InputError: the name is unknown, or ``bfloat16`` is asked for without ``ml_dtypes``.
    """
    if name == "bytes":
        return np.dtype(object)
    if name == "bfloat16":
        dtype = _bfloat16()
        if dtype is None:
            raise InputError("dtype 'bfloat16' needs the 'ml_dtypes' package, which is not installed")
        return dtype
    if name not in DTYPE_NAMES:
        raise InputError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}")
    return np.dtype(name)


def dtype_name(dtype: np.dtype | type | str) -> str:
    """The interface's name for a numpy dtype (``object``, ``str`` and ``bytes`` arrays map to ``"bytes"``)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "bytes"
    if dtype == _bfloat16():
        return "bfloat16"
    if dtype.name not in DTYPE_NAMES:
        raise InputError(f"numpy dtype {dtype} has no tensor equivalent; expected one of {', '.join(DTYPE_NAMES)}")
    return dtype.name
