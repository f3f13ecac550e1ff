"""Servers going away: a killed server, failover between two servers, and the local fallback server.

Each test starts its own tritonserver processes (they are killed), serving two small models. Nothing here is
timed: a test waits for definite events (a killed server reaped, a stopped process reported by ``waitpid``, a
counter reaching the value the test's calls must bring, processes exiting) under a generous guard against a hang,
and asserts on outcomes (the error raised, the outputs, which server answered)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_models
import pytest
from triton_helpers import (
    HANG_GUARD_S,
    build_repository,
    model_counts,
    paused,
    processes_mentioning,
    server_regions,
    wait_exited,
    wait_for,
)

from backends.triton import TritonConfig, TritonInference
from backends.triton_connection import not_answering
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


def check_once_answered(iface: TritonInference, seed: int) -> None:
    """:func:`check`, called again while the call times out: an interface with a short ``timeout_s`` on a loaded
    machine may need more than one try to reach a server that is (again) able to answer. Any other error fails."""

    def answered() -> bool:
        try:
            check(iface, seed)
        except InferenceTimeoutError:
            return False
        return True

    wait_for(answered, bool, f"{iface.urls} answering")


def successes(server: TritonServer, model: str = "two_in_two_out") -> int:
    return model_counts(server.grpc_url, model)["success"]


def test_killed_server_gives_backend_unavailable_not_a_hang(start_server):
    server = start_server()
    # timeout_s far above any call: a killed server must be noticed as gone (BackendUnavailableError), not waited
    # for until the deadline (that would be an InferenceTimeoutError)
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="medium_mlp", timeout_s=HANG_GUARD_S))
    x = np.random.default_rng(0).standard_normal((100_000, 12)).astype(np.float32)
    iface.infer(features=x)
    calling = threading.Event()
    stubs: list[int] = []

    def kill_while_calls_go_on() -> None:
        calling.wait()
        # the model stubs (and any left by the module's earlier servers, which end too)
        stubs.extend(pid for pid in processes_mentioning(str(server.repository)) if pid != server.process.pid)
        server.kill()  # SIGKILL to the server and its stubs; returns once the server is reaped

    def call_until_it_fails() -> None:
        while True:  # calls in flight when the server dies, then calls to a dead server, until one fails
            calling.set()
            iface.infer(features=x)

    killer = threading.Thread(target=kill_while_calls_go_on, daemon=True)
    killer.start()
    with pytest.raises(BackendUnavailableError, match="no server answered") as caught:
        call_until_it_fails()
    killer.join()
    assert server.grpc_url in str(caught.value)
    iface.close()
    wait_exited(stubs)  # SIGKILLed stubs end asynchronously
    assert processes_mentioning(str(server.repository)) == []  # the server's model stubs died with it


def test_hung_server_gives_a_timeout_error_not_a_hang(start_server):
    server = start_server()
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name="two_in_two_out", timeout_s=2.0))
    check_once_answered(iface, 0)
    with paused(server), pytest.raises(InferenceTimeoutError, match="did not answer in time"):
        iface.infer(pair())
    check_once_answered(iface, 1)  # the same interface reaches the same server again
    iface.close()


@pytest.mark.parametrize("timed_out_first", [True, False])
def test_closing_with_a_hung_server_asks_it_once_at_most_and_the_next_client_unregisters(
    start_server, caplog, timed_out_first
):
    """Two interfaces (a job's stages) whose server hangs (SIGSTOP) after their shared-memory regions were
    registered: closing both asks the server to unregister a region once at most (each ask waits
    ``connect_timeout_s``), not at all after a call of either timed out (a job stopped by a hung server): a server
    that did not answer one interface is not asked by the others of the process. The regions are destroyed; once
    the server answers again, the next client's sweep removes the registrations left behind."""
    server = start_server()
    config = TritonConfig(url=server.grpc_url, model_name="two_in_two_out", timeout_s=2.0, connect_timeout_s=2.0,
                          shared_memory="system")  # fmt: skip
    interfaces = [TritonInference(config), TritonInference(config)]
    for iface in interfaces:
        check_once_answered(iface, 0)
    regions = {name for iface in interfaces for name in iface.shared_memory_regions()}
    assert len(regions) == 4
    assert regions <= server_regions(server.grpc_url)
    with paused(server):
        if timed_out_first:
            with pytest.raises(InferenceTimeoutError):
                interfaces[0].infer(pair())
        with caplog.at_level(logging.DEBUG, logger="backends.triton_connection"):
            for iface in interfaces:
                iface.close()
    asked = [record for record in caplog.records if record.getMessage().startswith("unregistering shared memory")]
    assert len(asked) == (0 if timed_out_first else 1)
    assert not regions & set(os.listdir("/dev/shm"))
    assert regions <= server_regions(server.grpc_url)  # left registered: the server did not answer
    check(TritonInference(config), 1)  # a new client, checking the server, sweeps what nobody holds any more
    assert not regions & server_regions(server.grpc_url)
    assert not not_answering(server.grpc_url)  # answered that client's health check: asked again from now on


def test_hung_server_is_failed_over_when_deadlines_are_retried(start_server, caplog):
    hung, healthy = start_server(), start_server()
    iface = TritonInference(
        TritonConfig(
            urls=(hung.grpc_url, healthy.grpc_url),
            model_name="two_in_two_out",
            # a call may take many rounds on a loaded machine: an attempt the healthy server misses is retried
            timeout_s=HANG_GUARD_S,
            retries=1000,
            attempt_timeout_s=5.0,
            connect_timeout_s=5.0,
            health_recheck_s=HANG_GUARD_S,  # the hung server, once failed, is left alone for the rest of the test
            retry_on=("UNAVAILABLE", "DEADLINE_EXCEEDED"),
        )
    )
    with paused(hung), caplog.at_level(logging.WARNING, logger="backends.triton"):
        for seed in range(10):  # round-robin: the first or the second call tries the hung server first
            check(iface, seed)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{hung.grpc_url}: DEADLINE_EXCEEDED" in m and "trying the next server" in m for m in messages)
    iface.close()


def test_two_servers_round_robin_and_survive_one_killed(start_server, caplog):
    first, second = start_server(), start_server()
    iface = TritonInference(
        TritonConfig(
            urls=(first.grpc_url, second.grpc_url), model_name="two_in_two_out", connect_timeout_s=HANG_GUARD_S
        )
    )
    for seed in range(20):
        check(iface, seed)
    # the servers are this test's own: their counts hold its 20 calls once both have recorded all of them
    wait_for(lambda: successes(first) + successes(second), lambda total: total >= 20, "20 calls recorded")
    served = {first.grpc_url: successes(first), second.grpc_url: successes(second)}
    assert sum(served.values()) == 20
    assert served[first.grpc_url] >= 5
    assert served[second.grpc_url] >= 5  # round-robin: both did work
    first.kill()
    with caplog.at_level(logging.WARNING, logger="backends.triton"):
        for seed in range(50):  # every call still succeeds, on the second server
            check(iface, 100 + seed)
    assert any("trying the next server" in record.getMessage() for record in caplog.records)
    after = served[second.grpc_url] + 50
    assert wait_for(lambda: successes(second), lambda count: count >= after, f"{after} calls recorded") == after
    (stats,) = iface.server_stats()  # the killed server no longer answers
    assert stats.url == second.grpc_url
    assert stats.success_count == after
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
