"""The ONNX Runtime backend against raw ``onnxruntime.InferenceSession.run`` on real model files."""

from __future__ import annotations

import copy
import functools
import pickle
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx_models
import onnxruntime as ort
import pytest

from backends.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeInference, aligned
from backends.ort_providers import cuda_unavailable_reason
from inference_iface import (
    BackendUnavailableError,
    ConfigError,
    InputError,
    ModelError,
    create_inference,
    numpy_dtype,
)

RNG = np.random.default_rng(20240611)


def open_model(path: Path, **options) -> OnnxRuntimeInference:
    return create_inference({"backend": "onnxruntime", "model_path": str(path), "device": "cpu", **options})


@functools.cache
def raw_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def raw_run(path: Path, inputs: dict[str, np.ndarray], output_names=None) -> list[np.ndarray]:
    """The reference: plain ``InferenceSession.run`` on the same file, with the inputs 64-byte aligned as the backend
    hands them over (a vector kernel may sum in another order from another alignment, on some CPUs)."""
    return raw_session(path).run(output_names, {name: aligned(array) for name, array in inputs.items()})


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bits (NaNs and signed zeros included)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if got.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Values covering the dtype's range: extremes for integers, NaN/inf/-0 for floats, Unicode for strings."""
    size = int(np.prod(shape))
    if dtype == "bytes":
        words = ["", "a", "é", "hits/x", "ünïcødé ✓", "long " * 20]
        return np.array([words[i % len(words)] for i in range(size)], dtype=object).reshape(shape)
    if dtype == "bool":
        return RNG.integers(0, 2, size).astype(bool).reshape(shape)
    numpy = numpy_dtype(dtype)
    if numpy.kind in "iu":
        info = np.iinfo(numpy)
        values = RNG.integers(info.min, info.max, size, dtype=numpy, endpoint=True)
        values[:2] = (info.min, info.max)[: min(2, size)]
        return values.reshape(shape)
    values = RNG.standard_normal(size).astype(np.float32).astype(numpy)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32).astype(numpy)
    values[: len(specials)] = specials[:size]
    return values.reshape(shape)


# --- round trips ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(onnx_models.ONNX_TYPES))
@pytest.mark.parametrize("rows", [0, 1, 7])
def test_every_dtype_round_trips_bit_identical(model_dir, dtype, rows):
    path = onnx_models.identity_model(model_dir, dtype)
    array = sample(dtype, (rows, 2))
    with open_model(path) as iface:
        out = iface.infer({"in.0": array}).out_0
    assert_identical(out, array)  # Identity: the output is the input
    if dtype != "bfloat16":  # ORT's numpy bridge cannot take bfloat16; the backend goes through OrtValues
        assert_identical(out, raw_run(path, {"in.0": array})[0])


def test_bytes_elements_are_fed_as_utf8_text(model_dir):
    with open_model(onnx_models.identity_model(model_dir, "bytes")) as iface:
        out = iface.infer({"in.0": np.array([[b"a", "b"], ["\xe9".encode(), b""]], dtype=object)}).out_0
        assert out.tolist() == [["a", "b"], ["é", ""]]
        assert iface.infer({"in.0": np.array([[b"x", b"yz"]])}).out_0.tolist() == [["x", "yz"]]
        for text in (b"\xff", "\udcff"):  # bytes that do not decode, a str that does not encode (a lone surrogate)
            with pytest.raises(InputError, match=r"input 'in\.0': its elements must be UTF-8 text; element \[0, 0\]"):
                iface.infer({"in.0": np.array([[text, b""]], dtype=object)})


def test_two_in_two_out_matches_raw_session(two_in_two_out_path):
    inputs = {"input.1": sample("float32", (5, 3)), "y:0": sample("float32", (5, 3))}
    want = raw_run(two_in_two_out_path, inputs)
    with open_model(two_in_two_out_path) as iface:
        out = iface.infer(inputs)
    assert out._fields == ("sum", "prod_0")
    assert out.tensor_names == ("sum", "prod:0")
    for got, expected in zip(out, want, strict=True):
        assert_identical(got, expected)


def test_mixed_dtypes_and_slash_names_match_raw_session(model_dir):
    path = onnx_models.mixed_dtypes_model(model_dir)
    inputs = {"hits/x": sample("float32", (4, 3)), "ids": sample("int64", (6,)), "mask": sample("bool", (6,))}
    with open_model(path) as iface:
        out = iface.infer(inputs)
    for got, expected in zip(out, raw_run(path, inputs), strict=True):
        assert_identical(got, expected)
    assert out.ids_1.dtype == np.int64
    assert out.not_mask.dtype == bool


def test_fixed_dims_run_and_are_checked(model_dir):
    path = onnx_models.fixed_shape_model(model_dir)
    inputs = {"x": sample("float32", (2, 4)), "scale": sample("float32", (4,))}
    with open_model(path) as iface:
        out = iface.infer(inputs)
        for got, expected in zip(out, raw_run(path, inputs), strict=True):
            assert_identical(got, expected)
        with pytest.raises(InputError, match=r"input 'x': dimension 0 must be 2 .*got 3"):
            iface.infer(x=sample("float32", (3, 4)), scale=inputs["scale"])


@pytest.mark.parametrize("rows", [1, 1000])
def test_mlp_matches_raw_session(model_dir, rows):
    path = onnx_models.medium_mlp(model_dir)
    features = RNG.standard_normal((rows, 12)).astype(np.float32)
    with open_model(path, intra_op_threads=1) as iface:
        assert_identical(iface.infer(features=features).embedding, raw_run(path, {"features": features})[0])


def test_mapping_keywords_and_named_tuple_give_the_same(two_in_two_out_path):
    x, y = sample("float32", (3, 3)), sample("float32", (3, 3))
    with open_model(two_in_two_out_path) as iface:
        results = [
            iface.infer({"input.1": x, "y:0": y}),
            iface.infer(input_1=x, y_0=y),
            iface.infer(iface.signature.input_type(input_1=x, y_0=y)),
            iface.infer(**{"input.1": x, "y:0": y}),
        ]
    for result in results[1:]:
        for got, want in zip(result, results[0], strict=True):
            assert_identical(got, want)


def test_output_subset_in_requested_order(two_in_two_out_path):
    inputs = {"input.1": sample("float32", (2, 3)), "y:0": sample("float32", (2, 3))}
    sum_, prod = raw_run(two_in_two_out_path, inputs)
    with open_model(two_in_two_out_path) as iface:
        out = iface.infer(inputs, outputs=["prod:0"])
        assert out._fields == ("prod_0",)
        assert_identical(out.prod_0, prod)
        both = iface.infer(inputs, outputs=("prod:0", "sum"))
        assert both.tensor_names == ("prod:0", "sum")
        assert_identical(both[1], sum_)
        with pytest.raises(InputError, match=r"unknown output\(s\) 'nope'.*'sum', 'prod:0'"):
            iface.infer(inputs, outputs=["nope"])
        with pytest.raises(InputError, match=r"output\(s\) 'sum' requested more than once"):
            iface.infer(inputs, outputs=["sum", "prod:0", "sum"])
        with pytest.raises(InputError, match=r"outputs must be output names .*, got int"):
            iface.infer(inputs, outputs=3)  # type: ignore[arg-type]
        assert iface.infer(inputs, outputs="sum")._fields == ("sum",)  # one name, not its letters
        with pytest.raises(InputError, match=r"unknown output\(s\) \(none requested\)"):
            iface.infer(inputs, outputs=[])


@pytest.mark.parametrize(
    ("outputs", "got"),
    [([["sum"], ["sum"]], r"\['sum'\], \['sum'\]"), (b"sum", "bytes"), ([b"sum"], "b'sum'"), (["sum", 0], "0")],
)
def test_outputs_that_are_not_names_are_input_errors(two_in_two_out_path, outputs, got):
    """Not a TypeError from hashing a list, nor the bytes of b"sum" taken for names (115, 117, 109)."""
    inputs = {"input.1": sample("float32", (2, 3)), "y:0": sample("float32", (2, 3))}
    with open_model(two_in_two_out_path) as iface:
        with pytest.raises(InputError, match=rf"^outputs must be output names \(a list of str\), got {got}$"):
            iface.infer(inputs, outputs=outputs)
        with pytest.raises(InputError, match=rf"^outputs must be output names \(a list of str\), got {got}$"):
            iface.requested_outputs(outputs)


def test_non_contiguous_inputs_give_contiguous_results_and_stay_untouched(two_in_two_out_path):
    base = sample("float32", (8, 6))
    before = base.copy()
    x, y = base[::2, ::2], np.asfortranarray(base[1::2, 1::2])
    assert not x.flags.c_contiguous
    assert not y.flags.c_contiguous
    want = raw_run(two_in_two_out_path, {"input.1": np.ascontiguousarray(x), "y:0": np.ascontiguousarray(y)})
    with open_model(two_in_two_out_path) as iface:
        out = iface.infer({"input.1": x, "y:0": y})
    for got, expected in zip(out, want, strict=True):
        assert_identical(got, expected)
    assert_identical(base, before)


# --- cast policies --------------------------------------------------------------------------------------------------


def test_strict_policy_rejects_any_other_dtype(two_in_two_out_path):
    x = sample("float32", (2, 3))
    with open_model(two_in_two_out_path) as iface, pytest.raises(InputError, match="cast_policy = 'safe'"):
        iface.infer({"input.1": x.astype(np.float16), "y:0": x})


def test_safe_policy_allows_lossless_casts_only(two_in_two_out_path):
    x = sample("float32", (2, 3)).astype(np.float16)
    y = np.arange(6, dtype=np.int16).reshape(2, 3)
    want = raw_run(two_in_two_out_path, {"input.1": x.astype(np.float32), "y:0": y.astype(np.float32)})
    with open_model(two_in_two_out_path, cast_policy="safe") as iface:
        for got, expected in zip(iface.infer({"input.1": x, "y:0": y}), want, strict=True):
            assert_identical(got, expected)
        with pytest.raises(InputError, match="expected dtype float32, got float64 under cast policy 'safe'"):
            iface.infer({"input.1": x.astype(np.float64), "y:0": y})


def test_same_kind_policy_allows_narrowing_within_a_kind(model_dir, two_in_two_out_path):
    x = sample("float64", (2, 3))
    want = raw_run(two_in_two_out_path, {"input.1": x.astype(np.float32), "y:0": x.astype(np.float32)})
    with open_model(two_in_two_out_path, cast_policy="same_kind") as iface:
        for got, expected in zip(iface.infer({"input.1": x, "y:0": x}), want, strict=True):
            assert_identical(got, expected)
    int_model = onnx_models.identity_model(model_dir, "int64")
    with open_model(int_model, cast_policy="same_kind") as iface, pytest.raises(InputError, match="got float64"):
        iface.infer({"in.0": x[:, :2]})


# --- threads --------------------------------------------------------------------------------------------------------


def test_many_threads_on_one_session_get_their_own_results(model_dir):
    """The reference runs on one intra-op thread and the interface on one per core: the kernels may split the work
    differently, so the results agree to float32 rounding (another batch's result would be off by order 1)."""
    path = onnx_models.small_mlp(model_dir)
    batches = [RNG.standard_normal((1 + index % 17, 3)).astype(np.float32) for index in range(64)]
    expected = [raw_run(path, {"features": batch})[0] for batch in batches]
    start = threading.Barrier(8)
    with open_model(path) as iface:

        def worker(offset: int) -> int:
            start.wait()  # all eight threads call into the session at once
            for repeat in range(25):
                index = (offset + repeat * 8) % len(batches)
                got = iface.infer(features=batches[index]).embedding
                assert got.dtype == expected[index].dtype
                np.testing.assert_allclose(got, expected[index], rtol=1e-5, atol=1e-6)  # the shape too
            return repeat + 1

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert sum(pool.map(worker, range(8))) == 8 * 25


# --- errors ---------------------------------------------------------------------------------------------------------


def test_missing_model_file_is_a_model_error_naming_it(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ModelError, match=re.escape(repr(str(path))) + " does not exist"):
        open_model(path)
    with pytest.raises(ModelError, match=re.escape(repr(str(tmp_path))) + " is not a file"):
        open_model(tmp_path)
    too_long = tmp_path / ("a" * 5000)  # Path.is_file raises for this one (ENAMETOOLONG)
    with pytest.raises(ModelError, match=re.escape(repr(str(too_long))) + r" cannot be opened \(File name too long\)"):
        open_model(too_long)


def test_an_interface_is_not_pickled_but_says_how_to_get_one(two_in_two_out_path):
    with open_model(two_in_two_out_path) as iface:
        for copy_it in (pickle.dumps, copy.deepcopy, copy.copy):
            with pytest.raises(TypeError, match="cannot be pickled or copied: create one in each process"):
                copy_it(iface)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_path": None}, r"expected a string, got None @ \$\.model_path"),
        ({"intra_op_threads": 2**40}, r"'intra_op_threads' must be <= 4096"),
        ({"backend": ["onnxruntime"]}, r"name the backend as a string, got \['onnxruntime'\]"),
    ],
)
def test_options_of_the_wrong_kind_are_config_errors(two_in_two_out_path, options, message):
    with pytest.raises(ConfigError, match=message):
        create_inference({"backend": "onnxruntime", "model_path": str(two_in_two_out_path)} | options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"intra_op_threads": "4"}, r"'intra_op_threads' must be an integer, got '4'"),
        ({"intra_op_threads": 2.5}, r"'intra_op_threads' must be an integer, got 2\.5"),
        ({"intra_op_threads": True}, r"'intra_op_threads' must be an integer, got True"),
        ({"inter_op_threads": None}, r"'inter_op_threads' must be an integer, got None"),
        ({"cuda_device_id": 0.5}, r"'cuda_device_id' must be an integer, got 0\.5"),
        ({"memory_pattern": "no"}, r"'memory_pattern' must be true or false, got 'no'"),
        ({"allow_spinning": "no"}, r"'allow_spinning' must be true or false, got 'no'"),
        ({"deterministic_compute": None}, r"'deterministic_compute' must be true or false, got None"),
        ({"model_path": None}, r"'model_path' must be a string, got None"),
    ],
)
def test_a_config_built_in_python_refuses_values_of_the_wrong_kind_as_a_mapping_does(
    two_in_two_out_path, options, message
):
    """Each is a ConfigError naming the key, as from a mapping (and a TypeError, as attrs' validators raise): not
    a bare TypeError from a comparison or from ONNX Runtime, nor accepted (``"no"`` as true, ``None`` as 'None')."""
    with pytest.raises(ConfigError, match=f"^{message}$") as direct:
        OnnxRuntimeConfig(**{"model_path": str(two_in_two_out_path), **options})
    assert isinstance(direct.value, TypeError)
    (key,) = options
    with pytest.raises(ConfigError, match=rf"@ \$\.{key}$"):
        create_inference({"backend": "onnxruntime", "model_path": str(two_in_two_out_path)} | options)


def test_a_model_path_may_be_a_path_object(two_in_two_out_path):
    config = OnnxRuntimeConfig(model_path=two_in_two_out_path, device="cpu")
    assert config.model_path == str(two_in_two_out_path)
    with OnnxRuntimeInference(config) as iface:
        assert iface.signature.input_names == ("input.1", "y:0")


def test_corrupt_model_file_is_a_model_error_naming_it(tmp_path):
    path = onnx_models.corrupt_model(tmp_path)
    with pytest.raises(ModelError, match=re.escape(repr(str(path))) + " cannot be loaded"):
        open_model(path)


def test_runtime_failure_is_a_model_error(two_in_two_out_path):
    with open_model(two_in_two_out_path) as iface, pytest.raises(ModelError, match="the model failed"):
        iface.infer({"input.1": sample("float32", (2, 3)), "y:0": sample("float32", (5, 3))})


def test_tensor_type_without_an_interface_dtype_is_a_model_error(model_dir):
    with pytest.raises(ModelError, match=r"tensor 'x8' has ONNX type tensor\(float8e4m3fn\)"):
        open_model(onnx_models.float8_input_model(model_dir))


def test_closed_interface_refuses_calls(two_in_two_out_path):
    iface = open_model(two_in_two_out_path)
    iface.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        iface.infer({"input.1": sample("float32", (1, 3)), "y:0": sample("float32", (1, 3))})


def test_missing_model_path_and_bad_options_are_config_errors(two_in_two_out_path):
    with pytest.raises(ConfigError, match="'model_path' is not set"):
        create_inference({"backend": "onnxruntime"})
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        create_inference(
            {"backend": "onnxruntime", "model_path": str(two_in_two_out_path), "graph_optimization_level": "max"}
        )
    with pytest.raises(ConfigError, match="intra_op_threads"):
        create_inference({"backend": "onnxruntime", "model_path": str(two_in_two_out_path), "intra_op_threads": -1})


# --- devices and providers ------------------------------------------------------------------------------------------


def test_device_cuda_is_an_error_where_cuda_cannot_load(two_in_two_out_path):
    reason = cuda_unavailable_reason()
    if reason is None:  # a machine with a working GPU stack: the session must really use CUDA
        with open_model(two_in_two_out_path, device="cuda") as iface:
            assert iface.providers[0] == "CUDAExecutionProvider"
        return
    with pytest.raises(BackendUnavailableError, match=re.escape(f"device 'cuda' was requested but {reason}")):
        open_model(two_in_two_out_path, device="cuda")


def test_device_auto_prints_no_cuda_errors(two_in_two_out_path, capfd):
    x = sample("float32", (2, 3))
    capfd.readouterr()
    with open_model(two_in_two_out_path, device="auto") as iface:
        iface.infer({"input.1": x, "y:0": x})
        providers = iface.providers
    captured = capfd.readouterr()
    assert "CUDA" not in captured.err
    assert "onnxruntime" not in captured.err
    assert providers[-1] == "CPUExecutionProvider"
    if cuda_unavailable_reason() is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        # the capture does see ORT's log: asking ORT for CUDA directly here prints the error we avoid
        ort.InferenceSession(str(two_in_two_out_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert "CUDA" in capfd.readouterr().err


def test_describe_names_backend_model_and_providers(two_in_two_out_path):
    config = OnnxRuntimeConfig(model_path=str(two_in_two_out_path), device="cpu", intra_op_threads=3)
    with OnnxRuntimeInference(config) as iface:
        text = iface.describe()
        assert text.startswith(f"onnxruntime {ort.__version__}")
        assert str(two_in_two_out_path) in text
        assert "providers=CPUExecutionProvider" in text
        assert "intra_op_threads=3" in text
        assert text in repr(iface)
        assert iface._session.get_session_options().intra_op_num_threads == 3  # what it names is what the session has


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ],
)
def test_every_optimisation_level_reaches_the_session_and_gives_the_same_result(model_dir, level, expected):
    path = onnx_models.medium_mlp(model_dir)
    features = RNG.standard_normal((64, 12)).astype(np.float32)
    with open_model(path, graph_optimization_level=level, log_severity="error", intra_op_threads=1) as iface:
        assert iface._session.get_session_options().graph_optimization_level == expected
        np.testing.assert_allclose(
            iface.infer(features=features).embedding, raw_run(path, {"features": features})[0], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("memory_pattern", [True, False])
def test_memory_pattern_reaches_the_session_and_changing_shapes_give_raw_results(model_dir, memory_pattern):
    path = onnx_models.medium_mlp(model_dir)
    with open_model(path, memory_pattern=memory_pattern, intra_op_threads=1) as iface:
        assert iface._session.get_session_options().enable_mem_pattern is memory_pattern
        for rows in (64, 7, 300, 64):  # a new shape on every call but the last
            features = RNG.standard_normal((rows, 12)).astype(np.float32)
            np.testing.assert_allclose(
                iface.infer(features=features).embedding, raw_run(path, {"features": features})[0], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_compute_reaches_the_session(two_in_two_out_path, deterministic):
    with open_model(two_in_two_out_path, deterministic_compute=deterministic) as iface:
        assert iface._session.get_session_options().use_deterministic_compute is deterministic


@pytest.mark.parametrize("allow_spinning", [True, False])
def test_thread_spinning_setting_reaches_the_session(model_dir, allow_spinning):
    path = onnx_models.medium_mlp(model_dir)
    with open_model(path, allow_spinning=allow_spinning) as iface:
        options = iface._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if allow_spinning else "0")
        features = RNG.standard_normal((32, 12)).astype(np.float32)
        np.testing.assert_allclose(
            iface.infer(features=features).embedding, raw_run(path, {"features": features})[0], rtol=1e-5, atol=1e-6
        )


def test_parallel_execution_mode_runs(two_in_two_out_path):
    x = sample("float32", (4, 3))
    with open_model(two_in_two_out_path, execution_mode="parallel", inter_op_threads=2) as iface:
        options = iface._session.get_session_options()
        assert (options.execution_mode, options.inter_op_num_threads) == (ort.ExecutionMode.ORT_PARALLEL, 2)
        assert_identical(iface.infer({"input.1": x, "y:0": x}).sum, x + x)
