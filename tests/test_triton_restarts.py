"""Servers that restart, lose their model or their port, and clients that die: a restarted server gets the
shared-memory regions registered again, an unloaded model is a backend failure, ``trkx serve`` refuses a port
another server holds, and the regions of a killed client are removed by the next one.

Each test starts its own tritonserver processes on loopback. Triton records a request in its statistics only after
sending the response, so a test that counts a server's requests waits until the count reaches what its calls must
bring (a guard far above any plausible time stops a hang) and then compares."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_models
import pytest
import tritonclient.grpc as grpcclient
from triton_helpers import build_repository, model_counts, server_regions, wait_for

from backends.triton import TritonConfig, TritonInference
from backends.triton_connection import REGION_PREFIX, is_orphaned, sweep_orphaned_regions
from backends.triton_server import TritonServer, TritonServerConfig, free_ports, listening_ports, port_is_free
from inference_iface import BackendUnavailableError, InputError, ModelError
from inference_iface.checksums import file_sha256

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
MODEL = "two_in_two_out"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_repository(tmp_path_factory.mktemp("repository"), {MODEL: onnx_models.two_in_two_out(model_dir)})


@pytest.fixture
def start_server(repository: Path) -> Iterator:
    """Start servers on the module's repository, or another (``TritonServerConfig`` keywords allowed); stopped after
    the test."""
    started: list[TritonServer] = []

    def start(**options) -> TritonServer:
        server = TritonServer(TritonServerConfig(**({"repository": str(repository)} | options))).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pair(seed: int, rows: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((rows, 3)).astype(np.float32) for name in ("input.1", "y:0")}


def check(iface: TritonInference, seed: int) -> None:
    inputs = pair(seed)
    out = iface.infer(inputs)
    np.testing.assert_array_equal(out.sum, inputs["input.1"] + inputs["y:0"])
    np.testing.assert_array_equal(out.prod_0, inputs["input.1"] * inputs["y:0"])


def successes(server: TritonServer) -> int:
    """Successful requests of the model on ``server`` recorded so far (it may not have recorded the last call yet)."""
    return model_counts(server.grpc_url, MODEL)["success"]


def settled_successes(*servers: TritonServer, total: int) -> list[int]:
    """The servers' successes once together they reach ``total`` (every call the test made recorded)."""
    names = ", ".join(server.grpc_url for server in servers)
    return wait_for(
        lambda: [successes(server) for server in servers], lambda counts: sum(counts) >= total, f"{total} on {names}"
    )


def restart(server: TritonServer, start_server) -> TritonServer:
    """Stop ``server`` and start a new one on the same gRPC and HTTP ports."""
    server.stop()
    return start_server(grpc_port=server.grpc_port, http_port=server.http_port)


# --- a server restarted on its port ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_restarted_on_its_port_gets_the_regions_registered_again(start_server, protocol):
    first = start_server()
    url = first.grpc_url if protocol == "grpc" else first.http_url
    # shared_memory "auto" (the default) uses shared memory on loopback; the retries ride out the reconnection
    iface = TritonInference(TritonConfig(url=url, protocol=protocol, model_name=MODEL, retries=5, retry_backoff_s=0.2))
    second = None
    try:
        for seed in range(20):
            if seed == 10:
                second = restart(first, start_server)
            check(iface, seed)  # every call, before and after the restart, gives the right outputs
        regions = set(iface.shared_memory_regions())
        assert len(regions) == 2
        assert all(name.startswith(REGION_PREFIX) for name in regions)
        assert regions <= server_regions(second.grpc_url)  # still shared memory, registered with the new server
        assert settled_successes(second, total=10) == [10]  # the new server answered the last 10 calls, once each
    finally:
        iface.close()


def test_a_server_restarted_on_its_port_with_another_model_is_refused(start_server, model_dir, tmp_path):
    """A server that stopped answering is verified again before it is called again: one restarted on the same port
    with another model under the same name and signature (a rebuilt file) fails the checksum, and the calls end with
    a BackendUnavailableError naming it, not with the other model's outputs."""
    original = onnx_models.two_in_two_out(model_dir)
    rebuilt = onnx.load(original)
    rebuilt.doc_string = "the same graph, built again"
    other_file = tmp_path / "rebuilt" / f"{MODEL}.onnx"
    other_file.parent.mkdir()
    onnx.save(rebuilt, other_file)
    other_repository = build_repository(tmp_path / "other", {MODEL: other_file})
    first = start_server()
    iface = TritonInference(TritonConfig(url=first.grpc_url, model_name=MODEL, model_checksum=file_sha256(original),
                                         retries=3, retry_backoff_s=0.2, health_recheck_s=0))  # fmt: skip
    try:
        check(iface, 0)
        first.stop()
        start_server(repository=str(other_repository), grpc_port=first.grpc_port, http_port=first.http_port)
        with pytest.raises(BackendUnavailableError, match=r"model_checksum [0-9a-f]{64} expected, the server reports"):
            check(iface, 1)
    finally:
        iface.close()


def test_one_of_two_servers_restarted_serves_again_through_shared_memory(start_server):
    first, other = start_server(), start_server()
    iface = TritonInference(
        TritonConfig(urls=(first.grpc_url, other.grpc_url), model_name=MODEL, health_recheck_s=0, retries=5)
    )
    try:
        for seed in range(10):
            check(iface, seed)
        _, before = settled_successes(first, other, total=10)
        restarted = restart(first, start_server)
        for seed in range(10, 30):
            check(iface, seed)
        count, _ = settled_successes(restarted, other, total=before + 20)
        assert count > 0  # the restarted server took its share again (not only failover)
        assert set(iface.shared_memory_regions()) & server_regions(restarted.grpc_url)
    finally:
        iface.close()


# --- a model that disappears ---------------------------------------------------------------------------------
EXPLICIT = ("--model-control-mode=explicit", f"--load-model={MODEL}")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_unloaded_model_is_a_backend_failure_and_comes_back_when_loaded(start_server, protocol):
    server = start_server(extra_args=EXPLICIT)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    iface = TritonInference(TritonConfig(url=url, protocol=protocol, model_name=MODEL, health_recheck_s=0))
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        check(iface, 0)
        raw.unload_model(MODEL)  # as a server does while it shuts down
        assert not raw.is_model_ready(MODEL)
        with pytest.raises(BackendUnavailableError) as caught:
            iface.infer(pair(1))
        assert not isinstance(caught.value, (ModelError, InputError))
        message = str(caught.value)
        assert f"'{MODEL}' is not available on any server" in message
        assert url in message
        raw.load_model(MODEL)
        check(iface, 2)  # the server is checked again and re-admitted
    finally:
        raw.close()
        iface.close()


def test_a_model_unloaded_on_one_of_two_servers_fails_over(start_server):
    unloading, other = start_server(extra_args=EXPLICIT), start_server()
    iface = TritonInference(TritonConfig(urls=(unloading.grpc_url, other.grpc_url), model_name=MODEL))
    raw = grpcclient.InferenceServerClient(unloading.grpc_url)
    try:
        check(iface, 0)
        _, before = settled_successes(unloading, other, total=1)
        raw.unload_model(MODEL)
        for seed in range(1, 11):
            check(iface, seed)
        assert settled_successes(other, total=before + 10) == [before + 10]
    finally:
        raw.close()
        iface.close()


def test_a_server_stopped_with_sigterm_while_calls_go_on_gives_backend_unavailable(start_server):
    # SIGTERM: the server finishes what is in flight (up to its exit timeout), unloads its models (calls then get
    # "Request for unknown model ... has no available versions"), then closes its ports
    server = start_server(stop_timeout_s=2)
    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name=MODEL))
    try:
        check(iface, 0)
        server.process.send_signal(signal.SIGTERM)

        def call_until_it_fails() -> None:
            for seed in range(1_000_000):  # calls until the server stops serving
                check(iface, seed)

        with pytest.raises(BackendUnavailableError) as caught:
            call_until_it_fails()
        assert server.grpc_url in str(caught.value)
        assert server.wait() == 0
    finally:
        iface.close()


# --- trkx serve on a port another server holds -----------------------------------------------------------
@pytest.mark.parametrize("option", ["--grpc-port", "--http-port", "--metrics-port"])
def test_serve_on_a_port_another_server_holds_exits_2_with_one_line(start_server, repository, option):
    holder = start_server()
    port = {"--grpc-port": holder.grpc_port, "--http-port": holder.http_port}.get(option, holder.metrics_port)
    command = [sys.executable, "-m", "tracking_algs.cli", "serve", "--repository", str(repository), option, str(port)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2
    assert result.stdout == ""  # no endpoints printed as if ready
    (line,) = result.stderr.splitlines()
    assert line.startswith("trkx serve: error:")
    assert f"127.0.0.1:{port} is already in use" in line
    assert holder.is_alive()


def test_listening_ports_and_port_is_free_see_real_listeners(start_server):
    server = start_server()
    ports = {server.grpc_port, server.http_port, server.metrics_port}
    assert ports <= listening_ports(server.process.pid)
    assert not any(port_is_free(port) for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        mine = sock.getsockname()[1]
        assert mine in listening_ports(os.getpid())
        assert mine not in listening_ports(server.process.pid)
        assert not port_is_free(mine)
    assert port_is_free(mine)


def test_the_ports_a_server_is_given_are_all_different_and_keep_the_configured_ones(tmp_path):
    """Ports asked for one at a time can repeat (the system hands a port out again once its socket closes), and a
    server given the same port twice fails to start; the ports picked together never repeat, nor take a configured
    port."""
    ports = free_ports(200)
    assert len(set(ports)) == 200
    # two batches of 1000 ephemeral ports (Linux's default range holds 28 232) share dozens (68-84 measured here),
    # unless the second is told the first's
    first = free_ports(1000)
    assert not set(free_ports(1000, taken=first)) & set(first)
    configured = TritonServer(TritonServerConfig(repository=str(tmp_path), http_port=ports[0]))
    for _ in range(20):
        configured._pick_ports()
        chosen = [configured.grpc_port, configured.http_port, configured.metrics_port]
        assert configured.http_port == ports[0]
        assert len(set(chosen)) == 3


# --- regions of a client killed with its process group ------------------------------------------------
CLIENT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from backends.triton import TritonConfig, TritonInference
    iface = TritonInference(TritonConfig(url=sys.argv[1], model_name=sys.argv[2], shared_memory="system"))
    x = np.ones((3, 3), np.float32)
    iface.infer({"input.1": x, "y:0": x})
    print(" ".join(iface.shared_memory_regions()), flush=True)
    time.sleep(600)
    """
)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_regions_of_a_killed_client_are_removed_by_the_next_one(start_server):
    server = start_server()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.grpc_url, MODEL],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, with Python's resource tracker
    )
    try:
        leaked = set(client.stdout.readline().split())
    finally:
        os.killpg(client.pid, signal.SIGKILL)  # the whole group: nothing of it can clean up
        client.wait()
        client.stdout.close()
    assert len(leaked) == 2
    assert all(name.startswith(f"{REGION_PREFIX}{client.pid}-") for name in leaked)
    assert leaked <= set(os.listdir("/dev/shm"))
    assert leaked <= server_regions(server.grpc_url)
    assert all(is_orphaned(name) for name in leaked)

    iface = TritonInference(TritonConfig(url=server.grpc_url, model_name=MODEL))
    try:
        assert not leaked & set(os.listdir("/dev/shm"))  # files removed when the interface was made
        assert not leaked & server_regions(server.grpc_url)  # and unregistered when the server was checked
        check(iface, 0)
        assert set(iface.shared_memory_regions()) <= server_regions(server.grpc_url)
    finally:
        iface.close()


def test_a_region_whose_owner_holds_its_lock_is_kept_even_if_its_pid_is_unknown():
    # an owner in another PID namespace sharing /dev/shm: its PID means nothing here, its flock does
    name = f"{REGION_PREFIX}{_dead_pid()}-0-in"
    path = Path("/dev/shm", name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert not is_orphaned(name)
        assert name not in sweep_orphaned_regions()
        assert path.exists()
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert is_orphaned(name)
        assert name in sweep_orphaned_regions()
        assert not path.exists()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    # a name of this process is orphaned once no connection of it holds the region (see test_triton_backend.py)
    own = f"{REGION_PREFIX}{os.getpid()}-999999-in"
    assert is_orphaned(own)
