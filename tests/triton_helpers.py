"""Helpers shared by the Triton tests: model repositories of the test ONNX models, inputs, comparisons, and
waits for definite events (a server's counter reaching a value, processes exiting) whose only deadline is a guard
against a hung test, never the assertion."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx_models
import tritonclient.grpc as grpcclient

from backends.model_repository import add_onnx_model
from backends.triton_server import TritonServer
from inference_iface import ModelSignature, numpy_dtype

T = TypeVar("T")

#: Longest any wait in these tests may take: only a guard against a hung test, far above any plausible time.
HANG_GUARD_S = 120.0

#: (rtol, atol) for a float output of Triton's ONNX Runtime against local ONNX Runtime. The served session runs
#: in another process with its own thread count (and instance count), so a reduction such as MatMul may sum in
#: another order: the results agree to a few ulps, not bit for bit. ``atol`` is scaled by the largest magnitude.
FLOAT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-3),
    "float32": (1e-5, 1e-6),
    "float64": (1e-12, 1e-12),
}

#: Every dtype the Python-backend flavour can serve (it cannot hand bfloat16 to numpy).
SERVED_DTYPES: tuple[str, ...] = tuple(name for name in onnx_models.ONNX_TYPES if name != "bfloat16")


def served_model_files(model_dir: Path) -> dict[str, Path]:
    """Model name → ONNX file, for every shared test model the embedded server can serve."""
    files = {
        "two_in_two_out": onnx_models.two_in_two_out(model_dir),
        "fixed_shape": onnx_models.fixed_shape_model(model_dir),
        "mixed_dtypes": onnx_models.mixed_dtypes_model(model_dir),
        "small_mlp": onnx_models.small_mlp(model_dir),
        "medium_mlp": onnx_models.medium_mlp(model_dir),
        "flatten": onnx_models.flatten_model(model_dir),
    }
    files |= {f"identity_{dtype}": onnx_models.identity_model(model_dir, dtype) for dtype in SERVED_DTYPES}
    return files


def build_repository(repository: Path, files: Mapping[str, Path], instances: int = 1) -> Path:
    """A model repository serving each ONNX file under its name (Python-backend flavour)."""
    for name, path in files.items():
        add_onnx_model(path, repository, name, instances=instances)
    return repository


def random_inputs(signature: ModelSignature, seed: int = 0, rows: int = 7) -> dict[str, np.ndarray]:
    """Random arrays for every input: dynamic dimensions of size ``rows``, values drawn per dtype."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in signature.inputs:
        shape = tuple(rows if dim < 0 else dim for dim in spec.shape)
        if spec.dtype == "bytes":
            words = [b"hit", "\u00e9t\u00e9".encode(), b"", b"track 42", "\u03b7".encode()]
            arrays[spec.name] = np.array(rng.choice(np.array(words, dtype=object), size=shape), dtype=object)
        elif spec.dtype == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif spec.dtype.startswith(("int", "uint")):
            info = np.iinfo(numpy_dtype(spec.dtype))
            arrays[spec.name] = rng.integers(
                info.min, info.max, size=shape, dtype=numpy_dtype(spec.dtype), endpoint=True
            )
        else:
            arrays[spec.name] = (rng.standard_normal(shape) * 10).astype(numpy_dtype(spec.dtype))
    return arrays


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Identical shape, dtype and bytes (strings compared as UTF-8 bytes)."""
    if a.dtype == object or b.dtype == object:
        encode = np.vectorize(lambda item: item.encode() if isinstance(item, str) else item, otypes=[object])
        return a.shape == b.shape and (a.size == 0 or bool(np.all(encode(a) == encode(b))))
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def assert_matches_local(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """``got`` (served by Triton) equals ``want`` (local ONNX Runtime): same shape and dtype; floats within
    :data:`FLOAT_TOLERANCES` (the two sessions differ in thread layout), everything else exactly."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype or object in (got.dtype, want.dtype), f"{what}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f":
        rtol, atol = FLOAT_TOLERANCES[got.dtype.name]
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)
    else:  # integers, booleans and strings are exact whatever the thread layout
        assert same_bits(got, want), what


def wait_for(read: Callable[[], T], done: Callable[[T], bool], what: str, timeout_s: float = HANG_GUARD_S) -> T:
    """Call ``read`` until ``done`` holds for its value; that value.

    For an event that must happen (a counter that must reach a value, a process that must exit): the deadline
    only stops a hung test and its failure names ``what`` and the last value read.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not the case after {timeout_s} s (last read: {value!r})")
        time.sleep(0.05)


def model_counts(grpc_url: str, model: str) -> dict[str, int]:
    """Triton's counters of ``model`` (cumulative since the server started): ``success`` and ``fail`` (requests),
    ``inference_count`` and ``execution_count``.

    Triton records a request here after sending its response, so a read right after a call may not show it yet:
    wait (:func:`wait_counts`) for the value a test's requests must bring, then compare. A model's error response
    counts as a success."""
    raw = grpcclient.InferenceServerClient(grpc_url)
    try:
        (stats,) = raw.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        raw.close()
    inference = stats.get("inference_stats", {})
    return {
        "success": int(inference.get("success", {}).get("count", 0)),
        "fail": int(inference.get("fail", {}).get("count", 0)),
        "inference_count": int(stats.get("inference_count", 0)),
        "execution_count": int(stats.get("execution_count", 0)),
    }


def wait_counts(grpc_url: str, model: str, **at_least: int) -> dict[str, int]:
    """:func:`model_counts` once each named counter (``requests`` = success + fail) has reached its value.

    Counters only grow, so the wait ends whatever the machine's load. With one model instance Triton runs and
    records requests one after the other, so when a test's requests are all recorded, an extra request it should
    not have made (sent before its last one) shows as a count above the value; it could pass unseen only if the
    read fell in the moment between the last response and its record."""

    def read() -> dict[str, int]:
        counts = model_counts(grpc_url, model)
        return counts | {"requests": counts["success"] + counts["fail"]}

    return wait_for(
        read,
        lambda counts: all(counts[key] >= value for key, value in at_least.items()),
        f"{model} on {grpc_url} reaching {at_least}",
    )


def wait_exited(pids: Iterable[int], timeout_s: float = HANG_GUARD_S) -> None:
    """Block until every process in ``pids`` has exited (a pidfd becomes readable when its process exits)."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        except OSError:  # no pidfd here: watch /proc instead
            wait_for(lambda pid=pid: is_running(pid), lambda running: not running, f"process {pid} exiting", timeout_s)
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if not ready:
            raise AssertionError(f"process {pid} still running after {timeout_s} s")


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not yet reaped, has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def paused(server: TritonServer) -> Iterator[None]:
    """``server`` stopped (SIGSTOP: alive, holding its ports, answering nothing) while the block runs, then
    continued. A stopped server cannot answer whatever the machine's load, so a deadline must end any call to it."""
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # SIGSTOP stops the threads asynchronously; the kernel tells the parent once all of them have stopped
        _, status = os.waitpid(pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"process {pid} ended instead of stopping (status {status})"
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``text`` (servers and their stubs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            mentions = entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes()
            if mentions and is_running(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def server_regions(grpc_url: str) -> set[str]:
    """Names of the system shared-memory regions registered with the server at ``grpc_url``."""
    raw = grpcclient.InferenceServerClient(grpc_url)
    try:
        return {
            region["name"] for region in raw.get_system_shared_memory_status(as_json=True).get("regions", {}).values()
        }
    finally:
        raw.close()
