"""Property-based checks of input validation and the field-name rule.

Signatures, names, dtypes and ranks are drawn by hypothesis; every bad input must raise the documented
:class:`InputError` naming the tensor, and every good one must pass unchanged in value. The last tests
run the same properties through a real ONNX Runtime session.
"""

from __future__ import annotations

import itertools
import keyword
import re
import string

import numpy as np
import onnx_models
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from inference_iface import DTYPE_NAMES, InputError, ModelSignature, TensorSpec, create_inference, field_names
from inference_iface.dtypes import numpy_dtype
from inference_iface.signature import field_name
from inference_iface.validation import collect_inputs, validate_inputs

NUMERIC = tuple(name for name in DTYPE_NAMES if name not in ("bytes", "bfloat16"))

tensor_names = st.text(alphabet=string.ascii_letters + string.digits + "._:/-+ ", min_size=1, max_size=12)
shapes = st.lists(st.one_of(st.just(-1), st.integers(0, 3)), max_size=3).map(tuple)


@st.composite
def signatures(draw) -> ModelSignature:
    names = draw(st.lists(tensor_names, min_size=1, max_size=4, unique=True))
    specs = [TensorSpec(name, draw(st.sampled_from(NUMERIC)), draw(shapes)) for name in names]
    return ModelSignature(inputs=specs, outputs=[])


def concrete(shape: tuple[int, ...], draw) -> tuple[int, ...]:
    return tuple(draw(st.integers(0, 3)) if dim < 0 else dim for dim in shape)


def good_inputs(signature: ModelSignature, draw) -> dict[str, np.ndarray]:
    return {
        spec.name: np.arange(int(np.prod(shape := concrete(spec.shape, draw)))).reshape(shape).astype(spec.dtype)
        for spec in signature.inputs
    }


@given(st.data())
def test_good_inputs_pass_unchanged_and_contiguous(data):
    signature = data.draw(signatures())
    inputs = good_inputs(signature, data.draw)
    checked = validate_inputs(signature, inputs)
    assert list(checked) == list(signature.input_names)
    for name, array in checked.items():
        assert array.flags.c_contiguous
        assert array.dtype == inputs[name].dtype
        np.testing.assert_array_equal(array, inputs[name])


@given(st.data(), tensor_names)
def test_unknown_name_is_named(data, extra):
    signature = data.draw(signatures())
    assume(extra not in signature.input_names)
    inputs = good_inputs(signature, data.draw) | {extra: np.zeros(1)}
    with pytest.raises(InputError, match="unknown input") as error:
        validate_inputs(signature, inputs)
    assert repr(extra) in str(error.value)


@given(st.data())
def test_missing_name_is_named(data):
    signature = data.draw(signatures())
    inputs = good_inputs(signature, data.draw)
    dropped = data.draw(st.sampled_from(signature.input_names))
    del inputs[dropped]
    with pytest.raises(InputError, match="missing input") as error:
        validate_inputs(signature, inputs)
    assert repr(dropped) in str(error.value)


@given(st.data(), st.sampled_from(NUMERIC))
def test_strict_dtype_mismatch_is_named(data, wrong):
    signature = data.draw(signatures())
    spec = data.draw(st.sampled_from(signature.inputs))
    assume(wrong != spec.dtype)
    inputs = good_inputs(signature, data.draw)
    inputs[spec.name] = inputs[spec.name].astype(wrong)
    with pytest.raises(InputError) as error:
        validate_inputs(signature, inputs)
    message = str(error.value)
    assert f"input {spec.name!r}" in message
    assert f"expected dtype {spec.dtype}, got {wrong}" in message


@given(st.data(), st.integers(0, 4))
def test_wrong_rank_is_named(data, rank):
    signature = data.draw(signatures())
    spec = data.draw(st.sampled_from(signature.inputs))
    assume(rank != spec.rank)
    inputs = good_inputs(signature, data.draw)
    inputs[spec.name] = np.zeros((1,) * rank, dtype=spec.dtype)
    with pytest.raises(InputError, match=f"expected rank {spec.rank}.*got rank {rank}") as error:
        validate_inputs(signature, inputs)
    assert f"input {spec.name!r}" in str(error.value)


@given(st.data())
def test_wrong_fixed_dimension_is_named(data):
    signature = data.draw(signatures())
    fixed = [(spec, axis) for spec in signature.inputs for axis, dim in enumerate(spec.shape) if dim >= 0]
    assume(fixed)
    spec, axis = data.draw(st.sampled_from(fixed))
    inputs = good_inputs(signature, data.draw)
    shape = list(inputs[spec.name].shape)
    shape[axis] = spec.shape[axis] + data.draw(st.integers(1, 3))
    inputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
    with pytest.raises(InputError, match=f"dimension {axis} must be {spec.shape[axis]}") as error:
        validate_inputs(signature, inputs)
    assert f"input {spec.name!r}" in str(error.value)


@given(st.data(), st.sampled_from([[1.0, 2.0], 3, "text", None]))
def test_non_array_is_named(data, value):
    signature = data.draw(signatures())
    spec = data.draw(st.sampled_from(signature.inputs))
    inputs = good_inputs(signature, data.draw) | {spec.name: value}
    with pytest.raises(InputError, match=re.escape(f"input {spec.name!r}: expected a numpy array of {spec.dtype}")):
        validate_inputs(signature, inputs)


#: the casts numpy calls "safe" that round large values (a 64-bit integer has more digits than float64's 53 bits)
ROUNDING = {("int64", "float64"), ("uint64", "float64")}


@pytest.mark.parametrize("policy", ["strict", "safe", "same_kind"])
def test_cast_policy_accepts_numpys_rule_less_the_casts_that_round(policy):
    """Every pair of numeric dtypes (the table is small enough to take whole, the rounding pairs included)."""
    for source, target in itertools.product(NUMERIC, NUMERIC):
        signature = ModelSignature(inputs=[TensorSpec("x", target, [-1])], outputs=[])
        array = np.array([0, 1, 1], dtype=source)
        allowed = source == target or (policy != "strict" and np.can_cast(source, target, casting=policy))
        allowed &= not (policy == "safe" and (source, target) in ROUNDING)
        if allowed:
            checked = validate_inputs(signature, {"x": array}, policy)["x"]
            assert checked.dtype == numpy_dtype(target), (source, target)
            np.testing.assert_array_equal(checked, array.astype(target))
        else:
            with pytest.raises(InputError, match=f"input 'x': expected dtype {target}, got {source}"):
                validate_inputs(signature, {"x": array}, policy)


def test_a_safe_cast_never_rounds_a_value():
    """int64 → float64 is numpy-"safe" but rounds 2**53 + 1: refused under "safe", taken under "same_kind"."""
    signature = ModelSignature(inputs=[TensorSpec("x", "float64", [-1])], outputs=[])
    big = np.array([2**53 + 1], dtype=np.int64)
    with pytest.raises(InputError, match="set cast_policy = 'same_kind' to allow this cast"):
        validate_inputs(signature, {"x": big}, "safe")
    assert validate_inputs(signature, {"x": big}, "same_kind")["x"][0] == 2.0**53
    assert validate_inputs(signature, {"x": np.array([2**31 - 1], np.int32)}, "safe")["x"][0] == 2**31 - 1


def test_bytes_tensor_takes_str_bytes_and_object_arrays_of_them_only():
    signature = ModelSignature(inputs=[TensorSpec("text", "bytes", [-1])], outputs=[])
    for array in (np.array(["a", "é"]), np.array([b"a", b"b"]), np.array(["a", b"b"], dtype=object)):
        assert validate_inputs(signature, {"text": array})["text"].dtype == object
    for array in (np.zeros(2), np.array([None, 1, 1.5], dtype=object), np.array(["a", 2], dtype=object)):
        with pytest.raises(InputError, match="input 'text': expected bytes"):
            validate_inputs(signature, {"text": array})


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array(["ok", b"ab\xff"], dtype=object), r"invalid start byte: b'\\xff' at position 2"),
        (np.array(["ok", b"\xc3"], dtype=object), r"unexpected end of data: b'\\xc3' at position 0"),
        (np.array([b"ok", "x\udcff"], dtype=object), r"surrogates not allowed: '\\udcff' at position 1"),
        (np.array(["ok", "x\udcff"]), r"surrogates not allowed: '\\udcff' at position 1"),
        (np.array([b"ok", b"ab\xff"]), r"invalid start byte: b'\\xff' at position 2"),
    ],
)
def test_bytes_tensor_elements_must_be_utf8_text(array, reason):
    """Strings cross every backend as UTF-8 (ONNX strings, Triton BYTES): an element that is not is refused here,
    naming the input and the element, before any backend sees it (ONNX Runtime and the Triton client would raise
    their own errors, naming neither)."""
    signature = ModelSignature(inputs=[TensorSpec("text", "bytes", [2])], outputs=[])
    with pytest.raises(
        InputError, match=rf"^input 'text': its elements must be UTF-8 text; element \[1\] is not \({reason}\)$"
    ):
        validate_inputs(signature, {"text": array})
    good = np.array(["é", "é".encode()], dtype=object)
    assert validate_inputs(signature, {"text": good})["text"] is good  # UTF-8 text passes as it is


def test_a_masked_array_is_refused():
    signature = ModelSignature(inputs=[TensorSpec("x", "float32", [-1])], outputs=[])
    masked = np.ma.masked_array(np.zeros(3, np.float32), mask=[False, True, False])
    with pytest.raises(InputError, match="input 'x': a masked array"):
        validate_inputs(signature, {"x": masked})


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint16"])
def test_non_native_byte_order_is_named_and_converted_only_when_the_policy_allows(dtype):
    signature = ModelSignature(inputs=[TensorSpec("x", dtype, [-1])], outputs=[])
    swapped = np.dtype(dtype).newbyteorder("S")
    order = "big-endian" if swapped.byteorder == ">" else "little-endian"
    array = np.arange(4).astype(swapped)
    message = f"input 'x': expected dtype {dtype}, got {dtype} in {order} byte order (not this machine's)"
    with pytest.raises(InputError, match=re.escape(message)) as error:
        validate_inputs(signature, {"x": array})
    assert "set cast_policy = 'safe' or 'same_kind'" in str(error.value)
    for policy in ("safe", "same_kind"):
        checked = validate_inputs(signature, {"x": array}, policy)["x"]
        assert checked.dtype == np.dtype(dtype)
        assert checked.dtype.isnative
        np.testing.assert_array_equal(checked, np.arange(4))


@pytest.mark.parametrize(
    ("array", "described"),
    [
        (np.array([1, 2], dtype=object), "an object array of int"),
        (np.array([b"a", 1.5, "c"], dtype=object), "an object array of bytes and float and str"),
        (np.array([], dtype=object), "an empty object array"),
        (np.array(["ab", "c"]), "a numpy str array (<U2)"),
        (np.array([b"ab"]), "a numpy bytes array (|S2)"),
    ],
)
def test_object_and_string_arrays_for_a_numeric_tensor_say_what_they_hold(array, described):
    signature = ModelSignature(inputs=[TensorSpec("x", "float32", [-1])], outputs=[])
    for policy in ("strict", "safe", "same_kind"):
        with pytest.raises(InputError) as error:
            validate_inputs(signature, {"x": array}, policy)
        message = str(error.value)
        assert f"input 'x': expected dtype float32, got {described} under cast policy {policy!r}" in message
        assert "got bytes" not in message
        assert "cast_policy =" not in message  # no policy would allow it, so none is advised


def test_bytes_tensor_names_a_swapped_numeric_array():
    signature = ModelSignature(inputs=[TensorSpec("text", "bytes", [-1])], outputs=[])
    array = np.zeros(2, dtype=np.dtype("float64").newbyteorder("S"))
    with pytest.raises(InputError, match=r"expected bytes .*got float64 in (big|little)-endian byte order"):
        validate_inputs(signature, {"text": array})


def test_real_session_rejects_and_converts_a_swapped_array(model_dir):
    path = str(onnx_models.identity_model(model_dir, "float32"))
    array = np.arange(6, dtype=np.dtype("float32").newbyteorder("S")).reshape(3, 2)
    strict = {"backend": "onnxruntime", "model_path": path, "device": "cpu"}
    with create_inference(strict) as iface, pytest.raises(InputError, match=r"float32 in (big|little)-endian byte"):
        iface.infer({"in.0": array})
    safe = {"backend": "onnxruntime", "model_path": path, "device": "cpu", "cast_policy": "safe"}
    with create_inference(safe) as iface:
        out = iface.infer({"in.0": array})
    assert out.out_0.dtype == np.float32
    assert out.out_0.dtype.isnative
    np.testing.assert_array_equal(out.out_0, np.arange(6).reshape(3, 2))


def test_non_contiguous_arrays_are_copied_without_changing_values():
    signature = ModelSignature(inputs=[TensorSpec("x", "float32", [-1, 3])], outputs=[])
    base = np.arange(36, dtype=np.float32).reshape(6, 6)
    for view in (base[:, ::2], base[::2, :3], np.asfortranarray(base[:, :3])):
        checked = validate_inputs(signature, {"x": view})["x"]
        assert checked.flags.c_contiguous
        np.testing.assert_array_equal(checked, view)
    cast = validate_inputs(signature, {"x": np.arange(12, dtype=np.int16).reshape(3, 4).T}, "safe")["x"]
    assert cast.flags.c_contiguous  # a cast keeps the layout of what it casts
    np.testing.assert_array_equal(cast, np.arange(12).reshape(3, 4).T)


# --- the field-name rule -------------------------------------------------------------------------------------------

any_names = st.lists(st.text(max_size=8), min_size=1, max_size=6, unique=True)


@given(any_names)
def test_field_names_are_unique_identifiers_namedtuple_accepts(names):
    fields = field_names(names)
    assert len(fields) == len(names)
    assert len(set(fields)) == len(fields)
    for field in fields:
        assert field.isidentifier()
        assert not keyword.iskeyword(field)
        assert not field.startswith("_")


@given(any_names)
def test_names_that_are_their_own_field_name_keep_it(names):
    for name, field in zip(names, field_names(names), strict=True):
        if name == field_name(name):
            assert field == name
        else:
            assert field.startswith(field_name(name))


@pytest.mark.parametrize(
    ("names", "fields"),
    [
        (["input.1", "y:0"], ("input_1", "y_0")),
        (["0abc", "_x", "lambda", ""], ("t_0abc", "t__x", "lambda_", "t_")),
        (["a.b", "a:b"], ("a_b", "a_b_2")),
        (["a.b", "a_b"], ("a_b_2", "a_b")),
        (["a.b", "a:b", "a_b_2"], ("a_b", "a_b_3", "a_b_2")),
        (["π", "x y"], ("t__", "x_y")),
    ],
)
def test_field_name_examples(names, fields):
    assert field_names(names) == fields


@given(any_names)
@example(["a.b", "a:b", "a_b_2"])
@example(["a.b", "a_b"])
@example(["_x", "t__x", "lambda"])
def test_keywords_and_namedtuple_bind_to_the_right_tensor(names):
    signature = ModelSignature(inputs=[TensorSpec(name, "int64", [1]) for name in names], outputs=[])
    values = {name: np.array([index]) for index, name in enumerate(names)}
    by_field = dict(zip(field_names(names), values.values(), strict=True))
    assert collect_inputs(signature, None, by_field) == values
    assert collect_inputs(signature, signature.input_type(**by_field), {}) == values
    assert collect_inputs(signature, values, {}) == values


def test_inputs_given_twice_ways_are_rejected():
    signature = ModelSignature(inputs=[TensorSpec("x", "int64", [1])], outputs=[])
    with pytest.raises(InputError, match="not both"):
        collect_inputs(signature, {"x": np.zeros(1)}, {"x": np.zeros(1)})
    dotted = ModelSignature(inputs=[TensorSpec("input.1", "int64", [1])], outputs=[])
    for keywords in ({"input_1": np.zeros(1), "input.1": np.ones(1)}, {"input.1": np.ones(1), "input_1": np.zeros(1)}):
        with pytest.raises(InputError, match=r"input 'input\.1' given twice"):
            collect_inputs(dotted, None, keywords)
    with pytest.raises(InputError, match="got list"):
        collect_inputs(signature, [np.zeros(1)], {})


# --- the same properties through a real ONNX Runtime session --------------------------------------------------------


@pytest.fixture(scope="session")
def identity_interfaces(model_dir):
    interfaces = {
        dtype: create_inference(
            {"backend": "onnxruntime", "model_path": str(onnx_models.identity_model(model_dir, dtype)), "device": "cpu"}
        )
        for dtype in NUMERIC
    }
    yield interfaces
    for iface in interfaces.values():
        iface.close()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NUMERIC), st.sampled_from(NUMERIC), st.integers(0, 4), st.integers(0, 3))
@example(model_dtype="float32", array_dtype="float32", rank=2, rows=3)  # the accepted case, whatever the draw
@example(model_dtype="int8", array_dtype="int8", rank=2, rows=0)
def test_real_session_accepts_only_matching_inputs(identity_interfaces, model_dtype, array_dtype, rank, rows):
    iface = identity_interfaces[model_dtype]
    shape = (rows, 2, 1, 1)[:rank]
    array = np.arange(int(np.prod(shape))).reshape(shape).astype(array_dtype)
    if model_dtype == array_dtype and rank == 2:
        out = iface.infer({"in.0": array})
        assert out.out_0.dtype == array.dtype
        np.testing.assert_array_equal(out.out_0, array)
    else:
        with pytest.raises(InputError, match=r"input 'in\.0'"):
            iface.infer({"in.0": array})
