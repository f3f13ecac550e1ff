"""Model repositories, configuration checks and the ``trkx repo``/``trkx serve`` commands."""

from __future__ import annotations

import _thread
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import attrs
import numpy as np
import onnx
import onnx_models
import pytest
from google.protobuf import text_format
from triton_helpers import HANG_GUARD_S, assert_matches_local, processes_mentioning, wait_exited
from tritonclient.grpc import model_config_pb2

from backends.model_repository import (
    CHECKSUM_PARAMETER,
    add_onnx_model,
    model_config,
    onnx_signature,
    read_model_config,
    write_model_config,
)
from backends.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeInference
from backends.triton import ServerOptionError, TritonConfig, TritonInference, parse_url
from backends.triton_config import MAX_MODEL_VERSION, MAX_TIMEOUT_S
from backends.triton_server import TritonServer, TritonServerConfig
from inference_iface import ConfigError, ModelError, create_inference
from inference_iface.checksums import file_sha256
from inference_iface.options import structure
from tracking_algs.cli import main
from tracking_algs.finding.model_dir import SHIPPED_DIR

TRKX = [sys.executable, "-m", "tracking_algs.cli"]


def test_config_pbtxt_is_generated_from_the_onnx_signature(tmp_path, model_dir):
    path = onnx_models.mixed_dtypes_model(model_dir)
    model_dir_written = add_onnx_model(path, tmp_path, "mixed", instances=3, intra_op_threads=2)
    config = read_model_config(model_dir_written)
    assert config.name == "mixed"
    assert config.backend == "python"
    assert config.max_batch_size == 0
    types = model_config_pb2.DataType
    assert [(t.name, types.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("hits/x", "TYPE_FP32", [-1, 3]),
        ("ids", "TYPE_INT64", [-1]),
        ("mask", "TYPE_BOOL", [-1]),
    ]
    assert [(t.name, types.Name(t.data_type)) for t in config.output] == [
        ("scaled", "TYPE_FP64"),
        ("ids+1", "TYPE_INT64"),
        ("not mask", "TYPE_BOOL"),
    ]
    (group,) = config.instance_group
    assert (group.count, model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)) == (3, "KIND_CPU")
    assert config.parameters[CHECKSUM_PARAMETER].string_value == file_sha256(path)
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert config.parameters["memory_pattern"].string_value == "true"
    assert config.parameters["allow_spinning"].string_value == "true"
    assert sorted(p.name for p in (model_dir_written / "1").iterdir()) == ["model.onnx", "model.py"]
    assert (model_dir_written / "1" / "model.onnx").read_bytes() == path.read_bytes()


def test_onnx_signature_matches_onnx_runtime(model_dir):
    for path in (onnx_models.two_in_two_out(model_dir), onnx_models.fixed_shape_model(model_dir)):
        with OnnxRuntimeInference(OnnxRuntimeConfig(model_path=str(path), device="cpu")) as session:
            assert onnx_signature(path) == session.signature


def test_onnxruntime_flavour_is_for_a_full_triton_server(tmp_path, model_dir):
    written = add_onnx_model(
        onnx_models.medium_mlp(model_dir), tmp_path, "embedding", flavour="onnxruntime", instance_kind="gpu"
    )
    text = (written / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == ""
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert sorted(p.name for p in (written / "1").iterdir()) == ["model.onnx"]


def test_repository_mistakes_are_config_errors(tmp_path, model_dir):
    path = onnx_models.two_in_two_out(model_dir)
    add_onnx_model(path, tmp_path, "m")
    with pytest.raises(ConfigError, match="exists"):
        add_onnx_model(path, tmp_path, "m")
    add_onnx_model(path, tmp_path, "m", overwrite=True, instances=2)
    assert read_model_config(tmp_path / "m").instance_group[0].count == 2
    with pytest.raises(ConfigError, match="flavour"):
        add_onnx_model(path, tmp_path, "x", flavour="tensorrt")
    with pytest.raises(ConfigError, match="does not exist"):
        add_onnx_model(tmp_path / "missing.onnx", tmp_path, "x")
    with pytest.raises(ConfigError, match=r"cannot be opened \(File name too long\)"):
        add_onnx_model(tmp_path / ("a" * 5000), tmp_path, "x")
    with pytest.raises(ConfigError, match="instances"):
        add_onnx_model(path, tmp_path, "y", instances=0)
    for name in ("", "a/b", "..", ".hidden", "-x", "my model", "a*b", "é"):  # names a URL path does not carry as is
        with pytest.raises(ConfigError, match=rf"model name {re.escape(repr(name))} must be a plain directory name"):
            add_onnx_model(path, tmp_path, name)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["m"]
    with pytest.raises(ConfigError, match="bfloat16"):
        add_onnx_model(onnx_models.identity_model(model_dir, "bfloat16"), tmp_path, "bf16")
    add_onnx_model(onnx_models.identity_model(model_dir, "bfloat16"), tmp_path, "bf16", flavour="onnxruntime")


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf model\x00\x01"])
def test_a_file_that_holds_no_model_is_refused_and_nothing_is_written(tmp_path, content):
    """An empty file parses as an empty ONNX message: refused like bytes that do not parse, naming the file."""
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"cannot read ONNX model '.*model\.onnx'"):
        onnx_signature(path)
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        add_onnx_model(path, tmp_path / "repository", "m")
    assert not (tmp_path / "repository" / "m").exists()


@pytest.mark.parametrize(
    ("element_type", "name"),
    [(0, "UNDEFINED"), (onnx.TensorProto.FLOAT8E4M3FN, "FLOAT8E4M3FN"), (onnx.TensorProto.COMPLEX64, "COMPLEX64")],
)
def test_a_tensor_of_a_type_the_interface_lacks_is_refused_naming_file_tensor_and_type(tmp_path, element_type, name):
    path = onnx_models.element_type_model(tmp_path, element_type)
    expected = rf"ONNX model {re.escape(repr(str(path)))}: tensor 'x' has ONNX element type {name}, which the interface"
    with pytest.raises(ModelError, match=expected):
        onnx_signature(path)
    with pytest.raises(ModelError, match=expected):
        add_onnx_model(path, tmp_path / "repository", "m")
    assert not (tmp_path / "repository" / "m").exists()


@pytest.mark.parametrize("flavour", ["python", "onnxruntime"])
def test_a_models_external_data_is_copied_where_its_tensors_say(tmp_path, flavour):
    """The served copy loads from the repository alone: onnxruntime opens it there (the original moved away) and
    gives the original's results bit for bit. ``test_triton_backend`` serves such a model."""
    path = onnx_models.external_data_model(tmp_path)
    written = add_onnx_model(path, tmp_path / "repository", "m", flavour=flavour)
    data = written / "1" / "weights" / "medium_mlp.bin"
    assert data.read_bytes() == (path.parent / "weights" / "medium_mlp.bin").read_bytes()
    features = np.random.default_rng(5).standard_normal((50, 12)).astype(np.float32)
    with OnnxRuntimeInference(OnnxRuntimeConfig(model_path=str(path), device="cpu", intra_op_threads=1)) as original:
        want = original.infer(features=features).embedding
    shutil.move(path.parent, tmp_path / "moved")
    served = OnnxRuntimeConfig(model_path=str(written / "1" / "model.onnx"), device="cpu", intra_op_threads=1)
    with OnnxRuntimeInference(served) as copy:
        assert copy.infer(features=features).embedding.tobytes() == want.tobytes()


@pytest.mark.server
def test_a_model_with_external_data_is_served_from_its_repository(tmp_path):
    path = onnx_models.external_data_model(tmp_path)
    repository = tmp_path / "repository"
    add_onnx_model(path, repository, "external")
    features = np.random.default_rng(6).standard_normal((100, 12)).astype(np.float32)
    with OnnxRuntimeInference(OnnxRuntimeConfig(model_path=str(path), device="cpu")) as original:
        want = original.infer(features=features).embedding
    shutil.move(path.parent, tmp_path / "moved")  # the server has the repository alone
    with TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=180)) as server:
        options = {"backend": "triton", "url": server.grpc_url, "model_name": "external"}
        with create_inference(options) as served:
            assert_matches_local(served.infer(features=features).embedding, want, "embedding")


def test_missing_or_outside_external_data_is_refused_naming_each_file(tmp_path):
    path = onnx_models.external_data_model(tmp_path)
    model = onnx.load(path, load_external_data=False)
    for number, tensor in enumerate(model.graph.initializer):  # one file per tensor: w0, b0, w1, ...
        next(entry for entry in tensor.external_data if entry.key == "location").value = f"part{number}.bin"
    onnx.save(model, path)
    (path.parent / "part1.bin").write_bytes(b"")
    missing = [repr(str(path.parent / f"part{number}.bin")) for number in (0, 2)]
    with pytest.raises(
        ModelError, match=rf"external data file\(s\) {re.escape(missing[0])} does not exist; {re.escape(missing[1])}"
    ):
        add_onnx_model(path, tmp_path / "repository", "m")
    for location in ("../escape.bin", "/tmp/absolute.bin", "model.onnx", ""):
        tensor = model.graph.initializer[0]
        next(entry for entry in tensor.external_data if entry.key == "location").value = location
        onnx.save(model, path)
        with pytest.raises(ModelError, match=rf"external data location\(s\) {re.escape(repr(location))} must be file"):
            add_onnx_model(path, tmp_path / "repository", "m")
    assert not (tmp_path / "repository" / "m").exists()


@pytest.mark.parametrize("version", [0, -1, 2**63, 99999999999999999999999, True, 1.0, "1"])
def test_a_model_version_is_a_positive_64_bit_integer(tmp_path, model_dir, version):
    path = onnx_models.two_in_two_out(model_dir)
    with pytest.raises(
        ConfigError, match=rf"model version must be an integer from 1 to {2**63 - 1} .*got {re.escape(repr(version))}"
    ):
        add_onnx_model(path, tmp_path, "m", version=version)
    assert not (tmp_path / "m").exists()
    assert MAX_MODEL_VERSION == 2**63 - 1  # what the server parses (stoll); above it, it aborts
    assert (add_onnx_model(path, tmp_path, "m", version=MAX_MODEL_VERSION) / str(MAX_MODEL_VERSION)).is_dir()


@pytest.mark.parametrize("address", ["", " "])
def test_an_empty_server_address_is_refused_naming_the_option(tmp_path, address):
    server = TritonServer(TritonServerConfig(repository=str(tmp_path), address=address))
    with pytest.raises(ConfigError, match=rf"tritonserver: address {re.escape(repr(address))} is empty"):
        server.start()
    assert server.process is None


def test_model_config_writer_is_general(tmp_path, model_dir):
    # e.g. a custom Python backend taking FEATURES and returning LABELS, written without an ONNX file
    signature = onnx_signature(onnx_models.identity_model(model_dir, "int64"))
    config = model_config("chain", signature, backend="python", instances=2, parameters={"stage": "all"})
    path = write_model_config(tmp_path / "chain", config)
    assert read_model_config(path.parent) == config


@pytest.mark.parametrize(
    ("url", "protocol", "message"),
    [
        ("grpc://127.0.0.1:8001", "grpc", "without a scheme"),
        ("http://127.0.0.1:8001", "grpc", "without a scheme"),
        ("127.0.0.1:8001/v2/models", "grpc", "no path"),
        ("127.0.0.1:8000", "grpc", "port 8000, Triton's default HTTP port"),
        ("localhost:8001", "http", "default gRPC port"),
        ("ftp://host:8000", "http", "scheme must be http or https"),
        ("127.0.0.1:notaport", "grpc", "malformed"),
        ("127.0.0.1:99999", "http", "malformed"),
        (":8001", "grpc", "no host"),
        ("127.0.0.1:0", "grpc", "has port 0"),
        ("http://127.0.0.1:0", "http", "has port 0"),
        ("127.0.0.1:", "grpc", "has an empty port"),
        ("a b:5", "grpc", "'a b' is not a host name"),
        ("\x00:5", "http", "is not a host name"),
        ("999.1.2.3:5", "grpc", "is not a host name"),
        ("[::g]:5", "grpc", "malformed"),
        ("é:5", "grpc", "xn--"),
        ("user@127.0.0.1:9001", "grpc", "without user info"),
    ],
)
def test_url_mistakes_are_config_errors_with_a_hint(url, protocol, message):
    with pytest.raises(ConfigError, match=message):
        parse_url(url, protocol)
    with pytest.raises(ConfigError, match=message):
        TritonInference(TritonConfig(url=url, protocol=protocol, model_name="m"))


def test_good_urls_are_normalised():
    assert parse_url("localhost", "grpc") == ("localhost:8001", False)
    assert parse_url("10.0.0.1:9001", "grpc") == ("10.0.0.1:9001", False)
    assert parse_url("https://triton.example.org", "http") == ("triton.example.org:8000", True)
    assert parse_url("[::1]:8001", "grpc") == ("[::1]:8001", False)
    assert parse_url("triton_1.svc.:9001 ", "grpc") == ("triton_1.svc.:9001", False)
    assert parse_url("xn--bcher-kva.example:65535", "http") == ("xn--bcher-kva.example:65535", False)


def test_bad_options_are_config_errors_listing_choices():
    with pytest.raises(ConfigError, match="retry_on"):
        structure({"model_name": "m", "url": "h:1", "retry_on": ["INVALID_ARGUMENT"]}, TritonConfig)
    with pytest.raises(ConfigError, match="protocol"):
        structure({"model_name": "m", "url": "h:1", "protocol": "websocket"}, TritonConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        create_inference({"backend": "triton", "url": "h:1", "model_name": "m", "timeout_ms": 5})
    with pytest.raises(ConfigError, match="model_name"):
        TritonInference(TritonConfig(url="h:1"))
    with pytest.raises(ConfigError, match="fallback_model_path"):
        TritonInference(TritonConfig(model_name="m", fallback="local"))
    with pytest.raises(ConfigError, match="backend 'triton': url: no server is set"):
        TritonInference(TritonConfig(model_name="m"))


def test_a_config_names_the_server_option_at_fault():
    config = TritonConfig(url="https://a.example:9000", urls=("b:9000",), protocol="http")
    assert config.servers() == [("a.example:9000", True), ("b:9000", False)]
    faults = [
        (TritonConfig(url="h:1", urls=("g:1", "http://g:2")), "urls", "must be host:port without a scheme"),
        (TritonConfig(url="h:8000"), "url", "uses port 8000"),
        (TritonConfig(), "url", "no server is set"),
        (TritonConfig(fallback="local"), "fallback", "needs fallback_model_path or fallback_repository"),
    ]
    for config, key, problem in faults:
        with pytest.raises(ServerOptionError) as caught:
            config.servers()
        assert (caught.value.key, problem in caught.value.problem) == (key, True)
    assert TritonConfig().addresses() == []  # a partial table (a stage may set the server) has no server to call
    assert TritonConfig(fallback="local", fallback_repository="repo").servers() == []


@pytest.mark.parametrize("key", ["timeout_s", "attempt_timeout_s", "connect_timeout_s"])
def test_timeouts_are_finite_and_at_most_a_million_seconds(key):
    # gRPC fails every call at once with DEADLINE_EXCEEDED given a deadline of 1e10 s or more
    assert MAX_TIMEOUT_S == 1e6
    assert getattr(structure({"model_name": "m", "url": "h:1", key: 1e6}, TritonConfig), key) == 1e6
    for value in (1e10, 1e6 + 1):
        with pytest.raises(ConfigError, match=rf"'{key}' must be <= 1000000.0"):
            structure({"model_name": "m", "url": "h:1", key: value}, TritonConfig)
    for value in (float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=rf"expected a finite number, got {value} @ \$\.{key}"):
            structure({"model_name": "m", "url": "h:1", key: value}, TritonConfig)


def test_model_version_is_empty_or_a_positive_integer():
    for version in ("", "1", "12"):
        assert structure({"model_name": "m", "url": "h:1", "model_version": version}, TritonConfig).model_version == (
            version
        )
    for version in ("latest", "0", "-1", "1.0", " 1", "²"):
        with pytest.raises(ConfigError, match=r"model_version must be '' .* or a positive integer as text"):
            structure({"model_name": "m", "url": "h:1", "model_version": version}, TritonConfig)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("url", 8001),
        ("model_name", 5),
        ("urls", "127.0.0.1:5"),
        ("urls", [1]),
        ("retry_on", "UNAVAILABLE"),
        ("headers", ["a"]),
        ("headers", {"a": 1}),
        ("expected_signature", {"inputs": []}),
        ("tls", "yes"),
    ],
)
def test_values_of_the_wrong_type_are_config_errors_naming_the_key(key, value):
    """From a mapping as when built in Python: not converted to text ("8001:8001", "5") nor split into characters (a
    string where a list is expected), nor left to fail later (a header's value, a signature given as a table)."""
    options = {"model_name": "m", "url": "h:1", key: value}
    with pytest.raises(ConfigError, match=rf"\b{key}\b") as caught:
        structure(options, TritonConfig)
    assert "cannot be retried" not in str(caught.value)
    with pytest.raises(ConfigError, match=rf"^'{key}' must be ") as caught:
        TritonConfig(**options)
    assert isinstance(caught.value, TypeError)  # as attrs' own validators raise
    assert "cannot be retried" not in str(caught.value)


def test_secrets_are_never_shown(monkeypatch):
    monkeypatch.setenv("INFERENCE_IFACE_TRITON_TOKEN", "s3cret-token")
    config = TritonConfig(url="127.0.0.1:1", model_name="m", headers={"x-api-key": "s3cret-key"})
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigError, match="'x-api-key': not a string with a string value") as refused:
        TritonConfig(url="127.0.0.1:1", model_name="m", headers={"x-api-key": 31415926})
    assert "31415926" not in str(refused.value)
    with pytest.raises(Exception, match="no server answered") as caught:
        TritonInference(attrs.evolve(config, connect_timeout_s=1.0, retries=0))
    assert "s3cret" not in str(caught.value)


def _port_open(address: str) -> bool:
    """Whether something listens on ``address`` (loopback: refused or accepted at once; the timeout is a guard)."""
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(HANG_GUARD_S)
        return sock.connect_ex((host, int(port))) == 0


def _start_serve(repository: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    process = subprocess.Popen(
        [*TRKX, "serve", "--repository", str(repository)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    endpoints: dict[str, str] = {}
    while len(endpoints) < 4:
        line = process.stdout.readline()
        assert line, f"trkx serve ended early with status {process.wait()}"
        key, _, value = line.strip().partition(": ")
        endpoints[key] = value
    return process, endpoints


def _server_processes(repository: Path, serve: subprocess.Popen) -> dict[str, list[int]]:
    """The processes ``trkx serve`` runs for ``repository`` by kind: its tritonserver and the model stubs.

    Both exist from the moment the server is ready (it loads its models first) until it stops."""
    kinds: dict[str, list[int]] = {"tritonserver": [], "stub": []}
    for pid in processes_mentioning(str(repository)):
        if pid == serve.pid:
            continue
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:  # ended meanwhile
            continue
        if program.endswith(b"/tritonserver"):
            kinds["tritonserver"].append(pid)
        elif program.endswith(b"triton_python_backend_stub"):
            kinds["stub"].append(pid)
    return kinds


@pytest.mark.server
def test_trkx_repo_add_onnx_then_trkx_serve(tmp_path, model_dir, capsys):
    path = onnx_models.small_mlp(model_dir)
    repository = tmp_path / "repository"
    args = ["repo", "add-onnx", str(path), "--name", "embedding", "--repository", str(repository), "--instances", "2"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(repository / "embedding")
    assert main(args) == 2  # exists: the error names the way out
    assert "--force" in capsys.readouterr().err

    process, endpoints = _start_serve(repository)
    try:
        x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
        with (
            TritonInference(TritonConfig(url=endpoints["grpc"], model_name="embedding")) as served,
            OnnxRuntimeInference(OnnxRuntimeConfig(model_path=str(path), device="cpu")) as local,
        ):
            # served by 2 instances with their own thread count: a float tolerance, not the same bits
            assert_matches_local(served.infer(features=x).embedding, local.infer(features=x).embedding, "embedding")
        assert Path(endpoints["log"]).is_file()
        server = _server_processes(repository, process)
        assert len(server["tritonserver"]) == 1
        assert len(server["stub"]) == 2  # one per model instance
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=HANG_GUARD_S) == 0
        wait_exited(server["tritonserver"] + server["stub"])  # stubs are SIGKILLed last and end asynchronously
        assert processes_mentioning(str(repository)) == []
        assert not _port_open(endpoints["grpc"])  # closed with the processes that held it
    finally:
        process.kill()
        process.wait()


@pytest.mark.server
def test_killing_trkx_serve_leaves_no_orphan_server(tmp_path, model_dir):
    repository = tmp_path / "repository"
    add_onnx_model(onnx_models.two_in_two_out(model_dir), repository, "m")
    process, endpoints = _start_serve(repository)
    try:
        assert _port_open(endpoints["grpc"])
        server = _server_processes(repository, process)  # a state that holds while the server runs
        assert len(server["tritonserver"]) == 1
        assert len(server["stub"]) == 1  # one model, one instance
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no clean-up code runs in the parent
        process.wait()
    # the server notices its parent's death (PR_SET_PDEATHSIG) and stops its stub: wait for both to end; an orphan
    # would keep running and fail this wait (a guard far above any shutdown)
    wait_exited(server["tritonserver"] + server["stub"])
    assert processes_mentioning(str(repository)) == []
    assert not _port_open(endpoints["grpc"])
    assert not _port_open(endpoints["http"])


def test_add_tracking_that_fails_leaves_the_repository_as_it_was(tmp_path, capsys):
    """A model directory with a damaged ONNX file: ``trkx repo add-tracking`` fails naming it and writes nothing, so
    the corrected command runs without ``--force``; with ``--force`` the models it would replace are kept. A staging
    directory left by a killed process is removed by the next writer."""
    models = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, models)
    (models / "filter.onnx").write_bytes(b"this is not a protobuf model\x00\x01")
    repository = tmp_path / "repository"
    argv = ["repo", "add-tracking", "--repository", str(repository), "--serving", "models"]
    assert main([*argv, "--model-dir", str(models)]) == 2
    assert f"cannot read ONNX model '{models / 'filter.onnx'}'" in capsys.readouterr().err
    assert not repository.exists()
    assert main(argv) == 0  # the shipped models: the rerun is not blocked
    before = {path: path.read_bytes() for path in repository.rglob("*") if path.is_file()}
    assert main([*argv, "--model-dir", str(models), "--force"]) == 2
    assert {path: path.read_bytes() for path in repository.rglob("*") if path.is_file()} == before
    (repository / ".staging-999999999-x" / "m").mkdir(parents=True)  # no process has that id
    add_onnx_model(SHIPPED_DIR / "gnn.onnx", repository, "gnn", overwrite=True)
    assert sorted(path.name for path in repository.iterdir()) == ["embedding", "filter", "gnn"]


@pytest.mark.parametrize("serving", ["chain", "ensemble"])
@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("gnn.onnx", b"junk", "cannot read ONNX model '{path}'"),
        ("model_card.json", b"{bad json", "model card '{path}' is not valid JSON"),
        ("model_card.json", b"[1, 2]", "model card '{path}' must hold a JSON object, got list"),
        ("model_card.json", b'{"recommended": {}}', "model card '{path}' has no recommended['radius'] value"),
    ],
)
def test_add_tracking_reads_every_file_it_serves_before_writing(tmp_path, capsys, serving, file_name, content, message):
    """The served chain copies the model files as they are: a damaged one is refused by ``add-tracking``, naming it,
    not by the server that would load it later."""
    models = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, models)
    (models / file_name).write_bytes(content)
    repository = tmp_path / "repository"
    argv = ["repo", "add-tracking", "--repository", str(repository), "--serving", serving, "--model-dir", str(models)]
    assert main(argv) == 2
    assert message.format(path=models / file_name) in capsys.readouterr().err
    assert not repository.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--grpc-port", "70000"], "a port is 1 to 65535 (0: a free one), got {'gRPC': 70000}"),
        (["--http-port", "-1"], "a port is 1 to 65535 (0: a free one), got {'HTTP': -1}"),
        (["--startup-timeout", "-3"], "argument --startup-timeout: expected a finite number > 0, got -3"),
        (["--address", "192.0.2.1"], "cannot listen on address '192.0.2.1' (Cannot assign requested address)"),
        (["--log", "{tmp}/taken/server.log"], "argument --log: '{tmp}/taken' exists and is not a directory"),
    ],
)
def test_trkx_serve_refuses_bad_ports_timeouts_and_addresses(tmp_path, capsys, monkeypatch, args, expected):
    """A port out of range, a non-positive start-up timeout, an address of another host or a log file below a file:
    one line and status 2, before any server starts, and no log file left behind."""
    (tmp_path / "taken").write_text("a file\n")
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    args, expected = [arg.replace("{tmp}", str(tmp_path)) for arg in args], expected.replace("{tmp}", str(tmp_path))
    assert main(["serve", "--repository", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trkx serve: error: ")
    assert expected in err
    assert "Traceback" not in err
    assert list(temporary.iterdir()) == []


@pytest.mark.server
def test_trkx_serve_names_the_models_that_failed_to_load(tmp_path, model_dir, capsys):
    """A repository with a damaged ``config.pbtxt`` and a damaged ONNX file: the error names each model and why,
    ahead of the log's tail (where the model table and the shutdown lines push the reasons out); the log it names
    is kept after the command."""
    repository = tmp_path / "repository"
    for name in ("bad_config", "bad_onnx"):
        add_onnx_model(onnx_models.two_in_two_out(model_dir), repository, name)
    (repository / "bad_config" / "config.pbtxt").write_text("garbage {{{")
    (repository / "bad_onnx" / "1" / "model.onnx").write_bytes(b"this is not a protobuf model")
    assert main(["serve", "--repository", str(repository), "--startup-timeout", "60"]) == 2
    reasons, tail = capsys.readouterr().err.split("\n--- last ")
    log = Path(tail.split(" lines of ", 1)[1].split(" ---\n", 1)[0])  # kept, to be read after the command
    assert log.name.startswith("trkx-serve-")
    assert "failed to load 'bad_onnx'" in log.read_text()
    log.unlink()
    assert "tritonserver exited with status 1 while starting: models of the repository failed to load" in reasons
    assert f"Poll failed for model directory 'bad_config': failed to read text proto from {repository}" in reasons
    assert "config.pbtxt, line:column 1:9: " in reasons
    assert "failed to load 'bad_onnx' version 1: " in reasons
    assert "INVALID_PROTOBUF" in reasons
    assert processes_mentioning(str(repository)) == []


@pytest.mark.server
def test_a_start_interrupted_by_ctrl_c_leaves_no_server_or_stub(tmp_path, model_dir):
    """Ctrl-C while the server loads its models (``trkx serve`` interrupted while starting): the server and its
    Python-backend stub are stopped before ``start()`` lets the interrupt through, none left running."""
    repository = tmp_path / "repository"
    add_onnx_model(onnx_models.two_in_two_out(model_dir), repository, "m")
    server = TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=HANG_GUARD_S))
    started: list[int] = []

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while not started and time.monotonic() < deadline:
            started.extend(processes_mentioning(str(repository)))
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert started, "the server never started"
    wait_exited(started)
    assert processes_mentioning(str(repository)) == []
    assert not server.is_alive()
