"""The Triton backend against a real tritonserver on loopback: parity with local ONNX Runtime, errors,
shared memory, threads, statistics. One server (all shared test models) for the whole module.

Triton's statistics are cumulative since the server started and record a request only after its response has
been sent, so a test that counts requests uses a model of its own (:data:`COUNTED`, counters starting at 0) and
waits until the counters reach what its requests must bring (:func:`triton_helpers.wait_counts`) before comparing.
Served floats are compared with local ONNX Runtime within a tolerance: the served session runs in another process
with its own thread count."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from triton_helpers import (
    HANG_GUARD_S,
    assert_matches_local,
    build_repository,
    paused,
    random_inputs,
    same_bits,
    served_model_files,
    server_regions,
    wait_counts,
    wait_for,
)

from backends.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeInference
from backends.triton import TritonConfig, TritonInference
from backends.triton_connection import is_orphaned
from backends.triton_server import TritonServer, TritonServerConfig
from inference_iface import (
    BackendUnavailableError,
    InferenceTimeoutError,
    InputError,
    ModelChecksumError,
    ModelError,
    TensorSpec,
    create_inference,
)
from inference_iface.checksums import file_sha256
from inference_iface.options import unstructure

pytestmark = pytest.mark.server

TRANSPORTS = [("grpc", "none"), ("grpc", "system"), ("http", "none"), ("http", "system")]
#: Copies of shared models (name → model copied), each used by one test only: its counters hold that test's requests.
COUNTED = {
    "counted_rejections": "two_in_two_out",
    "counted_grpc_limit": "two_in_two_out",
    "counted_flatten": "flatten",
    "counted_stats_grpc": "small_mlp",
    "counted_stats_http": "small_mlp",
    "counted_text": "identity_bytes",
}


@pytest.fixture(scope="module")
def model_files(model_dir: Path) -> dict[str, Path]:
    return served_model_files(model_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path]) -> Iterator[TritonServer]:
    files = {**model_files, **{name: model_files[copied] for name, copied in COUNTED.items()}}
    repository = build_repository(tmp_path_factory.mktemp("repository"), files)
    with TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=180)) as running:
        yield running


@pytest.fixture
def connect(server: TritonServer) -> Iterator:
    """Open Triton interfaces on the module's server; all are closed after the test."""
    opened: list[TritonInference] = []

    def open_model(model_name: str, protocol: str = "grpc", **options) -> TritonInference:
        url = server.grpc_url if protocol == "grpc" else server.http_url
        iface = create_inference(
            {"backend": "triton", "url": url, "protocol": protocol, "model_name": model_name, **options}
        )
        opened.append(iface)
        return iface

    yield open_model
    for iface in opened:
        iface.close()


def local(path: Path) -> OnnxRuntimeInference:
    return OnnxRuntimeInference(OnnxRuntimeConfig(model_path=str(path), device="cpu"))


@pytest.mark.parametrize(("protocol", "shared_memory"), TRANSPORTS)
def test_every_model_served_gives_the_local_results(connect, model_files, protocol, shared_memory):
    for name, path in model_files.items():
        served = connect(name, protocol, shared_memory=shared_memory)
        with local(path) as reference:
            assert served.signature == reference.signature, name
            rows = 2 if name == "fixed_shape" else 1000 if "mlp" in name else 9
            inputs = random_inputs(reference.signature, seed=len(name), rows=rows)
            want = reference.infer(inputs)
            got = served.infer(inputs)
        assert got._fields == want._fields
        for field, a, b in zip(got._fields, got, want, strict=True):
            assert_matches_local(a, b, f"{name}.{field} over {protocol}/{shared_memory}")


def test_a_server_on_ipv6_loopback_is_reached_through_its_bracketed_urls(tmp_path, model_files):
    """A server bound to ``::1``: its URLs put the address in brackets (``[::1]:PORT``), as clients parse them, and
    both protocols reach it and give the local results (shared memory too: ``::1`` is loopback)."""
    repository = build_repository(tmp_path / "repository", {"two_in_two_out": model_files["two_in_two_out"]})
    with TritonServer(TritonServerConfig(repository=str(repository), address="::1", startup_timeout_s=180)) as server:
        assert server.grpc_url == f"[::1]:{server.grpc_port}"
        assert server.http_url == f"[::1]:{server.http_port}"
        assert server.metrics_url == f"http://[::1]:{server.metrics_port}/metrics"
        with local(model_files["two_in_two_out"]) as reference:
            inputs = random_inputs(reference.signature, seed=3)
            want = reference.infer(inputs)
        for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
            options = {"backend": "triton", "url": url, "protocol": protocol, "model_name": "two_in_two_out"}
            with create_inference(options) as served:
                got = served.infer(inputs)
                assert served.shared_memory_regions(), "loopback: shared memory is used"
            for field, a, b in zip(got._fields, got, want, strict=True):
                assert_matches_local(a, b, f"{field} over {protocol} on [::1]")


def test_medium_model_at_100k_rows_matches_local_with_shared_memory(connect, model_files):
    served = connect("medium_mlp", shared_memory="system")
    with local(model_files["medium_mlp"]) as reference:
        x = random_inputs(reference.signature, seed=3, rows=100_000)
        want = reference.infer(x).embedding
    got = served.infer(x).embedding
    assert_matches_local(got, want, "embedding")
    assert got.flags.writeable
    assert got.flags.c_contiguous


def test_output_subset_and_named_tuple_inputs(connect):
    served = connect("two_in_two_out", shared_memory="system")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.full((2, 3), 2.0, dtype=np.float32)
    only = served.infer(served.signature.input_type(x, y), outputs=["prod:0"])
    assert only._fields == ("prod_0",)
    np.testing.assert_array_equal(only.prod_0, x * y)
    both = served.infer(input_1=x, y_0=y, outputs=["prod:0", "sum"])
    np.testing.assert_array_equal(both.sum, x + y)


def test_bad_inputs_are_rejected_before_any_round_trip(connect, server):
    model = "counted_rejections"  # this test's requests only
    served = connect(model)
    x = np.ones((4, 3), dtype=np.float32)
    served.infer({"input.1": x, "y:0": x})  # request 1
    bad_calls = [
        {"input.1": x, "y:0": x.astype(np.float64)},  # dtype
        {"input.1": x},  # missing
        {"input.1": x, "y:0": x, "z": x},  # unknown
        {"input.1": x, "y:0": np.ones((4, 5), dtype=np.float32)},  # fixed dimension
        {"input.1": x, "y:0": np.ones(3, dtype=np.float32)},  # rank
    ]
    for inputs in bad_calls:
        with pytest.raises(InputError):
            served.infer(inputs)
    # control, request 2: a request that does reach the server is counted (a model's error response as a success)
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    wrong = grpcclient.InferInput("input.1", [4, 3], "FP32")
    wrong.set_data_from_numpy(x)
    other = grpcclient.InferInput("y:0", [5, 3], "FP32")
    other.set_data_from_numpy(np.ones((5, 3), dtype=np.float32))
    with pytest.raises(Exception, match="broadcast"):
        raw.infer(model, [wrong, other])
    raw.close()
    # once the control is recorded, so is every earlier request: a bad call that reached the server shows as a 3rd
    assert wait_counts(server.grpc_url, model, requests=2)["requests"] == 2


def test_text_that_is_not_utf8_is_an_input_error_before_any_round_trip(connect, server):
    """Bytes that do not decode and a str that does not encode (a lone surrogate) are refused by the client, naming
    the input, over both protocols: not a UnicodeEncodeError from the client library, nor a server-side failure."""
    model = "counted_text"  # this test's requests only
    for protocol in ("grpc", "http"):
        served = connect(model, protocol)
        for text in (b"\xff", "\udcff"):
            with pytest.raises(InputError, match=r"^input 'in\.0': its elements must be UTF-8 text; element \[0, 1\]"):
                served.infer({"in.0": np.array([["a", text]], dtype=object)})
    # control, request 1: once it is recorded, so is every earlier request, and a refused one that was sent shows
    assert served.infer({"in.0": np.array([["a", "é"]], dtype=object)}).out_0.tolist() == [[b"a", "é".encode()]]
    assert wait_counts(server.grpc_url, model, requests=1)["requests"] == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shared_memory", ["none", "system"])
def test_closing_while_a_call_is_in_flight_leaves_the_call_its_memory(server, connect, protocol, shared_memory):
    """``close()`` from another thread while a call is under way (past the interface's checks of ``close``: the
    calling thread's connection is made after them; the server is stopped, so the call cannot finish first).

    A gRPC call ends with the closed interface's error, not with the transport's "Channel closed!" as a ModelError;
    an HTTP call already sent gets its outputs once the server goes on. Either way the calling thread's shared-memory
    regions are not destroyed under it, which the call may be writing or reading, but once the call is over."""
    served = connect("two_in_two_out", protocol, shared_memory=shared_memory)
    x = np.arange(300_000, dtype=np.float32).reshape(100_000, 3)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with paused(server):
            call = pool.submit(served.infer, {"input.1": x, "y:0": x})
            wait_for(lambda: len(served._connections), lambda count: count == 2, "the calling thread's connection")
            served.close()
        if protocol == "grpc":
            with pytest.raises(BackendUnavailableError, match="the interface has been closed"):
                call.result(timeout=HANG_GUARD_S)
        else:
            np.testing.assert_array_equal(call.result(timeout=HANG_GUARD_S).sum, x + x)
    assert _our_shm_files() == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_side_failure_is_a_model_error_with_the_servers_message(connect, protocol):
    served = connect("two_in_two_out", protocol)
    with pytest.raises(ModelError, match=r"Attempting to broadcast an axis") as caught:
        # batch sizes 4 and 5 pass the signature check (both dynamic) but not ONNX Runtime's Add
        served.infer({"input.1": np.ones((4, 3), np.float32), "y:0": np.ones((5, 3), np.float32)})
    assert "two_in_two_out" in str(caught.value)


def _our_shm_files() -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"inference-iface-{os.getpid()}-"))


def _server_regions(server: TritonServer) -> set[str]:
    return server_regions(server.grpc_url)


def test_shared_memory_regions_are_reused_and_released(server, model_files):
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="small_mlp", shared_memory="system"))
    held: list[int] = []  # the region files the first call made (64 KiB at least): the later calls fit in them
    with local(model_files["small_mlp"]) as reference:
        for rows in (10, 1000, 1000, 50):
            x = random_inputs(reference.signature, seed=rows, rows=rows)
            assert_matches_local(iface.infer(x).embedding, reference.infer(x).embedding, f"{rows} rows")
            if not held:
                held = [os.open(f"/dev/shm/{name}", os.O_RDONLY) for name in _our_shm_files()]
    try:  # and reused them: a region made again would be another file of the same name
        assert [os.path.samestat(os.fstat(fd), os.stat(f"/dev/shm/{name}")) for fd, name in
                zip(held, _our_shm_files(), strict=True)] == [True, True]  # fmt: skip
    finally:
        for fd in held:
            os.close(fd)
    regions = set(iface.shared_memory_regions())
    assert len(regions) == 2  # one input and one output region for this thread, reused for every call
    assert regions <= _server_regions(server)
    assert _our_shm_files() == sorted(regions)
    iface.close()
    assert iface.shared_memory_regions() == ()
    assert _our_shm_files() == []
    assert not regions & _server_regions(server)


def test_regions_of_ended_threads_are_released_when_a_new_thread_connects(server):
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="two_in_two_out", shared_memory="system"))
    x = np.ones((5, 3), dtype=np.float32)

    def one_call() -> None:
        iface.infer({"input.1": x, "y:0": x})

    for _ in range(3):  # short-lived threads, one after the other
        thread = threading.Thread(target=one_call)
        thread.start()
        thread.join()
    assert len(iface.shared_memory_regions()) == 2  # only the last thread's; earlier ones were released
    assert len(_our_shm_files()) == 2
    iface.close()
    assert _our_shm_files() == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_interface_dropped_without_close_releases_its_regions(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    config = TritonConfig(url=url, protocol=protocol, model_name="two_in_two_out", shared_memory="system")
    iface = TritonInference(config)
    x = np.ones((5, 3), dtype=np.float32)
    iface.infer({"input.1": x, "y:0": x})
    regions = set(iface.shared_memory_regions())
    assert len(regions) == 2
    assert regions <= set(_our_shm_files())
    assert not any(is_orphaned(name) for name in regions)
    del iface  # no close()
    gc.collect()
    assert not regions & set(_our_shm_files())  # the files are gone at once
    assert all(is_orphaned(name) for name in regions)
    assert regions <= _server_regions(server)  # nothing called the server while collecting
    other = TritonInference(config)  # its first check of the server unregisters them
    assert not regions & _server_regions(server)
    other.close()
    other.close()  # idempotent; and its finalizer, run when it is collected, finds nothing left to release
    del other
    gc.collect()
    assert _our_shm_files() == []


@pytest.mark.parametrize(
    ("protocol", "shared_memory", "compression"),
    [("http", "auto", "none"), ("http", "system", "gzip"), ("grpc", "system", "none")],
)
def test_a_zero_size_call_leaves_the_headers_and_later_calls_alone(connect, protocol, shared_memory, compression):
    # tritonclient.http writes each request's JSON length (and encodings) into the headers it is given
    served = connect(
        "two_in_two_out", protocol, shared_memory=shared_memory, compression=compression, headers={"X-Trace": "on"}
    )
    headers = dict(served._headers)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(served.infer({"input.1": x, "y:0": x}).sum, x + x)
    empty = np.ones((0, 3), dtype=np.float32)
    assert served.infer({"input.1": empty, "y:0": empty}).sum.shape == (0, 3)
    for rows in (2, 7):
        y = np.full((rows, 3), 3.0, dtype=np.float32)
        out = served.infer({"input.1": y, "y:0": y})
        np.testing.assert_array_equal(out.sum, y + y)
        np.testing.assert_array_equal(out.prod_0, y * y)
    assert served._headers == headers


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_short_call_deadline_applies_to_calls_not_to_construction(server, connect, protocol):
    """The server answers construction's checks (within ``connect_timeout_s``) and is then stopped for the call: a
    server that answers fast may beat even a deadline of 1 µs (the client's thread may not run between sending and
    reading), a stopped one cannot."""
    x = np.ones((2, 3), dtype=np.float32)
    for deadline in ({"timeout_s": 1e-6}, {"attempt_timeout_s": 1e-6}):
        served = connect("two_in_two_out", protocol, **deadline)
        assert served.signature.input_names == ("input.1", "y:0")
        with paused(server), pytest.raises(InferenceTimeoutError):
            served.infer({"input.1": x, "y:0": x})
    # the longest timeouts taken work on both protocols (gRPC fails at once from about 1e10 s)
    served = connect("two_in_two_out", protocol, timeout_s=1e6, attempt_timeout_s=1e6, connect_timeout_s=1e6)
    np.testing.assert_array_equal(served.infer({"input.1": x, "y:0": x}).sum, x + x)


def test_output_larger_than_its_estimated_slot_is_sent_inline_once_then_fits(server, connect, model_files):
    # 'flat' [16·n] has a dynamic size the client estimates as n elements (the leading input dimension)
    model = "counted_flatten"  # this test's executions only
    served = connect(model, shared_memory="system")
    x = np.random.default_rng(1).standard_normal((100_000, 16)).astype(np.float32)
    with local(model_files["flatten"]) as reference:
        want = reference.infer(x=x).flat
    # a Reshape moves the bytes without arithmetic: exact whatever the thread layout
    assert same_bits(served.infer(x=x).flat, want)
    first = wait_counts(server.grpc_url, model, execution_count=2)["execution_count"]
    assert same_bits(served.infer(x=x).flat, want)
    both = wait_counts(server.grpc_url, model, execution_count=first + 1)["execution_count"]
    assert [first, both - first] == [2, 1]  # the first call ran again with the output inline; the second fitted


def test_eight_threads_two_hundred_calls_each_all_correct(connect):
    served = connect("two_in_two_out", shared_memory="system")

    def worker(thread: int) -> int:
        rng = np.random.default_rng(thread)
        for _ in range(200):
            x, y = (rng.standard_normal((rng.integers(1, 50), 3)).astype(np.float32) for _ in range(2))
            y = y[: len(x)] if len(y) >= len(x) else np.resize(y, x.shape)
            out = served.infer({"input.1": x, "y:0": y})
            if not (np.array_equal(out.sum, x + y) and np.array_equal(out.prod_0, x * y)):
                return 0
        return 200

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 1600
    assert len(served.shared_memory_regions()) == 16  # two per thread


def test_infer_async_returns_futures_and_validates_at_once(connect):
    served = connect("two_in_two_out")
    xs = [np.full((3, 3), float(i), dtype=np.float32) for i in range(10)]
    futures = [served.infer_async({"input.1": x, "y:0": x}) for x in xs]
    for x, future in zip(xs, futures, strict=True):
        np.testing.assert_array_equal(future.result(timeout=HANG_GUARD_S).sum, x + x)
    with pytest.raises(InputError):
        served.infer_async({"input.1": xs[0]})


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_stats_report_counts_and_times(server, connect, protocol):
    model = f"counted_stats_{protocol}"  # this test's requests only
    served = connect(model, protocol, connect_timeout_s=HANG_GUARD_S)
    x = np.ones((100, 3), dtype=np.float32)
    for _ in range(3):
        served.infer(features=x)
    # the three requests and their batch statistics recorded; nothing else runs this model, so they stay put
    wait_counts(server.grpc_url, model, success=3, inference_count=3, execution_count=3)
    (stats,) = served.server_stats()
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        (item,) = raw.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        raw.close()
    assert (stats.url, stats.model_name, stats.model_version) == (served.urls[0], model, "1")
    assert (stats.success_count, stats.failure_count) == (3, 0)
    assert (stats.inference_count, stats.execution_count) == (3, 3)
    # times: Triton's totals per phase divided by the requests timed, in milliseconds (whatever their values)
    times = item["inference_stats"]
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(times[phase].get("count", 0)) == 3, phase
        assert getattr(stats, f"{phase}_ms") == pytest.approx(int(times[phase].get("ns", 0)) / 3 / 1e6), phase
    parts = (stats.queue_ms, stats.compute_input_ms, stats.compute_infer_ms, stats.compute_output_ms)
    assert stats.request_ms == pytest.approx(sum(parts))


def test_expected_signature_and_checksum_are_checked(connect, model_files):
    path = model_files["two_in_two_out"]
    with local(path) as reference:
        # the job-options form of a signature: tables of inputs/outputs with name, dtype and shape
        expected = unstructure(reference.signature)
        good = connect("two_in_two_out", expected_signature=expected, model_checksum=file_sha256(path))
    assert good.signature.input_names == ("input.1", "y:0")
    wrong = reference.signature.__class__(
        inputs=[TensorSpec("input.1", "float64", [-1, 3]), TensorSpec("y:0", "float32", [-1, 3])],
        outputs=reference.signature.outputs,
    )
    with pytest.raises(ModelError, match="expected_signature"):
        connect("two_in_two_out", expected_signature=unstructure(wrong))
    with pytest.raises(ModelChecksumError, match="model_checksum"):
        connect("two_in_two_out", model_checksum="sha256:" + "0" * 64)


def test_unknown_model_or_version_is_a_model_error(connect):
    with pytest.raises(ModelError, match="'no_such_model'"):
        connect("no_such_model")
    with pytest.raises(ModelError, match="version '7'"):
        connect("two_in_two_out", model_version="7")
    assert connect("two_in_two_out", model_version="1").infer(
        {"input.1": np.ones((1, 3), np.float32), "y:0": np.ones((1, 3), np.float32)}
    ).sum.tolist() == [[2.0, 2.0, 2.0]]


def test_compression_gives_the_same_result(connect):
    x = np.random.default_rng(0).standard_normal((500, 3)).astype(np.float32)
    plain = connect("two_in_two_out", shared_memory="none").infer({"input.1": x, "y:0": x})
    # the same model on the same server, element-wise Add and Mul: exact, compressed or not
    for protocol in ("grpc", "http"):
        for algorithm in ("gzip", "deflate"):
            packed = connect("two_in_two_out", protocol, shared_memory="none", compression=algorithm)
            out = packed.infer({"input.1": x, "y:0": x})
            assert same_bits(out.sum, plain.sum)
            assert same_bits(out.prod_0, plain.prod_0)


def test_grpc_message_limit_defaults_to_the_grpc_clients_and_cannot_exceed_it():
    assert TritonConfig().grpc_max_message_bytes == grpcclient.MAX_GRPC_MESSAGE_SIZE == 2**31 - 1
    with pytest.raises(ValueError, match="grpc_max_message_bytes"):
        TritonConfig(grpc_max_message_bytes=2**31)


def test_request_over_the_grpc_limit_is_an_input_error_before_anything_is_sent(server, connect):
    limit = 1 << 20
    model = "counted_grpc_limit"  # this test's requests only
    wire = connect(model, shared_memory="none", grpc_max_message_bytes=limit)
    small = np.ones((10_000, 3), np.float32)  # 2 × 120 kB: under the limit
    np.testing.assert_array_equal(wire.infer({"input.1": small, "y:0": small}).sum, small + small)  # request 1
    big = np.ones((60_000, 3), np.float32)  # 2 × 720 kB: over the limit
    with pytest.raises(InputError) as caught:
        wire.infer({"input.1": big, "y:0": big})
    message = str(caught.value)
    assert f"grpc_max_message_bytes = {limit}" in message
    assert "shared_memory" in message
    assert "'input.1' 720000 bytes" in message
    # the same inputs through shared memory travel as descriptors and pass: request 2
    shared = connect(model, shared_memory="system", grpc_max_message_bytes=limit)
    np.testing.assert_array_equal(shared.infer({"input.1": big, "y:0": big}).prod_0, big * big)
    # refused before serialising: once request 2 is recorded, so would be the refused one had it been sent
    assert wait_counts(server.grpc_url, model, requests=2)["requests"] == 2
