"""The remote backend: a model served by an NVIDIA Triton Inference Server, behind :class:`InferenceInterface`.

Configured by :class:`TritonConfig` (:mod:`backends.triton_config`, re-exported here with
:class:`ServerOptionError`, :func:`parse_url`, :func:`is_loopback` and the ``ENV_*`` names); one thread's connection
to one server, its shared memory and the mapping of client errors to status codes are in
:mod:`backends.triton_connection`.

Behaviour, in brief (docs/triton.md has the details):

- the signature comes from the server's model metadata and may be checked against ``expected_signature``
  and, through the ``onnx_sha256`` model parameter written by :mod:`backends.model_repository`, against
  ``model_checksum``;
- ``timeout_s`` bounds one whole :meth:`~InferenceInterface.infer` call, retries and failover included;
  ``attempt_timeout_s`` (when set) bounds each attempt, so a slow server can be failed over when
  ``"DEADLINE_EXCEEDED"`` is in ``retry_on``;
- only errors whose status is in ``retry_on`` are retried (with exponential backoff from
  ``retry_backoff_s``) or failed over, and a model the server no longer has (unloaded, or the server is
  shutting down) is failed over and retried the same way before :class:`BackendUnavailableError`; a bad input
  never reaches the server (the interface validates it);
- a restarted server that no longer knows the shared-memory regions gets them registered again
  (:mod:`backends.triton_connection`); regions left by killed processes are removed at construction;
- ``urls`` are used round-robin; a server that fails is skipped and re-admitted after a health check
  (at most every ``health_recheck_s``); ``fallback = "local"`` starts the embedded server
  (:mod:`backends.triton_server`) when no server answers;
- every thread has its own connection per server, released by :meth:`close`; an interface garbage-collected
  without :meth:`close` still destroys its shared-memory regions;
- TLS files and a bearer token may come from the environment (``INFERENCE_IFACE_TRITON_ROOT_CERTIFICATES``,
  ``INFERENCE_IFACE_TRITON_PRIVATE_KEY``, ``INFERENCE_IFACE_TRITON_CERTIFICATE_CHAIN``,
  ``INFERENCE_IFACE_TRITON_TOKEN``); headers and the token are never logged nor shown by :meth:`describe` or
  the config's repr.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from backends.model_repository import CHECKSUM_PARAMETER, add_onnx_model
from backends.triton_config import (
    ENV_CERTIFICATE_CHAIN,
    ENV_PRIVATE_KEY,
    ENV_ROOT_CERTIFICATES,
    ENV_TOKEN,
    GRPC_MAX_MESSAGE_BYTES,
    ServerOptionError,
    TritonConfig,
    is_loopback,
    parse_url,
)
from backends.triton_connection import NOT_ANSWERING, Connection, Endpoint, RemoteError, sweep_orphaned_regions
from backends.triton_server import TritonServer, TritonServerConfig
from inference_iface.errors import (
    BackendUnavailableError,
    ConfigError,
    InferenceTimeoutError,
    ModelChecksumError,
    ModelError,
)
from inference_iface.interface import InferenceInterface
from inference_iface.signature import ModelSignature

__all__ = [
    "ENV_CERTIFICATE_CHAIN",
    "ENV_PRIVATE_KEY",
    "ENV_ROOT_CERTIFICATES",
    "ENV_TOKEN",
    "ModelStats",
    "ServerOptionError",
    "TritonConfig",
    "TritonInference",
    "is_loopback",
    "parse_url",
]

_log = logging.getLogger(__name__)

_TLS_WORDS = ("ssl", "tls", "certificate", "handshake")


def _answers_http(address: str, timeout_s: float) -> bool:
    """Whether the server at ``host:port`` answers a plain HTTP request (Triton's HTTP and metrics ports do; its gRPC
    port answers with an HTTP/2 frame)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except (OSError, ValueError):
        return False


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
        try:
            parsed = config.servers()
        except ServerOptionError as error:
            raise ConfigError(f"backend 'triton': {error}") from None
        self._root_certificates = config.root_certificates or os.environ.get(ENV_ROOT_CERTIFICATES, "")
        self._private_key = config.private_key or os.environ.get(ENV_PRIVATE_KEY, "")
        self._certificate_chain = config.certificate_chain or os.environ.get(ENV_CERTIFICATE_CHAIN, "")
        for path in (self._root_certificates, self._private_key, self._certificate_chain):
            if path and not Path(path).is_file():
                raise ConfigError(f"backend 'triton': TLS file {path!r} does not exist")
        tls_files = bool(self._root_certificates or self._private_key or self._certificate_chain)
        self._headers = self._request_headers()
        self._endpoints: tuple[Endpoint, ...] = tuple(
            Endpoint(url=address, tls=config.tls or tls_files or https, shared_memory=self._wants_shm(address))
            for address, https in dict(parsed).items()
        )
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._round_robin = itertools.count()
        self._signature: ModelSignature | None = None
        self._fallback_server: TritonServer | None = None
        self._fallback_dir: tempfile.TemporaryDirectory[str] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        if config.shared_memory != "none":
            sweep_orphaned_regions()  # left behind by killed processes
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
                hints = self._protocol_hints()
                raise BackendUnavailableError(f"triton: no server answered: {self._with_hint(details)}{hints}")

    def _protocol_hints(self) -> str:
        """For each server that did not answer but answers the other protocol (Triton's HTTP port given for gRPC, or
        its gRPC port for HTTP), a hint naming the address and what to change; empty when there is none."""
        hints = []
        for endpoint in self._endpoints:
            if endpoint.healthy or endpoint.tls:
                continue
            if self.config.protocol == "http":
                wrong = "HTTPParseError" in str(endpoint.last_failure or "")  # an HTTP/2 (gRPC) answer
                hint = f"{endpoint.url} does not speak HTTP: a gRPC port? give the HTTP port or set protocol = 'grpc'"
            else:
                wrong = _answers_http(endpoint.url, self.config.connect_timeout_s)
                hint = f"{endpoint.url} answers HTTP, not gRPC: HTTP port? give the gRPC port or set protocol = 'http'"
            if wrong:
                hints.append(hint)
        return "".join(f" ({hint})" for hint in hints)

    def _new_client(self, endpoint: Endpoint, network_timeout: float) -> Any:
        """A client for ``endpoint``; with HTTP, ``network_timeout`` bounds its every socket operation."""
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
            return httpclient.InferenceServerClient(
                endpoint.url,
                connection_timeout=config.connect_timeout_s,
                network_timeout=network_timeout,
                ssl=endpoint.tls,
                ssl_options=ssl_options or None,
            )
        channel_args = [
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
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

    def _connection(self, endpoint: Endpoint) -> Connection:
        """This thread's connection to ``endpoint`` (made on first use)."""
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        connection = connections.get(endpoint.url)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                orphaned = [c for c in self._connections if not c.thread.is_alive()]
                self._connections = [c for c in self._connections if c.thread.is_alive()]
                config = self.config
                # an HTTP client's network timeout is fixed: checks get connect_timeout_s, calls the deadline
                infer_client = (
                    self._new_client(endpoint, config.attempt_timeout_s or config.timeout_s)
                    if config.protocol == "http"
                    else None
                )
                connection = connections[endpoint.url] = Connection(
                    endpoint,
                    self._new_client(endpoint, config.connect_timeout_s),
                    config,
                    self._headers,
                    lambda: self.signature,
                    infer_client=infer_client,
                )
                self._connections.append(connection)
            for old in orphaned:  # connections of threads that have ended: release their regions now
                old.close()
        return connection

    def _probe(self, endpoint: Endpoint, timeout: float, strict: bool = False) -> bool:
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
            if endpoint.shared_memory and not endpoint.swept:
                endpoint.swept = True
                try:
                    connection.unregister_orphans(timeout)
                except RemoteError as error:  # only housekeeping: the server may not allow it
                    _log.debug("%s: listing shared memory failed: %s", endpoint.url, error)
        except RemoteError as error:
            endpoint.failed(error, self.config.health_recheck_s)
            return False
        except ModelError as error:
            if strict:
                raise
            endpoint.excluded = str(error)
            endpoint.failed(RemoteError("FAILED_PRECONDITION", str(error), endpoint.url), self.config.health_recheck_s)
            _log.error("%s", error)
            return False
        endpoint.answered()
        return True

    def _verify(self, connection: Connection, timeout: float) -> None:
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
                raise ModelChecksumError(
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
                self._fallback_dir = tempfile.TemporaryDirectory(prefix="inference-iface-fallback-")
                repository = self._fallback_dir.name
                add_onnx_model(
                    config.fallback_model_path, repository, config.model_name, instances=config.fallback_instances
                )
            server = TritonServer(
                TritonServerConfig(repository=repository, startup_timeout_s=config.fallback_startup_timeout_s)
            )
            self._fallback_server = server.start()
            url = server.grpc_url if config.protocol == "grpc" else server.http_url
            endpoint = Endpoint(url=url, tls=False, shared_memory=config.shared_memory != "none")
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
            raise self._closed_error()
        config = self.config
        deadline = time.monotonic() + config.timeout_s
        failures: dict[str, RemoteError] = {}
        rounds = 0
        while True:
            for endpoint in self._order():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._exhausted(failures, timed_out=True)
                if not endpoint.healthy and not self._probe(endpoint, remaining):
                    failures[endpoint.url] = endpoint.last_failure or RemoteError("UNAVAILABLE", "?", endpoint.url)
                    continue
                attempt = min(remaining, config.attempt_timeout_s or remaining)
                try:
                    return self._connection(endpoint).infer(inputs, output_names, attempt)
                except RemoteError as error:
                    if self._closed:  # closed by another thread while this call was in flight
                        raise self._closed_error() from None
                    model_gone = _model_unavailable(error)
                    if error.code not in config.retry_on and not model_gone:
                        if error.code in NOT_ANSWERING:  # health-checked before it is called again
                            endpoint.failed(error, config.health_recheck_s)
                        raise self._mapped(error) from None
                    if model_gone:  # unloaded (or the server is shutting down): verify it again when it returns
                        endpoint.verified = False
                    endpoint.failed(error, config.health_recheck_s)
                    failures[endpoint.url] = error
                    if len(self._endpoints) > 1:
                        _log.warning("triton: %s; trying the next server", error)
                    elif rounds < config.retries:
                        _log.warning("triton: %s; retrying", error)
            rounds += 1
            if rounds > config.retries:
                if config.fallback == "local" and self._fallback_server is None and not self._closed:
                    self._start_fallback()
                    continue
                raise self._exhausted(failures, timed_out=False)
            pause = config.retry_backoff_s * 2 ** (rounds - 1)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _order(self) -> list[Endpoint]:
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

    def _mapped(self, error: RemoteError) -> Exception:
        model = f"triton model {self.config.model_name!r}"
        if error.code == "DEADLINE_EXCEEDED":
            return InferenceTimeoutError(f"{model}: {error.url} did not answer in time: {error.message}")
        if error.code in ("UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"):
            return BackendUnavailableError(f"{model}: {error.url}: {error.code}: {self._with_hint(error.message)}")
        return ModelError(f"{model} failed on {error.url}: {error.message}")

    def _exhausted(self, failures: dict[str, RemoteError], timed_out: bool) -> Exception:
        excluded = {e.url: e.last_failure for e in self._endpoints if e.excluded and e.last_failure is not None}
        failures = failures | excluded  # a server refused for its model: why, not the failure before it
        details = "; ".join(f"{url}: {error.code}: {error.message}" for url, error in failures.items())
        model = f"triton model {self.config.model_name!r}"
        if timed_out or (failures and all(e.code == "DEADLINE_EXCEEDED" for e in failures.values())):
            return InferenceTimeoutError(f"{model}: no answer within timeout_s={self.config.timeout_s} s ({details})")
        if failures and all(_model_unavailable(e) for e in failures.values()):
            return BackendUnavailableError(
                f"{model} is not available on any server after {self.config.retries} retries (unloaded, or the "
                f"server is shutting down): {details}"
            )
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
                raise self._closed_error()
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
            except RemoteError as error:
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


def _model_unavailable(error: RemoteError) -> bool:
    """Whether ``error`` says the model is not (or no longer) loaded on that server.

    Triton answers NOT_FOUND ("Request for unknown model: 'm' has no available versions") for a model that was
    unloaded, for instance while the server shuts down; :meth:`Connection.ready` reports an unready model the
    same way. Once a server has been verified this is a failure of that server, not of the request.
    """
    return error.code == "NOT_FOUND" and "shared memory" not in error.message.lower()


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
