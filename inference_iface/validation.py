"""Checking caller inputs against a :class:`ModelSignature` before any backend is called.

The cast policy decides which dtype mismatches are accepted:

``"strict"`` (default)
    the array's dtype must equal the tensor's;
``"safe"``
    lossless casts only (numpy's ``"safe"`` rule: int32 → int64, float32 → float64, ...);
``"same_kind"``
    also casts within a kind that may lose precision (float64 → float32, int64 → int32).

A cast is always explicit in configuration, never silent by default. Non-contiguous arrays are copied
into C order without changing values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from inference_iface.dtypes import dtype_name, numpy_dtype
from inference_iface.errors import InputError
from inference_iface.signature import ModelSignature, TensorSpec, field_names

CastPolicy = Literal["strict", "safe", "same_kind"]
CAST_POLICIES: tuple[str, ...] = ("strict", "safe", "same_kind")


def collect_inputs(signature: ModelSignature, positional: Any, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the three accepted input forms (Mapping, NamedTuple, keywords) into a dict by tensor name.

    NamedTuple and keyword names may be the identifier forms of tensor names (see
    :func:`inference_iface.signature.field_name`); Mapping keys are the tensor names themselves.
    """
    if positional is not None and keywords:
        raise InputError("give inputs either as one Mapping/NamedTuple or as keywords, not both")
    if positional is None:
        return _by_tensor_name(signature, dict(keywords))
    if isinstance(positional, tuple) and hasattr(positional, "_asdict"):
        return _by_tensor_name(signature, positional._asdict())
    if isinstance(positional, Mapping):
        return dict(positional)
    raise InputError(
        f"inputs must be a Mapping by tensor name, a NamedTuple or keywords; got {type(positional).__name__}"
    )


def _by_tensor_name(signature: ModelSignature, by_field: dict[str, Any]) -> dict[str, Any]:
    names = signature.input_names
    to_tensor = dict(zip(field_names(names), names, strict=True))
    to_tensor.update({name: name for name in names if name.isidentifier()})
    return {to_tensor.get(key, key): value for key, value in by_field.items()}


def validate_inputs(
    signature: ModelSignature, inputs: Mapping[str, Any], cast_policy: CastPolicy = "strict"
) -> dict[str, np.ndarray]:
    """Check names, dtypes, ranks and fixed dimensions; return C-contiguous arrays in signature order.

    Raises:
        InputError: naming the tensor and giving expected versus got.
    """
    expected = signature.input_names
    unknown = [name for name in inputs if name not in expected]
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are {', '.join(map(repr, expected))}"
        )
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InputError(f"missing input(s) {', '.join(map(repr, missing))}; the model needs {', '.join(expected)}")
    return {spec.name: _check_array(spec, inputs[spec.name], cast_policy) for spec in signature.inputs}


def _check_array(spec: TensorSpec, value: Any, cast_policy: CastPolicy) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(f"input {spec.name!r}: expected a numpy array of {spec.dtype}, got {type(value).__name__}")
    array = _cast(spec, value, cast_policy)
    if array.ndim != spec.rank:
        raise InputError(
            f"input {spec.name!r}: expected rank {spec.rank} (shape {_shape_text(spec.shape)}), "
            f"got rank {array.ndim} (shape {_shape_text(array.shape)})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want >= 0 and want != got:
            raise InputError(
                f"input {spec.name!r}: dimension {axis} must be {want} (shape {_shape_text(spec.shape)}), "
                f"got {got} (shape {_shape_text(array.shape)})"
            )
    return np.ascontiguousarray(array)


def _cast(spec: TensorSpec, array: np.ndarray, cast_policy: CastPolicy) -> np.ndarray:
    if spec.dtype == "bytes":
        if array.dtype.kind not in "OSU":
            raise InputError(f"input {spec.name!r}: expected bytes (numpy object/str/bytes), got {array.dtype}")
        return array.astype(object, copy=False)
    want = numpy_dtype(spec.dtype)
    if array.dtype == want:
        return array
    allowed = cast_policy != "strict" and np.can_cast(array.dtype, want, casting=cast_policy)
    if not allowed:
        hint = "" if cast_policy != "strict" else " (set cast_policy = 'safe' or 'same_kind' to allow casts)"
        raise InputError(
            f"input {spec.name!r}: expected dtype {spec.dtype}, got {_name_or_raw(array.dtype)} "
            f"under cast policy {cast_policy!r}{hint}"
        )
    return array.astype(want)


def _name_or_raw(dtype: np.dtype) -> str:
    try:
        return dtype_name(dtype)
    except InputError:
        return str(dtype)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if dim < 0 else str(dim) for dim in shape) + "]"
