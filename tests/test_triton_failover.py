"""Servers going away: a killed server, failover between two servers, and the local fallback server.

Each test starts its own tritonserver processes (they are killed), serving two small models."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_models
import pytest
from triton_helpers import build_repository, processes_mentioning

from backends.triton import TritonConfig, TritonInference
from backends.triton_server import TritonServer, TritonServerConfig, free_port
from inference_iface import BackendUnavailableError, InferenceTimeoutError

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    files = {"two_in_two_out": onnx_models.two_in_two_out(model_dir), "medium_mlp": onnx_models.medium_mlp(model_dir)}
    return build_repository(tmp_path_factory.mktemp("repository"), files)


@pytest.fixture
def start_server(repository: Path) -> Iterator:
    """Start servers on the module's repository; all are stopped after the test."""
    started: list[TritonServer] = []

    def start() -> TritonServer:
        server = TritonServer(TritonServerConfig(repository=str(repository))).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pair(rows: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((rows, 3)).astype(np.float32) for name in ("input.1", "y:0")}


def check(iface: TritonInference, seed: int) -> None:
    inputs = pair(seed=seed)
    out = iface.infer(inputs)
    np.testing.assert_array_equal(out.sum, inputs["input.1"] + inputs["y:0"])


def test_killed_server_gives_backend_unavailable_within_timeout(start_server):
    server = start_server()
    timeout_s = 3.0
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="medium_mlp", timeout_s=timeout_s))
    x = np.random.default_rng(0).standard_normal((100_000, 12)).astype(np.float32)
    iface.infer(features=x)
    killed_at: list[float] = []

    def kill_soon() -> None:
        time.sleep(0.3)
        killed_at.append(time.monotonic())
        server.kill()

    threading.Thread(target=kill_soon).start()

    def call_until_it_fails() -> None:
        for _ in range(10_000):  # calls in flight when the server dies, then calls to a dead server
            iface.infer(features=x)

    with pytest.raises(BackendUnavailableError, match="no server answered") as caught:
        call_until_it_fails()
    raised_at = time.monotonic()
    assert killed_at
    assert raised_at - killed_at[0] <= timeout_s + 1.0
    assert server.grpc_url in str(caught.value)
    iface.close()
    assert processes_mentioning(str(server.repository)) == []  # the server's model stubs died with it


def _wait_until_stopped(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until every thread of ``pid`` is stopped (SIGSTOP reaches a busy process asynchronously)."""
    deadline = time.monotonic() + timeout_s
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        states = {(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()}
        if states <= {"T", "t"}:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


def test_hung_server_gives_a_timeout_error_within_timeout(start_server):
    server = start_server()
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="two_in_two_out", timeout_s=2.0))
    check(iface, 0)
    os.kill(server.process.pid, signal.SIGSTOP)  # alive but silent
    try:
        _wait_until_stopped(server.process.pid)
        start = time.monotonic()
        with pytest.raises(InferenceTimeoutError, match="did not answer in time"):
            iface.infer(pair())
        assert time.monotonic() - start <= 2.0 + 1.0
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    check(iface, 1)  # the same server answers again
    iface.close()


def test_hung_server_is_failed_over_when_deadlines_are_retried(start_server):
    hung, healthy = start_server(), start_server()
    iface = TritonInference(
        TritonConfig(
            urls=(hung.grpc_url, healthy.grpc_url),
            model_name="two_in_two_out",
            timeout_s=10.0,
            attempt_timeout_s=0.5,
            connect_timeout_s=0.5,
            retry_on=("UNAVAILABLE", "DEADLINE_EXCEEDED"),
        )
    )
    os.kill(hung.process.pid, signal.SIGSTOP)
    try:
        _wait_until_stopped(hung.process.pid)
        for seed in range(10):
            check(iface, seed)
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
    iface.close()


def test_two_servers_round_robin_and_survive_one_killed(start_server, caplog):
    first, second = start_server(), start_server()
    iface = TritonInference(TritonConfig(urls=(first.grpc_url, second.grpc_url), model_name="two_in_two_out"))
    for seed in range(20):
        check(iface, seed)
    served = {stats.url: stats.success_count for stats in iface.server_stats()}
    assert served[first.grpc_url] >= 5
    assert served[second.grpc_url] >= 5  # round-robin: both did work
    first.kill()
    with caplog.at_level(logging.WARNING, logger="backends.triton"):
        for seed in range(50):  # every call still succeeds, on the second server
            check(iface, 100 + seed)
    assert any("trying the next server" in record.getMessage() for record in caplog.records)
    (stats,) = iface.server_stats()  # the killed server no longer answers
    assert stats.url == second.grpc_url
    assert stats.success_count >= served[second.grpc_url] + 50
    iface.close()


def test_a_single_server_is_retried_and_never_said_to_be_failed_over(start_server, caplog):
    server = start_server()
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="two_in_two_out", retries=2))
    check(iface, 0)
    server.kill()
    with (
        caplog.at_level(logging.WARNING, logger="backends.triton"),
        pytest.raises(BackendUnavailableError, match="no server answered after 2 retries"),
    ):
        check(iface, 1)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.endswith("; retrying") for message in messages)
    assert not any("next server" in message for message in messages)
    iface.close()


def test_fallback_local_with_no_server_configured_finishes(model_dir):
    iface = TritonInference(
        TritonConfig(
            model_name="two_in_two_out",
            fallback="local",
            fallback_model_path=str(onnx_models.two_in_two_out(model_dir)),
        )
    )
    for seed in range(5):
        check(iface, seed)
    assert "fallback=local" in iface.describe()
    server = iface._fallback_server
    assert server is not None
    assert server.is_alive()
    iface.close()
    assert not server.is_alive()


def test_fallback_local_takes_over_when_the_only_server_dies(start_server, repository):
    server = start_server()
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    iface = TritonInference(
        TritonConfig(
            urls=(dead, server.grpc_url),
            model_name="two_in_two_out",
            fallback="local",
            fallback_repository=str(repository),
            timeout_s=60,
        )
    )
    check(iface, 0)
    assert iface._fallback_server is None  # one configured server answered
    server.kill()
    for seed in range(5):
        check(iface, seed + 1)
    assert iface._fallback_server is not None
    assert iface.urls[-1] == iface._fallback_server.grpc_url
    iface.close()


def test_no_server_and_no_fallback_is_a_clear_unavailable_error():
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailableError, match=f"no server answered.*{dead}"):
        TritonInference(TritonConfig(url=dead, model_name="m", connect_timeout_s=2))
