"""TensorSpec / ModelSignature value types, and signatures read from real ONNX Runtime sessions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_models
import pytest

from inference_iface import ModelError, ModelSignature, TensorSpec, create_inference
from inference_iface.signature import named_tuple_type


def open_model(path: Path):
    return create_inference({"backend": "onnxruntime", "model_path": str(path), "device": "cpu"})


def test_tensor_spec_normalises_dynamic_dims_and_reprs_readably():
    spec = TensorSpec("input.1", "float32", [None, 3, -7])
    assert spec.shape == (-1, 3, -1)
    assert spec.rank == 3
    assert repr(spec) == "TensorSpec('input.1', float32, [?, 3, ?])"


def test_tensor_spec_rejects_unknown_dtype_naming_the_tensor():
    with pytest.raises(ModelError, match=r"tensor 'x'.*'complex64'"):
        TensorSpec("x", "complex64", [1])


@pytest.mark.parametrize("shape", ["ab", b"ab", 5, None, [1.5], [True], [2, "3"]])
def test_tensor_spec_rejects_a_shape_that_is_not_dimensions_naming_the_tensor(shape):
    """Not a TypeError from a comparison or an iteration, nor a float cut to an integer ([1.5] → [1])."""
    with pytest.raises(
        ModelError, match=rf"^tensor 'x': the shape must be a sequence of dimensions .*got {re.escape(repr(shape))}$"
    ):
        TensorSpec("x", "float32", shape)
    assert TensorSpec("x", "float32", (np.int64(2), None, -1)).shape == (2, -1, -1)


def test_signature_rejects_repeated_names():
    spec = TensorSpec("x", "float32", [1])
    with pytest.raises(ModelError, match="repeated: x"):
        ModelSignature(inputs=[spec, spec], outputs=[])


def test_signature_lookup_and_named_tuple_types():
    signature = ModelSignature(
        inputs=[TensorSpec("input.1", "float32", [-1, 3]), TensorSpec("y:0", "int64", [2])],
        outputs=[TensorSpec("sum", "float32", [-1])],
    )
    assert signature.input_names == ("input.1", "y:0")
    assert signature.output_names == ("sum",)
    assert signature.input("y:0").dtype == "int64"
    with pytest.raises(KeyError, match="no output called 'nope'"):
        signature.output("nope")
    assert signature.input_type._fields == ("input_1", "y_0")
    assert signature.input_type.tensor_names == ("input.1", "y:0")
    assert signature.output_type is named_tuple_type("Outputs", ("sum",))
    assert repr(signature) == (
        "ModelSignature(inputs=(TensorSpec('input.1', float32, [?, 3]), TensorSpec('y:0', int64, [2])), "
        "outputs=(TensorSpec('sum', float32, [?]),))"
    )  # tuples as Python writes them: one element with its comma
    assert repr(ModelSignature(inputs=[], outputs=[])) == "ModelSignature(inputs=(), outputs=())"


def test_signature_from_session_two_in_two_out(two_in_two_out_path):
    with open_model(two_in_two_out_path) as iface:
        assert iface.signature == ModelSignature(
            inputs=[TensorSpec("input.1", "float32", [-1, 3]), TensorSpec("y:0", "float32", [-1, 3])],
            outputs=[TensorSpec("sum", "float32", [-1, 3]), TensorSpec("prod:0", "float32", [-1, 3])],
        )


def test_signature_from_session_fixed_dims(model_dir):
    with open_model(onnx_models.fixed_shape_model(model_dir)) as iface:
        assert [spec.shape for spec in iface.signature.inputs] == [(2, 4), (4,)]
        assert [spec.shape for spec in iface.signature.outputs] == [(2, 4), (2,)]


def test_signature_from_session_mixed_dtypes(model_dir):
    with open_model(onnx_models.mixed_dtypes_model(model_dir)) as iface:
        assert [(spec.name, spec.dtype) for spec in iface.signature.inputs] == [
            ("hits/x", "float32"),
            ("ids", "int64"),
            ("mask", "bool"),
        ]
        assert [spec.dtype for spec in iface.signature.outputs] == ["float64", "int64", "bool"]


@pytest.mark.parametrize("dtype", sorted(onnx_models.ONNX_TYPES))
def test_signature_dtype_names_from_session(model_dir, dtype):
    with open_model(onnx_models.identity_model(model_dir, dtype)) as iface:
        assert iface.signature.inputs == (TensorSpec("in.0", dtype, [-1, 2]),)
        assert iface.signature.outputs == (TensorSpec("out:0", dtype, [-1, 2]),)


def test_output_named_tuple_fields_follow_the_rule(model_dir):
    with open_model(onnx_models.colliding_names_model(model_dir)) as iface:
        assert iface.signature.input_type._fields == ("a_b", "a_b_3", "a_b_2")
        out = iface.infer({name: np.zeros(1, np.float32) for name in iface.signature.input_names})
        assert out._fields == ("a_b_1", "a_b_2", "a_b_2_3")
        assert out.tensor_names == ("a.b+1", "a:b*2", "a_b_2-3")
