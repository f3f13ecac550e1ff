"""Checking caller inputs against a :class:`ModelSignature` before any backend is called.

The cast policy decides which dtype mismatches are accepted:

``"strict"`` (default)
    the array's dtype must equal the tensor's;
``"safe"``
    lossless casts only: numpy's ``"safe"`` rule (int32 → int64, float32 → float64, ...) less the integer → float
    casts that round large values (int64 and uint64 → float64);
``"same_kind"``
    also casts within a kind that may lose precision (float64 → float32, int64 → int32).

A cast is always explicit in configuration, never silent by default. An array in the other byte order
than the machine's (a big-endian ``>f4`` array on a little-endian machine) does not have the tensor's dtype
either: ``"safe"`` and ``"same_kind"`` convert it, ``"strict"`` rejects it and says so. Non-contiguous arrays
are copied into C order without changing values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import numpy as np

from inference_iface.dtypes import dtype_name, numpy_dtype
from inference_iface.errors import InputError
from inference_iface.signature import ModelSignature, TensorSpec

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
    to_tensor = signature.input_keywords
    inputs: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in by_field.items():
        name = to_tensor.get(key, key)
        if name in inputs:
            raise InputError(f"input {name!r} given twice, as {given_as[name]!r} and as {key!r}; give it once")
        inputs[name], given_as[name] = value, key
    return inputs


def validate_inputs(
    signature: ModelSignature, inputs: Mapping[str, Any], cast_policy: CastPolicy = "strict"
) -> dict[str, np.ndarray]:
    """Check names, dtypes, ranks and fixed dimensions; return C-contiguous arrays in signature order.

    Raises:
        InputError: naming the tensor and giving expected versus got.
    """
    plan = _plan(signature)
    if inputs.keys() != plan.names:
        _raise_name_error(signature.input_names, inputs)
    checked = {}
    for spec, want, rank, fixed in plan.checks:
        value = inputs[spec.name]
        # fast path for the common case (a plain array of the right dtype, rank and dims, not of objects, whose
        # elements the full check looks at); anything else takes the full check
        if type(value) is np.ndarray and value.dtype == want and value.ndim == rank and want.kind != "O":
            shape = value.shape
            for axis, dim in fixed:
                if shape[axis] != dim:
                    break
            else:
                checked[spec.name] = value if value.flags.c_contiguous else np.ascontiguousarray(value)
                continue
        checked[spec.name] = _check_array(spec, value, cast_policy)
    return checked


@attrs.frozen
class _Plan:
    """What :func:`validate_inputs` checks per input, computed once per signature."""

    names: frozenset[str]
    checks: tuple[tuple[TensorSpec, np.dtype, int, tuple[tuple[int, int], ...]], ...]


@functools.lru_cache(maxsize=256)
def _plan(signature: ModelSignature) -> _Plan:
    checks = tuple((spec, numpy_dtype(spec.dtype), spec.rank, _fixed_dims(spec)) for spec in signature.inputs)
    return _Plan(names=frozenset(signature.input_names), checks=checks)


def _fixed_dims(spec: TensorSpec) -> tuple[tuple[int, int], ...]:
    return tuple((axis, dim) for axis, dim in enumerate(spec.shape) if dim >= 0)


def _raise_name_error(expected: tuple[str, ...], inputs: Mapping[str, Any]) -> None:
    unknown = [name for name in inputs if name not in expected]
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are {', '.join(map(repr, expected))}"
        )
    missing = [name for name in expected if name not in inputs]
    raise InputError(f"missing input(s) {', '.join(map(repr, missing))}; the model needs {', '.join(expected)}")


def _check_array(spec: TensorSpec, value: Any, cast_policy: CastPolicy) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(f"input {spec.name!r}: expected a numpy array of {spec.dtype}, got {type(value).__name__}")
    if isinstance(value, np.ma.MaskedArray):  # the model would see the values under the mask
        raise InputError(f"input {spec.name!r}: a masked array; pass plain values (e.g. its .filled(value))")
    array = _cast(spec, value, cast_policy)
    shape = array.shape
    if len(shape) != len(spec.shape):
        raise InputError(
            f"input {spec.name!r}: expected rank {spec.rank} (shape {_shape_text(spec.shape)}), "
            f"got rank {array.ndim} (shape {_shape_text(shape)})"
        )
    for want, got in zip(spec.shape, shape, strict=True):  # hot path: no enumerate; the error path finds the axis
        if want != got and want >= 0:
            axis = next(axis for axis, dim in enumerate(spec.shape) if dim >= 0 and dim != shape[axis])
            raise InputError(
                f"input {spec.name!r}: dimension {axis} must be {spec.shape[axis]} (shape {_shape_text(spec.shape)}), "
                f"got {shape[axis]} (shape {_shape_text(shape)})"
            )
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _cast(spec: TensorSpec, array: np.ndarray, cast_policy: CastPolicy) -> np.ndarray:
    """The array in the tensor's dtype: unchanged when it already is, cast when ``cast_policy`` allows (a
    non-native byte order is converted by any policy but ``"strict"``), otherwise an :class:`InputError` that says
    what the array holds."""
    if spec.dtype == "bytes":
        strings = array.dtype.kind in "SU" or (
            array.dtype.kind == "O" and all(isinstance(item, (str, bytes)) for item in array.flat)
        )
        if not strings:
            raise InputError(
                f"input {spec.name!r}: expected bytes (a numpy str or bytes array, or an object array of str and "
                f"bytes), got {describe_dtype(array)}"
            )
        _check_utf8(spec, array)
        return array.astype(object, copy=False)
    want = numpy_dtype(spec.dtype)
    if array.dtype == want:
        return array
    if not _allowed(array.dtype, want, cast_policy):
        raise InputError(
            f"input {spec.name!r}: expected dtype {spec.dtype}, got {describe_dtype(array)} "
            f"under cast policy {cast_policy!r}{_cast_hint(array.dtype, want, cast_policy)}"
        )
    return array.astype(want)


def _check_utf8(spec: TensorSpec, array: np.ndarray) -> None:
    """Raise :class:`InputError` unless every element (str or bytes) of a string input is UTF-8 text, as ONNX and
    Triton string tensors hold: bytes that decode as UTF-8, a str without lone surrogates (``"\\udcff"``)."""
    for index, item in enumerate(array.flat):
        if item.isascii():
            continue
        try:
            item.decode() if isinstance(item, bytes) else item.encode()
        except (UnicodeDecodeError, UnicodeEncodeError) as error:
            where = f"element [{', '.join(map(str, np.unravel_index(index, array.shape)))}]" if array.ndim else "it"
            bad = error.object[error.start : error.end]
            raise InputError(
                f"input {spec.name!r}: its elements must be UTF-8 text; {where} is not ({error.reason}: {bad!r} at "
                f"position {error.start})"
            ) from None


def _allowed(got: np.dtype, want: np.dtype, cast_policy: CastPolicy) -> bool:
    """Whether ``cast_policy`` casts ``got`` to ``want`` (see the module docstring)."""
    if cast_policy == "strict" or not np.can_cast(got, want, casting=cast_policy):
        return False
    if cast_policy == "safe" and got.kind in "iu" and want.kind == "f":  # every integer of got must be a float of want
        return np.iinfo(got).bits - (got.kind == "i") <= np.finfo(want).nmant + 1
    return True


def _cast_hint(got: np.dtype, want: np.dtype, cast_policy: CastPolicy) -> str:
    """The laxer cast policy that would accept the cast, as advice; empty when none would."""
    for policy in CAST_POLICIES[CAST_POLICIES.index(cast_policy) + 1 :]:
        if _allowed(got, want, policy):  # type: ignore[arg-type]  # the policies of CAST_POLICIES
            wording = "'safe' or 'same_kind'" if policy == "safe" else repr(policy)
            return f" (set cast_policy = {wording} to allow this cast)"
    return ""


def describe_dtype(array: np.ndarray) -> str:
    """What an array holds, in words for error messages: the interface's dtype name, with the byte order when it is
    not the machine's (``"float32 in big-endian byte order (not this machine's)"``), the element types of an object
    array (``"an object array of int"``), or the kind of a numpy string array (``"a numpy str array (<U5)"``)."""
    dtype = array.dtype
    if dtype.kind == "O":
        kinds = sorted({type(item).__name__ for item in array.flat[:_OBJECT_SAMPLE]})
        if not kinds:
            return "an empty object array"
        sampled = "" if array.size <= _OBJECT_SAMPLE else f" (in its first {_OBJECT_SAMPLE} elements)"
        return f"an object array of {' and '.join(kinds)}{sampled}"
    if dtype.kind in "SU":
        return f"a numpy {'str' if dtype.kind == 'U' else 'bytes'} array ({dtype.str})"
    try:
        name = dtype_name(dtype.newbyteorder("=") if not dtype.isnative else dtype)
    except InputError:
        return str(dtype)
    if not dtype.isnative:
        order = "big-endian" if dtype.byteorder == ">" else "little-endian"
        return f"{name} in {order} byte order (not this machine's)"
    return name


#: Elements of an object array :func:`describe_dtype` looks at.
_OBJECT_SAMPLE = 1000


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if dim < 0 else str(dim) for dim in shape) + "]"
