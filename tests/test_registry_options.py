"""Building interfaces from configuration: the backend registry, entry points, TOML job options, overrides."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping

import attrs
import numpy as np
import pytest

from backends.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeInference
from inference_iface import (
    ENTRY_POINT_GROUP,
    BackendConfig,
    ConfigError,
    InferenceInterface,
    InputError,
    ModelError,
    ModelSignature,
    TensorSpec,
    available_backends,
    backend_class,
    create_inference,
    register_backend,
    registry,
)
from inference_iface.options import (
    apply_overrides,
    describe_differences,
    load_toml,
    option_differences,
    parse_override,
    structure,
    with_overrides,
)

# --- a complete backend written in the test: numpy instead of a runtime ----------------------------------------------


@attrs.frozen(kw_only=True)
class AffineConfig(BackendConfig):
    """``y = scale * x + shift`` on float64 vectors."""

    scale: float = 1.0
    shift: float = 0.0


class AffineInference(InferenceInterface):
    config_class = AffineConfig

    def __init__(self, config: AffineConfig) -> None:
        super().__init__(config.cast_policy)
        self.config = config

    @property
    def signature(self) -> ModelSignature:
        return ModelSignature(inputs=[TensorSpec("x:0", "float64", [-1])], outputs=[TensorSpec("y:0", "float64", [-1])])

    def describe(self) -> str:
        return f"affine scale={self.config.scale} shift={self.config.shift}"

    def _run(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        return {"y:0": self.config.scale * inputs["x:0"] + self.config.shift}


@pytest.fixture(autouse=True)
def _registrations_end_with_the_test(monkeypatch):
    """The backends a test registers (and the entry points it loads) are gone after it: other tests list the
    available backends."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))


def test_register_backend_at_run_time():
    register_backend("test-affine", AffineInference)
    assert "test-affine" in available_backends()
    assert backend_class("test-affine") is AffineInference
    with create_inference({"backend": "test-affine", "scale": 2.0, "shift": 1.0}) as iface:
        np.testing.assert_array_equal(iface.infer(x_0=np.array([0.0, 1.5])).y_0, [1.0, 4.0])
        with pytest.raises(InputError, match="input 'x:0': expected dtype float64, got float32"):
            iface.infer(x_0=np.zeros(2, np.float32))
    with create_inference(AffineConfig(scale=3.0, cast_policy="safe")) as iface:  # a config instance finds its class
        np.testing.assert_array_equal(iface.infer(x_0=np.array([1, 2], np.int32)).y_0, [3.0, 6.0])


def test_prepare_inputs_casts_as_infer_does_and_an_output_left_out_is_a_model_error():
    """``prepare_inputs`` (what an asynchronous call sends) takes the interface's cast policy, as ``infer`` does; a
    backend whose run leaves out an output asked for is a ModelError naming it, not a None in the result."""
    safe = AffineInference(AffineConfig(cast_policy="safe"))
    assert safe.prepare_inputs(x_0=np.array([1, 2], np.int32))["x:0"].dtype == np.float64
    with pytest.raises(InputError, match="input 'x:0': expected dtype float64, got int32"):
        AffineInference(AffineConfig()).prepare_inputs(x_0=np.array([1, 2], np.int32))

    class Forgetful(AffineInference):
        def _run(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
            return {}

    with pytest.raises(ModelError, match=r"^affine scale=1.0 shift=0.0: the backend returned no output\(s\) 'y:0'$"):
        Forgetful(AffineConfig()).infer(x_0=np.zeros(2))


def test_register_backend_needs_a_config_class():
    class Bare(InferenceInterface):
        pass

    with pytest.raises(ConfigError, match="has no 'config_class'"):
        register_backend("test-bare", Bare)
    assert "test-bare" not in available_backends()


@pytest.mark.parametrize("backend", [5, "thirdparty:Backend", AffineConfig, AffineInference(AffineConfig())])
def test_register_backend_needs_a_backend_class(backend):
    with pytest.raises(ConfigError, match=r"^backend 'test-bad': expected a backend class \(a subclass of Inference"):
        register_backend("test-bad", backend)
    assert "test-bad" not in available_backends()


def test_backend_found_through_a_real_entry_point(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_square.py").write_text(
        textwrap.dedent(
            """
            import attrs
            from inference_iface import BackendConfig, InferenceInterface, ModelSignature, TensorSpec

            @attrs.frozen(kw_only=True)
            class SquareConfig(BackendConfig):
                power: int = 2

            class SquareInference(InferenceInterface):
                config_class = SquareConfig

                def __init__(self, config):
                    super().__init__(config.cast_policy)
                    self.power = config.power

                @property
                def signature(self):
                    specs = [TensorSpec("x", "int64", [-1])], [TensorSpec("y", "int64", [-1])]
                    return ModelSignature(inputs=specs[0], outputs=specs[1])

                def describe(self):
                    return f"square power={self.power}"

                def _run(self, inputs, output_names):
                    return {"y": inputs["x"] ** self.power}
            """
        )
    )
    dist_info = tmp_path / "thirdparty_square-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-square\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntest-square = thirdparty_square:SquareInference\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert "test-square" in available_backends()
    with create_inference({"backend": "test-square", "power": 3}) as iface:
        assert iface.describe() == "square power=3"
        np.testing.assert_array_equal(iface.infer(x=np.array([2, -3])).y, [8, -27])


def test_create_inference_from_mapping_and_from_config(two_in_two_out_path):
    from_dict = create_inference({"backend": "onnxruntime", "model_path": str(two_in_two_out_path), "device": "cpu"})
    from_config = create_inference(OnnxRuntimeConfig(model_path=str(two_in_two_out_path), device="cpu"))
    for iface in (from_dict, from_config):
        assert isinstance(iface, OnnxRuntimeInference)
        assert iface.signature.input_names == ("input.1", "y:0")
        iface.close()
    assert from_dict.config == from_config.config


#: a Triton backend's config instance in a process where ``MISSING`` cannot be imported (an install without its
#: extra): the registry passes over a backend it cannot load, and says why where that leaves none
WITHOUT = """
import sys
sys.modules[sys.argv[1]] = None
from backends.triton_config import TritonConfig
from inference_iface import BackendUnavailableError
from inference_iface.registry import backend_name
try:
    print(backend_name(TritonConfig(url="127.0.0.1:1", model_name="m")))
except BackendUnavailableError as error:
    print(error)
"""


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("onnxruntime", "triton"),
        ("tritonclient", "no loadable backend takes a TritonConfig; backend 'triton' cannot be loaded"),
    ],
)
def test_a_config_instance_finds_its_backend_where_another_cannot_be_loaded(missing, expected):
    probe = subprocess.run([sys.executable, "-c", WITHOUT, missing], capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(expected)


def test_an_unknown_cast_policy_is_a_config_error(two_in_two_out_path):
    config = OnnxRuntimeConfig(model_path=str(two_in_two_out_path), cast_policy="loose")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cast_policy 'loose' is unknown; expected one of strict, "):
        OnnxRuntimeInference(config)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown backend 'onnx'; valid backends are .*onnxruntime"):
        create_inference({"backend": "onnx", "model_path": "m.onnx"})
    with pytest.raises(ConfigError, match=r"need a 'backend' key; valid backends are .*onnxruntime"):
        create_inference({"model_path": "m.onnx"})
    with pytest.raises(ConfigError, match="must be a mapping or a backend config, got str"):
        create_inference("onnxruntime")


def test_unknown_key_lists_the_valid_ones(two_in_two_out_path):
    with pytest.raises(ConfigError) as error:
        create_inference({"backend": "onnxruntime", "model_path": str(two_in_two_out_path), "threads": 4})
    message = str(error.value)
    assert "backend 'onnxruntime': unknown key(s) threads" in message
    for key in ("model_path", "device", "intra_op_threads", "graph_optimization_level", "cast_policy"):
        assert key in message


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"gpu.*\$\.device"):
        create_inference({"backend": "onnxruntime", "model_path": "m.onnx", "device": "gpu"})
    with pytest.raises(ConfigError, match=r"expected an integer, got 'many' @ \$\.intra_op_threads"):
        create_inference({"backend": "onnxruntime", "model_path": "m.onnx", "intra_op_threads": "many"})


@attrs.frozen
class _Switch:
    enabled: bool = True
    level: float = 1.0


@pytest.mark.parametrize("value", ["False", "no", 0, 1.0])
def test_a_boolean_option_takes_true_or_false_only(value):
    """``--set key=False`` (not TOML's false) is the string 'False', which ``bool()`` would make true."""
    with pytest.raises(ConfigError, match=rf"expected true or false, got {value!r} @ \$\.enabled"):
        structure({"enabled": value}, _Switch)
    assert structure({"enabled": False}, _Switch).enabled is False


def test_an_error_is_blamed_on_the_file_or_the_override_that_brings_it_in():
    """The file when the file alone has the error, otherwise the override that brings it in; an override may mend
    the file."""

    build = functools.partial(structure, cls=_Switch)
    with pytest.raises(ConfigError, match=r"^switch\.toml: expected a number, got 'high'"):
        with_overrides({"level": "high"}, ["enabled=false"], build, where="switch.toml")
    with pytest.raises(ConfigError, match=r"^--set enabled=no: expected true or false, got 'no'"):
        with_overrides({}, ["enabled=no", "level=2"], build, where="switch.toml")
    mended = with_overrides({"level": "high"}, ["level=0.5"], build, where="switch.toml")
    assert mended == _Switch(enabled=True, level=0.5)


@pytest.mark.parametrize("value", [True, "0.5"])
def test_a_number_option_takes_numbers_only(value):
    """cattrs alone would take true as 1.0 and parse the string."""
    with pytest.raises(ConfigError, match=rf"expected a number, got {value!r} @ \$\.level"):
        structure({"level": value}, _Switch)
    assert structure({"level": 2}, _Switch).level == 2.0


def test_toml_with_overrides_builds_the_interface(tmp_path, two_in_two_out_path):
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            [inference]
            backend = "onnxruntime"
            model_path = "{two_in_two_out_path}"
            device = "auto"
            intra_op_threads = 4
            """
        )
    )
    options = apply_overrides(
        load_toml(job), ["inference.intra_op_threads=1", "inference.device=cpu", "inference.cast_policy='safe'"]
    )
    assert load_toml(job)["inference"]["intra_op_threads"] == 4  # the loaded options are not modified
    with create_inference(options["inference"]) as iface:
        assert iface.config == OnnxRuntimeConfig(
            model_path=str(two_in_two_out_path), device="cpu", intra_op_threads=1, cast_policy="safe"
        )
        x = np.ones((1, 3), np.float16)  # safe cast accepted because of the override
        np.testing.assert_array_equal(iface.infer({"input.1": x, "y:0": x}).sum, [[2, 2, 2]])


def test_structure_rejects_unknown_keys_listing_valid_ones():
    config = structure({"model_path": "m.onnx", "graph_optimization_level": "basic"}, OnnxRuntimeConfig, "[inference]")
    assert config.graph_optimization_level == "basic"
    with pytest.raises(
        ConfigError, match=r"\[inference\]: unknown key\(s\) modelpath; valid keys are cast_policy, model_path"
    ):
        structure({"modelpath": "m.onnx"}, OnnxRuntimeConfig, "[inference]")


def test_override_and_toml_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"must look like dotted\.key=value"):
        apply_overrides({}, ["inference.device"])
    with pytest.raises(ConfigError, match="'backend' is a value, not a table"):
        apply_overrides({"backend": "onnxruntime"}, ["backend.device=cpu"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[inference\nbackend = 1\n")
    with pytest.raises(ConfigError, match=f"{broken.name}.*is not valid TOML"):
        load_toml(broken)


@attrs.frozen(kw_only=True)
class Inner:
    size: int = 1


@attrs.frozen(kw_only=True)
class Outer:
    inner: Inner = Inner()
    name: str = ""


def test_structure_accepts_ready_made_attrs_values_inside_mappings():
    inner = Inner(size=3)
    assert structure({"inner": inner, "name": "x"}, Outer).inner is inner
    assert structure({"inner": {"size": 4}}, Outer).inner == Inner(size=4)
    with pytest.raises(ConfigError, match=r"unknown key.*valid keys are size"):
        structure({"inner": {"sise": 4}}, Outer)


def test_override_keys_and_values_read_as_toml():
    """Blanks around the dots are TOML's; a value with ``=`` in it is the text after the first ``=``; a value that
    starts as a TOML list, table or quoted string must be one (not silently the text); an empty value is ''."""
    assert parse_override("finding . graph.radius = 1.5") == (["finding", "graph", "radius"], 1.5)
    assert parse_override("fitting.options.expr=a=b") == (["fitting", "options", "expr"], "a=b")
    assert parse_override("urls=['a:1', \"b:2\"]") == (["urls"], ["a:1", "b:2"])
    assert parse_override("model_dir=") == (["model_dir"], "")
    assert parse_override("headers={a = 'x'}") == (["headers"], {"a": "x"})
    for text, what in (("urls=[a:1, b:2]", "list"), ("headers={a=x}", "inline table"), ("name='open", "string")):
        with pytest.raises(ConfigError, match=rf"override {re.escape(repr(text))}: the value .* is not a TOML {what}"):
            parse_override(text)
    for text in ("a..b=1", "=1", "a.b", " .a=1"):
        with pytest.raises(ConfigError, match=r"must look like dotted\.key=value"):
            parse_override(text)


def test_an_override_sets_each_key_once():
    """A second value for a key (or a table replacing keys set before) would silently drop the first."""
    with pytest.raises(ConfigError, match=r"'a\.b=2': a\.b is already set by --set a\.b=1; set it once"):
        apply_overrides({}, ["a.b=1", "a.b=2"])
    with pytest.raises(ConfigError, match=r"a\.b is already set by --set a\.b\.c=1"):
        apply_overrides({}, ["a.b.c=1", "a.b={d=2}"])
    assert apply_overrides({"a": {"x": 0}}, ["a.b={d=2}", "a.b.c=1"]) == {"a": {"x": 0, "b": {"d": 2, "c": 1}}}
    with pytest.raises(ConfigError, match=r"'a\.b' is a value, not a table \(1\), so it has no key 'c'"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


def test_the_blame_does_not_repeat_the_override():
    build = functools.partial(structure, cls=_Switch)
    with pytest.raises(ConfigError) as error:
        with_overrides({}, ["level=1", "level=2"], build, where="switch.toml")
    assert str(error.value) == "--set level=2: level is already set by --set level=1; set it once"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_number_option_takes_finite_numbers_only(value):
    """TOML has ``nan`` and ``inf``; neither is a cut, a radius, a rate or a timeout."""
    with pytest.raises(ConfigError, match=rf"expected a finite number, got {value!r} @ \$\.level"):
        structure({"level": value}, _Switch)


def test_unknown_keys_and_bad_values_are_named_in_full_with_the_closest_valid_key():
    with pytest.raises(ConfigError) as error:
        structure({"inner": {"sise": 4}, "nmae": "x"}, Outer)
    assert str(error.value) == (
        "options: unknown key(s) sise (inner.sise); valid keys are size (did you mean inner.size?); "
        "unknown key(s) nmae; valid keys are inner, name (did you mean name?)"
    )
    with pytest.raises(
        ConfigError, match=r"^t\.toml: unknown key\(s\) sise \(a\.b\.sise\); valid keys are size \(did you"
    ):
        structure({"sise": 1}, Inner, where="t.toml", path=("a", "b"))
    with pytest.raises(ConfigError, match=r"expected an integer, got 'x' @ \$\.a\.b\.size$"):
        structure({"size": "x"}, Inner, path=("a", "b"))
    with pytest.raises(ConfigError, match=r"expected a table of options, got \[1\] @ \$\.inner$"):
        structure({"inner": [1]}, Outer)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) zzz; valid keys are inner, name$"):  # nothing close
        structure({"zzz": 1}, Outer)


def test_a_number_written_either_way_is_the_same_option_value():
    """A backend's table keeps its numbers as written; ``30`` and ``30.0`` are one value to a resumed job."""
    assert option_differences({"t": {"timeout_s": 30, "n": [1.0, 2]}}, {"t": {"timeout_s": 30.0, "n": [1, 2.0]}}) == []
    assert option_differences({"t": 30}, {"t": 30.5}) == [("t", 30, 30.5)]
    assert option_differences({"switch": True}, {"switch": 1}) == [("switch", True, 1)]
    assert describe_differences(option_differences([], {"a": 1}), "in the job") == (
        'the whole record: [] in the job, {"a": 1} now'
    )
