"""One thread's connection to one Triton server: the client calls, shared memory and the error mapping.

- every thread has its own client per server (the HTTP client is not thread-safe), and, with shared memory on,
  its own system shared-memory regions, reused across calls and released by :meth:`Connection.close`;
- inputs are packed into one input region, outputs into one output region with slots estimated from the
  signature; an output larger than its slot is fetched inline once and its size remembered;
- every failed client call becomes a :class:`RemoteError` whose status is a gRPC code name (HTTP statuses,
  timeouts and socket errors are mapped to one), so retry and failover decisions do not depend on the protocol;
- headers and the token are sent with every call and never logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
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
from inference_iface.errors import BackendUnavailableError
from inference_iface.signature import ModelSignature, TensorSpec

_log = logging.getLogger(__name__)

_HTTP_CODES = {"400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED", "404": "NOT_FOUND"}
_HTTP_CODES |= {"408": "DEADLINE_EXCEEDED", "429": "RESOURCE_EXHAUSTED", "500": "INTERNAL", "503": "UNAVAILABLE"}
_HTTP_CODES |= {"504": "DEADLINE_EXCEEDED"}
_ALIGNMENT = 64  # byte alignment of tensors packed into one shared-memory region
_SLOT_TOO_SMALL = "shared memory size specified with the request for output"  # Triton's message


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
    recheck_at: float = 0.0
    last_failure: RemoteError | None = None
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def failed(self, error: RemoteError, recheck_s: float) -> None:
        """Mark the server unhealthy because of ``error``; it is health-checked again after ``recheck_s``."""
        self.healthy = False
        self.last_failure = error
        self.recheck_at = time.monotonic() + recheck_s


class _Region:
    """One system shared-memory region registered with one server, grown on demand and reused."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = "/" + name
        self.size = 0
        self.handle: Any = None

    def ensure(self, connection: Connection, size: int, timeout: float) -> Any:
        """The region's handle, (re)created and registered first when it is smaller than ``size``."""
        if size > self.size:
            self.release(connection, timeout)
            new_size = max(size, int(self.size * 1.5), 1 << 16)
            self.handle = shm.create_shared_memory_region(self.name, self.key, new_size, create_only=True)
            self.size = new_size
            connection.call("register_system_shared_memory", self.name, self.key, new_size, timeout=timeout)
        return self.handle

    def release(self, connection: Connection, timeout: float) -> None:
        """Unregister (if the server answers) and destroy the region."""
        if self.handle is None:
            return
        try:
            connection.call("unregister_system_shared_memory", self.name, timeout=timeout)
        except RemoteError as error:  # the server may be gone; the region is still ours to destroy
            _log.debug("unregistering shared memory %s failed: %s", self.name, error)
        shm.destroy_shared_memory_region(self.handle)
        self.handle, self.size = None, 0


_region_serial = itertools.count()


class Connection:
    """One thread's client for one endpoint, with its shared-memory regions.

    Args:
        endpoint: the server.
        client: a tritonclient ``InferenceServerClient`` for it, of the protocol in ``config``.
        config: the backend's options (model, protocol, compression, shared memory, timeouts).
        headers: request headers sent with every call.
        model_signature: returns the model's signature; called only once the server has been verified
            (to build requests and estimate output sizes).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        client: Any,
        config: TritonConfig,
        headers: Mapping[str, str],
        model_signature: Callable[[], ModelSignature],
    ) -> None:
        self.endpoint = endpoint
        self.thread = threading.current_thread()
        self.client = client
        self.config = config
        self.headers = headers
        self.model_signature = model_signature
        self.grpc = config.protocol == "grpc"
        self.use_shared_memory = endpoint.shared_memory
        prefix = f"trkx-{os.getpid()}-{next(_region_serial)}"
        self.inputs_region = _Region(prefix + "-in")
        self.outputs_region = _Region(prefix + "-out")
        self.output_sizes: dict[str, int] = {}

    def call(self, method: str, *args: Any, timeout: float | None = None, as_json: bool = False, **kwargs: Any) -> Any:
        """Call a client method with the headers (and, on gRPC, the deadline); errors become :class:`RemoteError`."""
        if self.grpc:
            kwargs["client_timeout"] = timeout
            if as_json:
                kwargs["as_json"] = True
        try:
            return getattr(self.client, method)(*args, headers=self.headers, **kwargs)
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
        """Run one request; outputs are copied out of shared memory before returning."""
        layout: dict[str, tuple[int, int]] = {}
        if self.use_shared_memory:
            try:
                request_inputs = self._inputs_in_shared_memory(inputs, timeout)
                layout = self._outputs_layout(inputs, output_names, timeout)
            except (RemoteError, shm.SharedMemoryException) as error:
                self._give_up_shared_memory(error)
                return self.infer(inputs, output_names, timeout)
        else:
            request_inputs = [self._inline_input(name, array) for name, array in inputs.items()]
        try:
            result = self._send(request_inputs, output_names, layout, timeout)
        except RemoteError as error:
            if not (layout and _SLOT_TOO_SMALL in error.message):
                raise
            # an output was larger than its estimated slot: run inline this once and remember the sizes
            layout = {}
            result = self._send(request_inputs, output_names, layout, timeout)
            arrays = self._read_all(result, output_names, layout)
            self.output_sizes.update({name: array.nbytes for name, array in zip(output_names, arrays, strict=True)})
            return dict(zip(output_names, arrays, strict=True))
        return dict(zip(output_names, self._read_all(result, output_names, layout), strict=True))

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
        """Unregister and destroy this connection's shared-memory regions."""
        for region in (self.inputs_region, self.outputs_region):
            try:
                region.release(self, self.config.connect_timeout_s)
            except Exception as error:  # releasing must go on for the other region
                _log.warning("releasing shared memory %s failed: %s", region.name, error)

    def close(self) -> None:
        """Release the regions and close the client."""
        self.release_regions()
        self.client.close()


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
