"""The remote backend: a model served by an NVIDIA Triton Inference Server, behind :class:`InferenceInterface`.

Configured by :class:`TritonConfig`::

    create_inference({"backend": "triton", "url": "127.0.0.1:8001", "model_name": "embedding"})
    create_inference({"backend": "triton", "urls": ["a:8001", "b:8001"], "model_name": "embedding",
                      "fallback": "local", "fallback_model_path": "embedding.onnx"})

Behaviour, in brief (docs/triton.md has the details):

- the signature comes from the server's model metadata and may be checked against ``expected_signature``
  and, through the ``onnx_sha256`` model parameter written by :mod:`backends.model_repository`, against
  ``model_checksum``;
- ``timeout_s`` bounds one whole :meth:`~InferenceInterface.infer` call, retries and failover included;
  ``attempt_timeout_s`` (when set) bounds each attempt, so a slow server can be failed over when
  ``"DEADLINE_EXCEEDED"`` is in ``retry_on``;
- only errors whose status is in ``retry_on`` are retried (with exponential backoff from
  ``retry_backoff_s``) or failed over; a bad input never reaches the server (the interface validates it);
- ``urls`` are used round-robin; a server that fails is skipped and re-admitted after a health check
  (at most every ``health_recheck_s``); ``fallback = "local"`` starts the embedded server
  (:mod:`backends.triton_server`) when no server answers;
- every thread has its own client per server (the HTTP client is not thread-safe), and, with shared
  memory on, its own system shared-memory regions, reused across calls and released by :meth:`close`;
- TLS files and a bearer token may come from the environment (``TRKX_TRITON_ROOT_CERTIFICATES``,
  ``TRKX_TRITON_PRIVATE_KEY``, ``TRKX_TRITON_CERTIFICATE_CHAIN``, ``TRKX_TRITON_TOKEN``); headers and the
  token are never logged nor shown by :meth:`describe` or the config's repr.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import itertools
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import attrs
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from backends.model_repository import CHECKSUM_PARAMETER, add_onnx_model
from backends.triton_server import TritonServer, TritonServerConfig
from backends.triton_types import interface_dtype, triton_datatype
from inference_iface.dtypes import numpy_dtype
from inference_iface.errors import (
    BackendUnavailableError,
    ConfigError,
    InferenceTimeoutError,
    ModelError,
)
from inference_iface.interface import InferenceInterface
from inference_iface.registry import BackendConfig
from inference_iface.signature import ModelSignature, TensorSpec

_log = logging.getLogger(__name__)

ENV_ROOT_CERTIFICATES = "TRKX_TRITON_ROOT_CERTIFICATES"
ENV_PRIVATE_KEY = "TRKX_TRITON_PRIVATE_KEY"
ENV_CERTIFICATE_CHAIN = "TRKX_TRITON_CERTIFICATE_CHAIN"
ENV_TOKEN = "TRKX_TRITON_TOKEN"

GRPC_DEFAULT_PORT = 8001
HTTP_DEFAULT_PORT = 8000

Protocol = Literal["grpc", "http"]
SharedMemoryMode = Literal["auto", "system", "none"]
Compression = Literal["none", "gzip", "deflate"]
Fallback = Literal["none", "local"]
#: Status codes that may be listed in ``retry_on`` (transient by nature; never a bad input).
RETRYABLE_CODES: tuple[str, ...] = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")

_HTTP_CODES = {"400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED", "404": "NOT_FOUND"}
_HTTP_CODES |= {"408": "DEADLINE_EXCEEDED", "429": "RESOURCE_EXHAUSTED", "500": "INTERNAL", "503": "UNAVAILABLE"}
_HTTP_CODES |= {"504": "DEADLINE_EXCEEDED"}
_ALIGNMENT = 64  # byte alignment of tensors packed into one shared-memory region
_GRPC_MAX_MESSAGE = 2**31 - 1
_TLS_WORDS = ("ssl", "tls", "certificate", "handshake")
_SLOT_TOO_SMALL = "shared memory size specified with the request for output"  # Triton's message


def _retry_codes(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [code for code in value if code not in RETRYABLE_CODES]
    if bad:
        raise ValueError(f"retry_on: {', '.join(bad)} cannot be retried; choose from {', '.join(RETRYABLE_CODES)}")


@attrs.frozen(kw_only=True)
class TritonConfig(BackendConfig):
    """Options of the ``triton`` backend (job-options table keys are the attribute names).

    Attributes:
        url: one server, ``host:port`` (gRPC: no scheme, no path; HTTP: ``http://``/``https://`` allowed).
        urls: several servers, used round-robin with failover (``url`` is added in front when both are set).
        protocol: ``"grpc"`` (default) or ``"http"``.
        model_name: the model's name in the server's repository.
        model_version: a pinned version, or ``""`` for the server's latest.
        expected_signature: when set, the server's signature must match it (names, dtypes, shapes; -1 on
            either side matches any size).
        model_checksum: when set, the hex SHA-256 of the ONNX file the server must be serving (read from the
            model's ``onnx_sha256`` parameter); a ``sha256:`` prefix is allowed.
        timeout_s: deadline of one whole call, retries and failover included.
        attempt_timeout_s: deadline of one attempt (0 = whatever is left of ``timeout_s``).
        connect_timeout_s: deadline of health checks and of connecting (HTTP).
        retries: extra rounds over all servers after the first failed one.
        retry_backoff_s: sleep before the first extra round; doubles every round.
        retry_on: status codes that are retried and failed over (from :data:`RETRYABLE_CODES`).
        health_recheck_s: how long a failed server is left alone before it is health-checked again.
        fallback: ``"local"`` starts the embedded tritonserver when no server answers.
        fallback_model_path: ONNX file the local fallback serves (as ``model_name``).
        fallback_repository: or a whole model repository for the local fallback.
        fallback_instances: model instances in the fallback server.
        fallback_startup_timeout_s: how long the fallback server may take to start.
        tls: use TLS (implied by any certificate option or environment variable).
        root_certificates, private_key, certificate_chain: PEM files (env: ``TRKX_TRITON_*``).
        headers: extra request headers (never logged).
        token_env: environment variable holding a bearer token sent as ``authorization`` (never logged).
        compression: ``"none"``, ``"gzip"`` or ``"deflate"`` for requests (and HTTP responses).
        shared_memory: ``"auto"`` (system shared memory when the server is on loopback and accepts it),
            ``"system"`` (required) or ``"none"``.
        async_workers: threads serving :meth:`TritonInference.infer_async`.
    """

    url: str = ""
    urls: tuple[str, ...] = ()
    protocol: Protocol = attrs.field(default="grpc", validator=attrs.validators.in_(("grpc", "http")))
    model_name: str = ""
    model_version: str = ""
    expected_signature: ModelSignature | None = None
    model_checksum: str = ""
    timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    attempt_timeout_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    connect_timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    retry_backoff_s: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    retry_on: tuple[str, ...] = attrs.field(default=("UNAVAILABLE",), validator=_retry_codes)
    health_recheck_s: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    fallback: Fallback = attrs.field(default="none", validator=attrs.validators.in_(("none", "local")))
    fallback_model_path: str = ""
    fallback_repository: str = ""
    fallback_instances: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    fallback_startup_timeout_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    tls: bool = False
    root_certificates: str = ""
    private_key: str = ""
    certificate_chain: str = ""
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    token_env: str = ENV_TOKEN
    compression: Compression = attrs.field(default="none", validator=attrs.validators.in_(("none", "gzip", "deflate")))
    shared_memory: SharedMemoryMode = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "system", "none"))
    )
    async_workers: int = attrs.field(default=4, validator=attrs.validators.ge(1))


@attrs.frozen(kw_only=True)
class ModelStats:
    """Server-side statistics of the model on one server (cumulative since the server started)."""

    url: str
    model_name: str
    model_version: str
    inference_count: int
    execution_count: int
    success_count: int
    failure_count: int
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float

    @property
    def request_ms(self) -> float:
        """Mean server-side time per successful request (queue plus compute), in milliseconds."""
        return self.queue_ms + self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms


def parse_url(url: str, protocol: Protocol) -> tuple[str, bool]:
    """Check one server address; returns (``host:port``, whether the URL asked for TLS via ``https://``).

    Raises:
        ConfigError: a scheme or path in a gRPC URL, a path in an HTTP URL, a bad port, or the other
            protocol's well-known port (8000 with gRPC, 8001 with HTTP), each with a hint.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    use_tls = False
    if sep:
        if protocol == "grpc":
            raise ConfigError(
                f"gRPC URL {url!r} must be host:port without a scheme (write {rest.split('/')[0]!r}); "
                "for the HTTP endpoint set protocol = 'http'"
            )
        if scheme not in ("http", "https"):
            raise ConfigError(f"HTTP URL {url!r}: the scheme must be http or https, got {scheme!r}")
        use_tls = scheme == "https"
        text = rest
    try:
        parts = urllib.parse.urlsplit("//" + text)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"{protocol} URL {url!r} is malformed: {error}") from None
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{protocol} URL {url!r} must be host:port with no path (got path {parts.path!r})")
    if not parts.hostname:
        raise ConfigError(f"{protocol} URL {url!r} has no host")
    default, other, other_name = (
        (GRPC_DEFAULT_PORT, HTTP_DEFAULT_PORT, "HTTP")
        if protocol == "grpc"
        else (HTTP_DEFAULT_PORT, GRPC_DEFAULT_PORT, "gRPC")
    )
    if port == other:
        raise ConfigError(
            f"{protocol} URL {url!r} uses port {other}, Triton's default {other_name} port; its {protocol} port is "
            f"{default} (or set protocol = {'http' if protocol == 'grpc' else 'grpc'!r})"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{host}:{port or default}", use_tls


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine's loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RemoteError(Exception):
    """A failed server call, with its status reduced to a gRPC code name."""

    def __init__(self, code: str, message: str, url: str) -> None:
        super().__init__(f"{url}: {code}: {message}")
        self.code, self.message, self.url = code, message, url


def _remote_error(error: BaseException, url: str) -> _RemoteError:
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        code = status.removeprefix("StatusCode.") if status.startswith("StatusCode.") else _HTTP_CODES.get(status)
        return _RemoteError(code or "UNKNOWN", error.message() or str(error), url)
    if isinstance(error, TimeoutError) or type(error).__name__ == "Timeout":
        return _RemoteError("DEADLINE_EXCEEDED", f"{type(error).__name__}: {error}", url)
    if isinstance(error, OSError):
        return _RemoteError("UNAVAILABLE", f"{type(error).__name__}: {error}", url)
    return _RemoteError("UNKNOWN", f"{type(error).__name__}: {error}", url)


@attrs.define
class _Endpoint:
    """One server address and what is known about it."""

    url: str
    tls: bool
    shared_memory: bool
    healthy: bool = False
    verified: bool = False
    excluded: str = ""
    recheck_at: float = 0.0
    last_failure: _RemoteError | None = None
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def failed(self, error: _RemoteError, recheck_s: float) -> None:
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

    def ensure(self, connection: _Connection, size: int, timeout: float) -> Any:
        """The region's handle, (re)created and registered first when it is smaller than ``size``."""
        if size > self.size:
            self.release(connection, timeout)
            new_size = max(size, int(self.size * 1.5), 1 << 16)
            self.handle = shm.create_shared_memory_region(self.name, self.key, new_size, create_only=True)
            self.size = new_size
            connection.call("register_system_shared_memory", self.name, self.key, new_size, timeout=timeout)
        return self.handle

    def release(self, connection: _Connection, timeout: float) -> None:
        """Unregister (if the server answers) and destroy the region."""
        if self.handle is None:
            return
        try:
            connection.call("unregister_system_shared_memory", self.name, timeout=timeout)
        except _RemoteError as error:  # the server may be gone; the region is still ours to destroy
            _log.debug("unregistering shared memory %s failed: %s", self.name, error)
        shm.destroy_shared_memory_region(self.handle)
        self.handle, self.size = None, 0


_region_serial = itertools.count()


class _Connection:
    """One thread's client for one endpoint, with its shared-memory regions."""

    def __init__(self, owner: TritonInference, endpoint: _Endpoint) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.thread = threading.current_thread()
        self.client = owner._new_client(endpoint)
        self.grpc = owner.config.protocol == "grpc"
        self.use_shared_memory = endpoint.shared_memory
        prefix = f"trkx-{os.getpid()}-{next(_region_serial)}"
        self.inputs_region = _Region(prefix + "-in")
        self.outputs_region = _Region(prefix + "-out")
        self.output_sizes: dict[str, int] = {}

    def call(self, method: str, *args: Any, timeout: float | None = None, as_json: bool = False, **kwargs: Any) -> Any:
        """Call a client method with the headers (and, on gRPC, the deadline); errors become :class:`_RemoteError`."""
        if self.grpc:
            kwargs["client_timeout"] = timeout
            if as_json:
                kwargs["as_json"] = True
        try:
            return getattr(self.client, method)(*args, headers=self.owner._headers, **kwargs)
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise _remote_error(error, self.endpoint.url) from None

    def ready(self, timeout: float) -> None:
        """Raise :class:`_RemoteError` unless the model (version) is ready on this server."""
        config = self.owner.config
        if not self.call("is_model_ready", config.model_name, config.model_version, timeout=timeout):
            version = f" version {config.model_version!r}" if config.model_version else ""
            raise _RemoteError("NOT_FOUND", f"model {config.model_name!r}{version} is not ready", self.endpoint.url)

    def signature(self, timeout: float) -> ModelSignature:
        """The model's signature from the server's metadata."""
        config = self.owner.config
        meta = self.call("get_model_metadata", config.model_name, config.model_version, timeout=timeout, as_json=True)
        return ModelSignature(
            inputs=[_tensor_spec(item) for item in meta.get("inputs", [])],
            outputs=[_tensor_spec(item) for item in meta.get("outputs", [])],
        )

    def parameters(self, timeout: float) -> dict[str, str]:
        """The model config's string parameters."""
        config = self.owner.config
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
            except (_RemoteError, shm.SharedMemoryException) as error:
                self._give_up_shared_memory(error)
                return self.infer(inputs, output_names, timeout)
        else:
            request_inputs = [self._inline_input(name, array) for name, array in inputs.items()]
        try:
            result = self._send(request_inputs, output_names, layout, timeout)
        except _RemoteError as error:
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
        config = self.owner.config
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
        return self.owner.signature.input(name).dtype

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
            spec = self.owner.signature.output(name)
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
        if self.owner.config.shared_memory == "system":
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
                region.release(self, self.owner.config.connect_timeout_s)
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


def _compatible(expected: ModelSignature, served: ModelSignature) -> list[str]:
    """Differences between an expected and a served signature (empty when they match)."""
    problems = []
    for kind, want, got in (("input", expected.inputs, served.inputs), ("output", expected.outputs, served.outputs)):
        got_by_name = {spec.name: spec for spec in got}
        if {spec.name for spec in want} != set(got_by_name):
            problems.append(f"{kind}s {[s.name for s in want]} expected, served {[s.name for s in got]}")
            continue
        for spec in want:
            other = got_by_name[spec.name]
            same_shape = spec.rank == other.rank and all(
                a == b or a < 0 or b < 0 for a, b in zip(spec.shape, other.shape, strict=True)
            )
            if spec.dtype != other.dtype or not same_shape:
                problems.append(f"{kind} {spec!r} expected, served {other!r}")
    return problems


class TritonInference(InferenceInterface):
    """A model on one or more Triton servers (see the module docstring for the behaviour)."""

    config_class = TritonConfig

    def __init__(self, config: TritonConfig) -> None:
        super().__init__(config.cast_policy)
        if not config.model_name:
            raise ConfigError("backend 'triton': 'model_name' is not set")
        self.config = config
        urls = ((config.url,) if config.url else ()) + tuple(config.urls)
        if not urls and config.fallback == "none":
            raise ConfigError("backend 'triton': set 'url' or 'urls' (or fallback = 'local')")
        if config.fallback == "local" and not (config.fallback_model_path or config.fallback_repository):
            raise ConfigError(
                "backend 'triton': fallback = 'local' needs 'fallback_model_path' or 'fallback_repository'"
            )
        self._root_certificates = config.root_certificates or os.environ.get(ENV_ROOT_CERTIFICATES, "")
        self._private_key = config.private_key or os.environ.get(ENV_PRIVATE_KEY, "")
        self._certificate_chain = config.certificate_chain or os.environ.get(ENV_CERTIFICATE_CHAIN, "")
        for path in (self._root_certificates, self._private_key, self._certificate_chain):
            if path and not Path(path).is_file():
                raise ConfigError(f"backend 'triton': TLS file {path!r} does not exist")
        tls_files = bool(self._root_certificates or self._private_key or self._certificate_chain)
        self._headers = self._request_headers()
        parsed = [parse_url(url, config.protocol) for url in urls]
        self._endpoints: tuple[_Endpoint, ...] = tuple(
            _Endpoint(url=address, tls=config.tls or tls_files or https, shared_memory=self._wants_shm(address))
            for address, https in dict(parsed).items()
        )
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._round_robin = itertools.count()
        self._signature: ModelSignature | None = None
        self._fallback_server: TritonServer | None = None
        self._fallback_dir: tempfile.TemporaryDirectory[str] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # --- set-up -------------------------------------------------------------------------------------------
    def _request_headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        token = os.environ.get(self.config.token_env, "") if self.config.token_env else ""
        if token:
            headers["authorization"] = f"Bearer {token}"
        if self.config.protocol == "grpc":  # gRPC metadata keys must be lower case
            headers = {key.lower(): value for key, value in headers.items()}
        return headers

    def _wants_shm(self, address: str) -> bool:
        mode = self.config.shared_memory
        return mode == "system" or (mode == "auto" and is_loopback(address))

    def _connect(self) -> None:
        """Health-check every server; start the local fallback when none answers; fix the signature."""
        failures = [
            endpoint.last_failure
            for endpoint in self._endpoints
            if not self._probe(endpoint, self.config.connect_timeout_s, strict=True) and endpoint.last_failure
        ]
        if not any(endpoint.healthy for endpoint in self._endpoints):
            details = "; ".join(map(str, failures))
            if self.config.fallback == "local":
                if self._endpoints:
                    _log.warning("no Triton server answered (%s); starting the local fallback", details)
                self._start_fallback()
            elif failures and all(failure.code == "NOT_FOUND" for failure in failures):
                raise ModelError(f"triton: {details}")
            else:
                raise BackendUnavailableError(f"triton: no server answered: {self._with_hint(details)}")

    def _new_client(self, endpoint: _Endpoint) -> Any:
        config = self.config
        if config.protocol == "http":
            ssl_options = {}
            for key, path in (
                ("ca_certs", self._root_certificates),
                ("keyfile", self._private_key),
                ("certfile", self._certificate_chain),
            ):
                if path:
                    ssl_options[key] = path
            timeout = config.attempt_timeout_s or config.timeout_s
            return httpclient.InferenceServerClient(
                endpoint.url,
                connection_timeout=config.connect_timeout_s,
                network_timeout=timeout,
                ssl=endpoint.tls,
                ssl_options=ssl_options or None,
            )
        channel_args = [
            ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE),
            ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE),
            # reconnect quickly to a server that comes back (gRPC's default backoff grows to 2 minutes)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        return grpcclient.InferenceServerClient(
            endpoint.url,
            ssl=endpoint.tls,
            root_certificates=self._root_certificates or None,
            private_key=self._private_key or None,
            certificate_chain=self._certificate_chain or None,
            channel_args=channel_args,
        )

    def _connection(self, endpoint: _Endpoint) -> _Connection:
        """This thread's connection to ``endpoint`` (made on first use)."""
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        connection = connections.get(endpoint.url)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise BackendUnavailableError(f"{self.describe()}: the interface has been closed")
                orphaned = [c for c in self._connections if not c.thread.is_alive()]
                self._connections = [c for c in self._connections if c.thread.is_alive()]
                connection = connections[endpoint.url] = _Connection(self, endpoint)
                self._connections.append(connection)
            for old in orphaned:  # connections of threads that have ended: release their regions now
                old.close()
        return connection

    def _probe(self, endpoint: _Endpoint, timeout: float, strict: bool = False) -> bool:
        """Health-check ``endpoint`` (and verify its model once); mark it healthy or failed.

        With ``strict``, a server serving a different model raises :class:`ModelError` instead of being excluded.
        """
        if endpoint.excluded:
            return False
        timeout = min(timeout, self.config.connect_timeout_s)
        try:
            connection = self._connection(endpoint)
            connection.ready(timeout)
            if not endpoint.verified:
                self._verify(connection, timeout)
                endpoint.verified = True
        except _RemoteError as error:
            endpoint.failed(error, self.config.health_recheck_s)
            return False
        except ModelError as error:
            if strict:
                raise
            endpoint.excluded = str(error)
            endpoint.failed(_RemoteError("FAILED_PRECONDITION", str(error), endpoint.url), self.config.health_recheck_s)
            _log.error("%s", error)
            return False
        endpoint.healthy = True
        return True

    def _verify(self, connection: _Connection, timeout: float) -> None:
        url = connection.endpoint.url
        served = connection.signature(timeout)
        with self._lock:
            reference = self._signature
            if reference is None:
                expected = self.config.expected_signature
                problems = _compatible(expected, served) if expected is not None else []
                if problems:
                    raise ModelError(
                        f"triton model {self.config.model_name!r} on {url} does not match expected_signature: "
                        + "; ".join(problems)
                    )
                self._signature = served
            elif served != reference:
                raise ModelError(
                    f"triton model {self.config.model_name!r} on {url} has signature {served!r}, "
                    f"other servers have {reference!r}"
                )
        if self.config.model_checksum:
            want = self.config.model_checksum.lower().removeprefix("sha256:")
            got = connection.parameters(timeout).get(CHECKSUM_PARAMETER, "")
            if got != want:
                found = f"sha256 {got}" if got else f"no {CHECKSUM_PARAMETER!r} parameter"
                raise ModelError(
                    f"triton model {self.config.model_name!r} on {url}: model_checksum {want} expected, "
                    f"the server reports {found}"
                )

    def _start_fallback(self) -> None:
        """Start the embedded server on the fallback model and add it as an endpoint (once)."""
        with self._lock:
            if self._fallback_server is not None or self._closed:
                return
            config = self.config
            repository = config.fallback_repository
            if not repository:
                self._fallback_dir = tempfile.TemporaryDirectory(prefix="trkx-fallback-")
                repository = self._fallback_dir.name
                add_onnx_model(
                    config.fallback_model_path, repository, config.model_name, instances=config.fallback_instances
                )
            server = TritonServer(
                TritonServerConfig(repository=repository, startup_timeout_s=config.fallback_startup_timeout_s)
            )
            self._fallback_server = server.start()
            url = server.grpc_url if config.protocol == "grpc" else server.http_url
            endpoint = _Endpoint(url=url, tls=False, shared_memory=config.shared_memory != "none")
            self._endpoints = (*self._endpoints, endpoint)
        _log.warning("triton: serving %r from a local fallback server at %s", config.model_name, url)
        if not self._probe(endpoint, config.fallback_startup_timeout_s, strict=True):
            raise BackendUnavailableError(f"triton: the local fallback server does not answer: {endpoint.last_failure}")

    # --- the interface ------------------------------------------------------------------------------------
    @property
    def signature(self) -> ModelSignature:
        """The model's signature as the server reports it."""
        if self._signature is None:
            raise BackendUnavailableError(f"{self.describe()}: no server has been reached")
        return self._signature

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers in use (``host:port``), the local fallback last once started."""
        return tuple(endpoint.url for endpoint in self._endpoints)

    def describe(self) -> str:
        """Protocol, model, servers and options, for logs (never headers or tokens)."""
        config = self.config
        tls = "on" if any(endpoint.tls for endpoint in self._endpoints) else "off"
        return (
            f"triton {config.protocol} model={config.model_name!r} version={config.model_version or 'latest'} "
            f"urls={','.join(self.urls) or '-'} shared_memory={config.shared_memory} tls={tls} "
            f"fallback={config.fallback}"
        )

    def _run(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        if self._closed:
            raise BackendUnavailableError(f"{self.describe()}: the interface has been closed")
        config = self.config
        deadline = time.monotonic() + config.timeout_s
        failures: dict[str, _RemoteError] = {}
        rounds = 0
        while True:
            for endpoint in self._order():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._exhausted(failures, timed_out=True)
                if not endpoint.healthy and not self._probe(endpoint, remaining):
                    failures[endpoint.url] = endpoint.last_failure or _RemoteError("UNAVAILABLE", "?", endpoint.url)
                    continue
                attempt = min(remaining, config.attempt_timeout_s or remaining)
                try:
                    return self._connection(endpoint).infer(inputs, output_names, attempt)
                except _RemoteError as error:
                    if error.code not in config.retry_on:
                        raise self._mapped(error) from None
                    endpoint.failed(error, config.health_recheck_s)
                    failures[endpoint.url] = error
                    _log.warning("triton: %s; trying the next server", error)
            rounds += 1
            if rounds > config.retries:
                if config.fallback == "local" and self._fallback_server is None and not self._closed:
                    self._start_fallback()
                    continue
                raise self._exhausted(failures, timed_out=False)
            pause = config.retry_backoff_s * 2 ** (rounds - 1)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _order(self) -> list[_Endpoint]:
        """Endpoints to try: healthy ones round-robin, then failed ones; failed ones due are re-checked first."""
        endpoints = self._endpoints
        if not endpoints:
            raise BackendUnavailableError(f"{self.describe()}: no server configured")
        start = next(self._round_robin) % len(endpoints)
        rotated = endpoints[start:] + endpoints[:start]
        now = time.monotonic()
        for endpoint in rotated:
            due = not endpoint.healthy and not endpoint.excluded and endpoint.recheck_at <= now
            if due and endpoint.lock.acquire(blocking=False):  # one thread re-checks, the others go on
                try:
                    self._probe(endpoint, self.config.connect_timeout_s)
                finally:
                    endpoint.lock.release()
        usable = [endpoint for endpoint in rotated if not endpoint.excluded]
        return [e for e in usable if e.healthy] + [e for e in usable if not e.healthy]

    def _mapped(self, error: _RemoteError) -> Exception:
        model = f"triton model {self.config.model_name!r}"
        if error.code == "DEADLINE_EXCEEDED":
            return InferenceTimeoutError(f"{model}: {error.url} did not answer in time: {error.message}")
        if error.code in ("UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"):
            return BackendUnavailableError(f"{model}: {error.url}: {error.code}: {self._with_hint(error.message)}")
        return ModelError(f"{model} failed on {error.url}: {error.message}")

    def _exhausted(self, failures: dict[str, _RemoteError], timed_out: bool) -> Exception:
        details = "; ".join(f"{url}: {error.code}: {error.message}" for url, error in failures.items())
        model = f"triton model {self.config.model_name!r}"
        if timed_out or (failures and all(e.code == "DEADLINE_EXCEEDED" for e in failures.values())):
            return InferenceTimeoutError(f"{model}: no answer within timeout_s={self.config.timeout_s} s ({details})")
        return BackendUnavailableError(
            f"{model}: no server answered after {self.config.retries} retries: {self._with_hint(details)}"
        )

    def _with_hint(self, message: str) -> str:
        if any(word in message.lower() for word in _TLS_WORDS):
            return (
                f"{message} (TLS: check root_certificates/{ENV_ROOT_CERTIFICATES} and that the server's "
                "certificate is signed by it)"
            )
        return message

    def infer_async(
        self, inputs: Mapping[str, Any] | NamedTuple | None = None, /, *, outputs: Iterable[str] | None = None, **named
    ) -> concurrent.futures.Future:
        """Like :meth:`infer`, but returns at once with a Future of the outputs.

        Inputs are validated before this returns (an :class:`InputError` is raised here, not in the Future).
        """
        arrays = self.prepare_inputs(inputs, **named)
        names = self.requested_outputs(outputs)
        with self._lock:
            if self._closed:
                raise BackendUnavailableError(f"{self.describe()}: the interface has been closed")
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.config.async_workers, thread_name_prefix="triton-infer"
                )
            return self._executor.submit(self.infer, arrays, outputs=names)

    def server_stats(self) -> tuple[ModelStats, ...]:
        """Per-server statistics of the model from Triton's statistics API (servers that answer)."""
        results = []
        for endpoint in self._endpoints:
            try:
                answer = self._connection(endpoint).call(
                    "get_inference_statistics",
                    self.config.model_name,
                    self.config.model_version,
                    timeout=self.config.connect_timeout_s,
                    as_json=True,
                )
            except _RemoteError as error:
                _log.info("no statistics from %s: %s", endpoint.url, error)
                continue
            results += [_model_stats(endpoint.url, item) for item in answer.get("model_stats", [])]
        return tuple(results)

    def shared_memory_regions(self) -> tuple[str, ...]:
        """Names of the system shared-memory regions this interface holds now (for checks and logs)."""
        with self._lock:
            return tuple(
                region.name
                for connection in self._connections
                for region in (connection.inputs_region, connection.outputs_region)
                if region.handle is not None
            )

    def close(self) -> None:
        """Release shared memory, close every client, stop the fallback server; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
            connections, self._connections = self._connections, []
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for connection in connections:
            try:
                connection.close()
            except Exception as error:  # close the others anyway
                _log.warning("closing the connection to %s failed: %s", connection.endpoint.url, error)
        if self._fallback_server is not None:
            self._fallback_server.stop()
        if self._fallback_dir is not None:
            self._fallback_dir.cleanup()


def _model_stats(url: str, item: Mapping[str, Any]) -> ModelStats:
    stats = item.get("inference_stats", {})

    def count(key: str) -> int:
        return int(stats.get(key, {}).get("count", 0))

    def mean_ms(key: str) -> float:
        entry = stats.get(key, {})
        calls = int(entry.get("count", 0))
        return int(entry.get("ns", 0)) / calls / 1e6 if calls else 0.0

    return ModelStats(
        url=url,
        model_name=item.get("name", ""),
        model_version=str(item.get("version", "")),
        inference_count=int(item.get("inference_count", 0)),
        execution_count=int(item.get("execution_count", 0)),
        success_count=count("success"),
        failure_count=count("fail"),
        queue_ms=mean_ms("queue"),
        compute_input_ms=mean_ms("compute_input"),
        compute_infer_ms=mean_ms("compute_infer"),
        compute_output_ms=mean_ms("compute_output"),
    )
