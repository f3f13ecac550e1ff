"""Translation between the interface's dtype names and Triton's (``"FP32"``, ``TYPE_FP32``)."""

from __future__ import annotations

from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from inference_iface.dtypes import dtype_name, numpy_dtype
from inference_iface.errors import ModelError


def triton_datatype(name: str) -> str:
    """Triton's wire datatype (``"FP32"``, ``"INT64"``, ``"BYTES"``...) for an interface dtype name."""
    datatype = np_to_triton_dtype(numpy_dtype(name))
    if datatype is None:
        raise ModelError(f"dtype {name!r} has no Triton equivalent")
    return datatype


def interface_dtype(datatype: str) -> str:
    """The interface dtype name for a Triton wire datatype (``"FP32"`` → ``"float32"``)."""
    numpy_type = triton_to_np_dtype(datatype)
    if numpy_type is None:
        raise ModelError(f"Triton datatype {datatype!r} has no numpy equivalent")
    return dtype_name(numpy_type)


def config_data_type(name: str) -> str:
    """The ``config.pbtxt`` ``data_type`` (``TYPE_FP32``, ``TYPE_STRING``...) for an interface dtype name."""
    datatype = triton_datatype(name)
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
