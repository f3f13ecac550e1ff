"""One thread's connection to one Triton server: the client calls, shared memory and the error mapping.

- every thread has its own client per server (the HTTP client is not thread-safe), and, with shared memory on,
  its own system shared-memory regions, reused across calls and released by :meth:`Connection.close` (or, for a
  connection garbage-collected without it, destroyed by its finalizer);
- inputs are packed into one input region, outputs into one output region with slots estimated from the
  signature; an output larger than its slot is fetched inline once and its size remembered;
- regions are named ``inference-iface-PID-N-in``/``-out``; a server that no longer knows them (it restarted)
  gets them registered again and the request is repeated once; the files of regions whose owner died
  (SIGKILL) are removed by :func:`sweep_orphaned_regions`, their registrations by
  :meth:`Connection.unregister_orphans`;
- a gRPC request whose inline tensors would exceed ``grpc_max_message_bytes`` raises ``InputError`` before
  anything is serialised;
- every failed client call becomes a :class:`RemoteError` whose status is a gRPC code name (HTTP statuses,
  timeouts and socket errors are mapped to one), so retry and failover decisions do not depend on the protocol;
- headers and the token are sent with every call and never logged.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from backends.triton_config import TritonConfig
from backends.triton_types import interface_dtype, triton_datatype
from inference_iface.dtypes import numpy_dtype
from inference_iface.errors import BackendUnavailableError, InputError
from inference_iface.shared_memory import SHM, process_alive
from inference_iface.signature import ModelSignature, TensorSpec

_log = logging.getLogger(__name__)

_HTTP_CODES = {"400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED", "404": "NOT_FOUND"}
_HTTP_CODES |= {"408": "DEADLINE_EXCEEDED", "429": "RESOURCE_EXHAUSTED", "500": "INTERNAL", "503": "UNAVAILABLE"}
_HTTP_CODES |= {"504": "DEADLINE_EXCEEDED"}
_ALIGNMENT = 64  # byte alignment of tensors packed into one shared-memory region
#: Prefix of this library's shared-memory regions: ``inference-iface-PID-N-in`` / ``-out``.
REGION_PREFIX = "inference-iface-"
_REGION_NAME = re.compile(r"inference-iface-(\d+)-\d+-(?:in|out)")
_SLOT_TOO_SMALL = "shared memory size specified with the request for output"  # Triton's message
# codes of a server that did not answer (a region set-up failing with them is retried, not given up)
_TRANSPORT_CODES: tuple[str, ...] = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED")
_TRANSPORT_CODES += ("UNAUTHENTICATED", "PERMISSION_DENIED")
#: Codes of a server that did not answer: a call failing with one marks the server failed even where it is not
#: retried, and every interface of this process then closes without asking that server (:func:`not_answering`).
NOT_ANSWERING = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
#: The addresses of servers that did not answer a call of this process and have not answered a health check since.
_silent: set[str] = set()
#: Names of the regions this process holds now; a region of this process not in it was destroyed without being
#: unregistered (its connection was garbage-collected, or its server did not answer), see :func:`is_orphaned`.
_held: set[str] = set()


class RemoteError(Exception):
    """A failed server call, with its status reduced to a gRPC code name.

    Attributes:
        code: the gRPC status code name (``"UNAVAILABLE"``, ``"DEADLINE_EXCEEDED"``, ...; ``"UNKNOWN"`` if none).
        message: the server's or the client library's message.
        url: the server (``host:port``).
    """

    def __init__(self, code: str, message: str, url: str) -> None:
        super().__init__(f"{url}: {code}: {message}")
        self.code, self.message, self.url = code, message, url


def remote_error(error: BaseException, url: str) -> RemoteError:
    """``error`` from a client call to ``url`` as a :class:`RemoteError` (HTTP statuses become gRPC code names)."""
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        code = status.removeprefix("StatusCode.") if status.startswith("StatusCode.") else _HTTP_CODES.get(status)
        return RemoteError(code or "UNKNOWN", error.message() or str(error), url)
    if isinstance(error, TimeoutError) or type(error).__name__ == "Timeout":
        return RemoteError("DEADLINE_EXCEEDED", f"{type(error).__name__}: {error}", url)
    if isinstance(error, OSError):
        return RemoteError("UNAVAILABLE", f"{type(error).__name__}: {error}", url)
    return RemoteError("UNKNOWN", f"{type(error).__name__}: {error}", url)


@attrs.define
class Endpoint:
    """One server address and what is known about it (shared by all threads)."""

    url: str
    tls: bool
    shared_memory: bool
    healthy: bool = False
    verified: bool = False
    excluded: str = ""
    swept: bool = False
    recheck_at: float = 0.0
    last_failure: RemoteError | None = None
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def failed(self, error: RemoteError, recheck_s: float) -> None:
        """Mark the server unhealthy because of ``error``; it is health-checked again after ``recheck_s``. A server
        that did not answer (:data:`NOT_ANSWERING`) is not asked to unregister regions by any interface of this
        process until it answers a health check (:func:`not_answering`), and its model is verified again (signature,
        checksum) before it is called again: another server, with other models, may have taken its address."""
        self.healthy = False
        self.last_failure = error
        self.recheck_at = time.monotonic() + recheck_s
        if error.code in NOT_ANSWERING:
            _silent.add(self.url)
            self.verified = False

    def answered(self) -> None:
        """Mark the server healthy: it answered a health check."""
        self.healthy = True
        _silent.discard(self.url)


def not_answering(url: str) -> bool:
    """Whether the server at ``url`` failed to answer a call of this process and has not answered a health check
    since. Closing an interface does not ask such a server to unregister its regions: each ask would wait
    ``connect_timeout_s``; the registrations left are removed by the next client's sweep
    (:meth:`Connection.unregister_orphans`)."""
    return url in _silent


class _Region:
    """One system shared-memory region registered with one server, grown on demand and reused.

    While it exists, the region's file in ``/dev/shm`` is held with a shared ``flock``, which tells
    :func:`sweep_orphaned_regions` (in any process, any PID namespace) that its owner is alive.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = "/" + name
        self.size = 0
        self.handle: Any = None
        self.registered = False
        self._lock_fd = -1

    def ensure(self, connection: Connection, size: int, timeout: float) -> Any:
        """The region's handle, (re)created when it is smaller than ``size``, registered first when it is not."""
        created = size > self.size
        if created:
            new_size = max(size, int(self.size * 1.5), 1 << 16)
            self.release(connection, timeout)
            _held.add(self.name)  # before the file exists, so that no sweep takes it for an orphan
            try:
                self.handle = shm.create_shared_memory_region(self.name, self.key, new_size, create_only=True)
            except BaseException:
                _held.discard(self.name)
                raise
            self.size = new_size
            self._lock_fd = _hold(self.name)
        if not self.registered:
            if not created:  # registering again: drop whatever the server still has under this name
                try:
                    connection.call("unregister_system_shared_memory", self.name, timeout=timeout)
                except RemoteError as error:
                    if error.code in _TRANSPORT_CODES:
                        raise
            connection.call("register_system_shared_memory", self.name, self.key, self.size, timeout=timeout)
            self.registered = True
        return self.handle

    def release(self, connection: Connection | None, timeout: float) -> None:
        """Unregister (when ``connection`` is given and the server answers) and destroy the region; a server that
        does not answer is marked failed."""
        if self.handle is None:
            return
        if connection is not None and self.registered:
            try:
                connection.call("unregister_system_shared_memory", self.name, timeout=timeout)
            except RemoteError as error:  # the server may be gone; the region is still ours to destroy
                _log.debug("unregistering shared memory %s failed: %s", self.name, error)
                if error.code in _TRANSPORT_CODES:
                    connection.endpoint.failed(error, connection.config.health_recheck_s)
        shm.destroy_shared_memory_region(self.handle)  # on failure the handle is kept, to be released again
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
        self.handle, self.size, self.registered, self._lock_fd = None, 0, False, -1
        _held.discard(self.name)


def _release_regions(regions: tuple[_Region, ...], connection: Connection | None, timeout: float) -> None:
    """Release each of ``regions`` (:meth:`_Region.release`), going on past a failure; ``connection``'s server is
    asked to unregister them while it is not marked failed, by this connection or by :func:`not_answering`.

    Without a connection (the finalizer of a :class:`Connection` garbage-collected without :meth:`Connection.close`,
    or still open at interpreter exit) the regions are destroyed without calling their server; the server's
    registrations are removed by the next :meth:`Connection.unregister_orphans` on it (see :func:`is_orphaned`).
    """
    for region in regions:
        answers = connection is not None and connection.endpoint.healthy and not not_answering(connection.endpoint.url)
        asked = connection if answers else None
        try:
            region.release(asked, timeout)
        except Exception as error:  # releasing must go on for the other region
            _log.warning("releasing shared memory %s failed: %s", region.name, error)


def _hold(name: str) -> int:
    """Open ``/dev/shm/NAME`` and take a shared ``flock`` on it; the descriptor (-1 where that fails)."""
    try:
        fd = os.open(str(SHM / name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def region_owner(name: str) -> int | None:
    """The PID in a region name written by this module (:data:`REGION_PREFIX`), or None for other names."""
    match = _REGION_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def is_orphaned(name: str) -> bool:
    """Whether ``name`` is a region of this module whose owner is gone.

    True when the PID in the name is not a live process of this PID namespace and the region's file in
    ``/dev/shm`` is absent or held by nobody (its owner takes a shared ``flock`` while it lives, so a live
    owner in another PID namespace sharing ``/dev/shm`` is recognised too); for a region of this process, when it
    no longer holds it (a connection garbage-collected without :meth:`Connection.close`).
    """
    pid = region_owner(name)
    if pid == os.getpid():
        return name not in _held
    if pid is None or process_alive(pid):
        return False
    try:
        fd = os.open(str(SHM / name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def sweep_orphaned_regions() -> list[str]:
    """Unlink the ``/dev/shm`` files of regions whose owner died without releasing them (see :func:`is_orphaned`).

    A process killed with SIGKILL (with its whole process group, so Python's resource tracker dies too)
    leaves its regions behind; the next interface that uses shared memory removes them. Returns the names
    removed.
    """
    try:
        names = os.listdir(SHM)
    except OSError:
        return []
    removed = []
    for name in names:
        if region_owner(name) is None or not is_orphaned(name):
            continue
        try:
            os.unlink(str(SHM / name))
        except OSError as error:
            _log.debug("removing the orphaned shared memory %s failed: %s", name, error)
            continue
        removed.append(name)
    if removed:
        _log.info("removed %d orphaned shared-memory region(s) of dead processes: %s", len(removed), ", ".join(removed))
    return removed


_region_serial = itertools.count()


class Connection:
    """One thread's client for one endpoint, with its shared-memory regions.

    Args:
        endpoint: the server.
        client: a tritonclient ``InferenceServerClient`` for it, of the protocol in ``config``.
        config: the backend's options (model, protocol, compression, shared memory, timeouts).
        headers: request headers sent with every call (each call gets its own copy: tritonclient writes into it).
        model_signature: returns the model's signature; called only once the server has been verified
            (to build requests and estimate output sizes).
        infer_client: the client for inference requests, where it differs from ``client`` (HTTP, whose network
            timeout is fixed per client: ``client`` has ``connect_timeout_s``, this one the call deadline).

    A connection garbage-collected without :meth:`close` (or still open at exit) destroys its regions.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        client: Any,
        config: TritonConfig,
        headers: Mapping[str, str],
        model_signature: Callable[[], ModelSignature],
        infer_client: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.thread = threading.current_thread()
        self.client = client
        self.infer_client = client if infer_client is None else infer_client
        self.config = config
        self.headers = headers
        self.model_signature = model_signature
        self.grpc = config.protocol == "grpc"
        self.use_shared_memory = endpoint.shared_memory
        prefix = f"{REGION_PREFIX}{os.getpid()}-{next(_region_serial)}"
        self.inputs_region = _Region(prefix + "-in")
        self.outputs_region = _Region(prefix + "-out")
        self.output_sizes: dict[str, int] = {}
        weakref.finalize(self, _release_regions, (self.inputs_region, self.outputs_region), None, 0.0)
        # close() from another thread during a call leaves the regions to the calling thread (see close)
        self._state = threading.Lock()
        self._in_call = False
        self._closing = False
        self._clients_closed = False
        self._regions_forgotten = False  # the server forgot the regions, which are registered again for the next call

    def call(self, method: str, *args: Any, timeout: float | None = None, as_json: bool = False, **kwargs: Any) -> Any:
        """Call a client method with the headers (and, on gRPC, the deadline); errors become :class:`RemoteError`.

        ``infer`` goes through :attr:`infer_client`, everything else through :attr:`client`.
        """
        if self.grpc:
            kwargs["client_timeout"] = timeout
            if as_json:
                kwargs["as_json"] = True
        client = self.infer_client if method == "infer" else self.client
        try:  # a copy of the headers: tritonclient.http adds this request's lengths and encodings to the dict
            return getattr(client, method)(*args, headers=dict(self.headers), **kwargs)
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise remote_error(error, self.endpoint.url) from None

    def ready(self, timeout: float) -> None:
        """Raise :class:`RemoteError` unless the model (version) is ready on this server."""
        config = self.config
        if not self.call("is_model_ready", config.model_name, config.model_version, timeout=timeout):
            version = f" version {config.model_version!r}" if config.model_version else ""
            raise RemoteError("NOT_FOUND", f"model {config.model_name!r}{version} is not ready", self.endpoint.url)

    def signature(self, timeout: float) -> ModelSignature:
        """The model's signature from the server's metadata."""
        config = self.config
        meta = self.call("get_model_metadata", config.model_name, config.model_version, timeout=timeout, as_json=True)
        return ModelSignature(
            inputs=[_tensor_spec(item) for item in meta.get("inputs", [])],
            outputs=[_tensor_spec(item) for item in meta.get("outputs", [])],
        )

    def parameters(self, timeout: float) -> dict[str, str]:
        """The model config's string parameters."""
        config = self.config
        answer = self.call("get_model_config", config.model_name, config.model_version, timeout=timeout, as_json=True)
        answer = answer.get("config", answer)
        return {key: value.get("string_value", "") for key, value in answer.get("parameters", {}).items()}

    def infer(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...], timeout: float) -> dict:
        """Run one request within ``timeout`` seconds; outputs are copied out of shared memory before returning.

        Raises:
            RemoteError: the server (or the transport) refused the request, or the connection is closed
                (``UNAVAILABLE``).
            InputError: the tensors sent inside a gRPC request would exceed ``grpc_max_message_bytes``.
        """
        with self._state:
            if self._closing:
                raise RemoteError("UNAVAILABLE", "the connection is closed", self.endpoint.url)
            self._in_call = True
        try:
            return self._infer(inputs, output_names, time.monotonic() + timeout)
        except (RemoteError, BackendUnavailableError) as error:
            if self._closing:  # whatever the closed client made of it ("RPC on closed channel", no shared memory)
                raise RemoteError("UNAVAILABLE", f"the connection was closed during the call ({error})",
                                  self.endpoint.url) from None  # fmt: skip
            raise
        finally:
            with self._state:
                self._in_call = False
                closing = self._closing
            if closing:  # closed by another thread meanwhile: the regions are released now that nothing uses them
                self._close_now()

    def _infer(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...], deadline: float) -> dict:
        if self.use_shared_memory:
            outputs = self._infer_in_shared_memory(inputs, output_names, deadline)
            if outputs is not None:
                return outputs
        self._check_inline_size(inputs)
        request_inputs = [self._inline_input(name, array) for name, array in inputs.items()]
        result = self._send(request_inputs, output_names, {}, _left(deadline))
        return dict(zip(output_names, self._read_all(result, output_names, {}), strict=True))

    def _infer_in_shared_memory(
        self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...], deadline: float
    ) -> dict | None:
        """Run one request through the shared-memory regions; None where it must be sent inline instead.

        A server that no longer knows the regions has restarted (or dropped them; another server may have taken its
        address): the regions are registered again and its model verified again before the next call, which the
        ``UNAVAILABLE`` :class:`RemoteError` raised here leaves to the caller's retry. If the server forgets them again
        at once, the request goes inline.
        """
        try:
            request_inputs = self._inputs_in_shared_memory(inputs, _left(deadline))
            layout = self._outputs_layout(inputs, output_names, _left(deadline))
        except RemoteError as error:
            if error.code in _TRANSPORT_CODES:  # the server did not answer: retried or failed over by the caller
                raise
            self._give_up_shared_memory(error)
            return None
        except shm.SharedMemoryException as error:
            self._give_up_shared_memory(error)
            return None
        try:
            result = self._send(request_inputs, output_names, layout, _left(deadline))
        except RemoteError as error:
            if self.lost_registration(error):
                if not self._regions_forgotten:
                    self._regions_forgotten = True
                    for region in self.regions():
                        region.registered = False
                    self.endpoint.verified = False
                    names = ", ".join(region.name for region in self.regions())
                    raise RemoteError(
                        "UNAVAILABLE",
                        f"the server no longer knows the shared-memory regions {names} ({error.message}): it restarted "
                        "or dropped them; its model is verified and the regions registered again before the next call",
                        self.endpoint.url,
                    ) from None
                _log.warning("%s: %s; sending this request inline", self.endpoint.url, error.message)
                self._regions_forgotten = False
                return None
            if not (layout and _SLOT_TOO_SMALL in error.message):
                raise
            # an output was larger than its estimated slot: run inline this once and remember the sizes
            result = self._send(request_inputs, output_names, {}, _left(deadline))
            arrays = self._read_all(result, output_names, {})
            self.output_sizes.update({name: a.nbytes for name, a in zip(output_names, arrays, strict=True)})
            return dict(zip(output_names, arrays, strict=True))
        self._regions_forgotten = False
        return dict(zip(output_names, self._read_all(result, output_names, layout), strict=True))

    def regions(self) -> tuple[_Region, ...]:
        """This connection's shared-memory regions that exist now."""
        return tuple(region for region in (self.inputs_region, self.outputs_region) if region.handle is not None)

    def lost_registration(self, error: RemoteError) -> bool:
        """Whether ``error`` says the server does not know one of this connection's regions (it restarted)."""
        return "shared memory region" in error.message.lower() and any(
            f"'{region.name}'" in error.message for region in self.regions()
        )

    def _check_inline_size(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InputError` when ``arrays`` sent inside one gRPC request would exceed its size limit.

        The size is computed from the arrays (numeric: ``nbytes``; BYTES: 4 bytes of length per element plus
        its UTF-8 bytes) with a margin for the request's framing, before anything is copied or serialised.
        """
        limit = self.config.grpc_max_message_bytes
        if not self.grpc or not arrays:
            return
        sizes = {name: _wire_bytes(array) for name, array in arrays.items()}
        framing = 1024 + len(self.config.model_name) + sum(64 + len(name) + 11 * a.ndim for name, a in arrays.items())
        total = sum(sizes.values()) + framing
        if total <= limit:
            return
        largest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:3]
        tensors = ", ".join(f"{name!r} {sizes[name]} bytes" for name in largest)
        if self.config.shared_memory == "none":
            remedy = (
                "shared_memory = 'none' sends every input inside the request: set shared_memory = 'auto' or "
                "'system' (the server must run on this host) or send fewer rows per call"
            )
        elif all(array.dtype == object for array in arrays.values()) and self.use_shared_memory:
            remedy = "BYTES (string) inputs always travel inside the request: send fewer rows per call"
        else:
            remedy = (
                f"shared memory is not used with {self.endpoint.url} (not on this host, or the server cannot open "
                "the regions): run the server on this host or send fewer rows per call"
            )
        raise InputError(
            f"triton model {self.config.model_name!r} on {self.endpoint.url}: the gRPC request would be about "
            f"{total} bytes ({tensors}), over grpc_max_message_bytes = {limit}; {remedy}"
        )

    def _send(
        self,
        request_inputs: list[Any],
        output_names: tuple[str, ...],
        layout: dict[str, tuple[int, int]],
        timeout: float,
    ) -> Any:
        module = grpcclient if self.grpc else httpclient
        outputs = []
        for name in output_names:
            requested = module.InferRequestedOutput(name)
            if name in layout:
                offset, size = layout[name]
                requested.set_shared_memory(self.outputs_region.name, size, offset)
            outputs.append(requested)
        config = self.config
        options: dict[str, Any] = {"model_version": config.model_version, "outputs": outputs}
        if config.compression != "none":
            if self.grpc:
                options["compression_algorithm"] = config.compression
            else:
                options["request_compression_algorithm"] = config.compression
                options["response_compression_algorithm"] = config.compression
        return self.call("infer", config.model_name, request_inputs, timeout=timeout, **options)

    def _inline_input(self, name: str, array: np.ndarray) -> Any:
        module = grpcclient if self.grpc else httpclient
        request_input = module.InferInput(name, list(array.shape), triton_datatype(self._dtype(name)))
        request_input.set_data_from_numpy(array)
        return request_input

    def _dtype(self, name: str) -> str:
        return self.model_signature().input(name).dtype

    def _inputs_in_shared_memory(self, inputs: dict[str, np.ndarray], timeout: float) -> list[Any]:
        packed = {name: array for name, array in inputs.items() if array.dtype != object and array.nbytes}
        self._check_inline_size({name: array for name, array in inputs.items() if name not in packed})
        size = sum(_aligned(array.nbytes) for array in packed.values())
        handle = self.inputs_region.ensure(self, size, timeout) if packed else None
        module = grpcclient if self.grpc else httpclient
        request_inputs, offset = [], 0
        for name, array in inputs.items():
            if name not in packed:
                request_inputs.append(self._inline_input(name, array))
                continue
            shm.set_shared_memory_region(handle, [array], offset=offset)
            request_input = module.InferInput(name, list(array.shape), triton_datatype(self._dtype(name)))
            request_input.set_shared_memory(self.inputs_region.name, array.nbytes, offset)
            request_inputs.append(request_input)
            offset += _aligned(array.nbytes)
        return request_inputs

    def _outputs_layout(
        self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...], timeout: float
    ) -> dict[str, tuple[int, int]]:
        """(offset, size) of each output in the output region.

        Sizes are estimated from the signature with each -1 dimension taken as the largest leading input
        dimension, or are the sizes last seen for that output if larger (BYTES outputs are not placed).
        """
        rows = max((array.shape[0] for array in inputs.values() if array.ndim), default=1)
        layout, offset = {}, 0
        for name in output_names:
            spec = self.model_signature().output(name)
            if spec.dtype == "bytes":
                continue
            size = _aligned(max(_estimate_bytes(spec, rows), self.output_sizes.get(name, 0), 1))
            layout[name] = (offset, size)
            offset += size
        if layout:
            self.outputs_region.ensure(self, offset, timeout)
            last = max(layout, key=lambda name: layout[name][0])  # the last slot gets the rest of the region
            layout[last] = (layout[last][0], self.outputs_region.size - layout[last][0])
        return layout

    def _read_all(
        self, result: Any, output_names: tuple[str, ...], layout: dict[str, tuple[int, int]]
    ) -> list[np.ndarray]:
        arrays = []
        for name in output_names:
            if name in layout:
                datatype, shape = _output_info(result.get_output(name))
                view = shm.get_contents_as_numpy(
                    self.outputs_region.handle, triton_to_np_dtype(datatype), shape, layout[name][0]
                )
                arrays.append(np.array(view, copy=True))
                del view
            else:
                array = result.as_numpy(name)
                arrays.append(array if array.flags.writeable else array.copy())
        return arrays

    def _give_up_shared_memory(self, error: Exception) -> None:
        if self.config.shared_memory == "system":
            raise BackendUnavailableError(
                f"{self.endpoint.url}: system shared memory could not be set up ({error}); the server must run on "
                "this host and share its /dev/shm, or set shared_memory = 'auto' or 'none'"
            ) from None
        _log.info("%s: not using shared memory (%s)", self.endpoint.url, error)
        self.release_regions()
        self.use_shared_memory = False

    def release_regions(self) -> None:
        """Unregister this connection's shared-memory regions from the server and destroy them.

        A server marked failed (a call or an unregistering it did not answer) is not asked: closing an interface
        whose server hangs would otherwise wait ``connect_timeout_s`` for each region of each thread. Its
        registrations of the regions are removed by the next client's sweep (:meth:`unregister_orphans`).
        """
        _release_regions((self.inputs_region, self.outputs_region), self, self.config.connect_timeout_s)

    def unregister_orphans(self, timeout: float) -> list[str]:
        """Unregister from the server the regions of this module whose owner is gone (see :func:`is_orphaned`).

        A client killed without releasing its regions leaves them registered, and mapped by the server.
        Returns the names unregistered.
        """
        answer = self.call("get_system_shared_memory_status", timeout=timeout, as_json=True)
        entries = answer.get("regions", {}).values() if isinstance(answer, Mapping) else answer
        names = [entry.get("name", "") for entry in entries if isinstance(entry, Mapping)]
        removed = []
        for name in names:
            if region_owner(name) is not None and is_orphaned(name):
                self.call("unregister_system_shared_memory", name, timeout=timeout)
                removed.append(name)
        if removed:
            _log.info("%s: unregistered shared memory of dead processes: %s", self.endpoint.url, ", ".join(removed))
        return removed

    def close(self) -> None:
        """Release the regions and close the client(s); idempotent.

        Called by another thread while this connection's thread is in a call, it does not destroy the regions under
        that call, which may be writing its inputs into them or reading its outputs: it closes a gRPC client, which
        ends the call, and leaves the rest to the calling thread, which does it as the call returns (an HTTP call
        already sent then still returns its outputs).
        """
        with self._state:
            self._closing = True
            busy = self._in_call
        if not busy:
            self._close_now()
        elif self.grpc:
            self._close_clients()

    def _close_now(self) -> None:
        self.release_regions()
        self._close_clients()

    def _close_clients(self) -> None:
        with self._state:
            if self._clients_closed:
                return
            self._clients_closed = True
        self.client.close()
        if self.infer_client is not self.client:
            self.infer_client.close()


def _left(deadline: float) -> float:
    """Seconds left until ``deadline`` (a small positive floor, so an expired deadline fails as a timeout)."""
    return max(deadline - time.monotonic(), 0.001)


def _wire_bytes(array: np.ndarray) -> int:
    """Bytes of ``array`` in a request: ``nbytes``, or for BYTES tensors a 4-byte length plus the bytes per element."""
    if array.dtype != object:
        return int(array.nbytes)
    return sum(4 + len(item if isinstance(item, bytes) else str(item).encode()) for item in array.flat)


def _aligned(size: int) -> int:
    return -(-size // _ALIGNMENT) * _ALIGNMENT


def _estimate_bytes(spec: TensorSpec, rows: int) -> int:
    count = int(np.prod([dim if dim >= 0 else rows for dim in spec.shape])) if spec.shape else 1
    return count * numpy_dtype(spec.dtype).itemsize


def _output_info(info: Any) -> tuple[str, list[int]]:
    if isinstance(info, Mapping):
        return info["datatype"], [int(dim) for dim in info["shape"]]
    return info.datatype, [int(dim) for dim in info.shape]


def _tensor_spec(item: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(item["name"], interface_dtype(item["datatype"]), [int(dim) for dim in item.get("shape", [])])
