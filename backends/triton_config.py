"""Options of the ``triton`` backend: :class:`TritonConfig`, the environment variables it reads and URL checks.

Configured by :class:`TritonConfig`::

    create_inference({"backend": "triton", "url": "127.0.0.1:8001", "model_name": "embedding"})
    create_inference({"backend": "triton", "urls": ["a:8001", "b:8001"], "model_name": "embedding",
                      "fallback": "local", "fallback_model_path": "embedding.onnx"})

TLS files and a bearer token may come from the environment (``INFERENCE_IFACE_TRITON_ROOT_CERTIFICATES``,
``INFERENCE_IFACE_TRITON_PRIVATE_KEY``, ``INFERENCE_IFACE_TRITON_CERTIFICATE_CHAIN``, ``INFERENCE_IFACE_TRITON_TOKEN``);
headers and the token are never shown by the config's repr. :func:`parse_url` checks one server address,
:meth:`TritonConfig.servers` all of them and that there is one to call (a fault raises :class:`ServerOptionError`
naming its option), and :func:`is_loopback` tells whether an address is on this machine (where system shared memory
can be used).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from inference_iface.errors import ConfigError
from inference_iface.options import OptionKindError, boolean, finite, integer, text, texts
from inference_iface.registry import BackendConfig
from inference_iface.signature import ModelSignature

ENV_ROOT_CERTIFICATES = "INFERENCE_IFACE_TRITON_ROOT_CERTIFICATES"
ENV_PRIVATE_KEY = "INFERENCE_IFACE_TRITON_PRIVATE_KEY"
ENV_CERTIFICATE_CHAIN = "INFERENCE_IFACE_TRITON_CERTIFICATE_CHAIN"
ENV_TOKEN = "INFERENCE_IFACE_TRITON_TOKEN"

GRPC_DEFAULT_PORT = 8001
HTTP_DEFAULT_PORT = 8000

Protocol = Literal["grpc", "http"]
SharedMemoryMode = Literal["auto", "system", "none"]
Compression = Literal["none", "gzip", "deflate"]
Fallback = Literal["none", "local"]
#: Status codes that may be listed in ``retry_on`` (transient by nature; never a bad input).
RETRYABLE_CODES: tuple[str, ...] = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
#: The largest message gRPC can carry (its lengths are signed 32-bit integers): the default of
#: ``grpc_max_message_bytes`` and its upper bound.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
#: The longest ``timeout_s``, ``attempt_timeout_s`` and ``connect_timeout_s`` taken (seconds, about 11.6 days): gRPC
#: fails every call at once with DEADLINE_EXCEEDED when given a deadline of 1e10 s or more (or an infinite one).
MAX_TIMEOUT_S = 1e6
#: The largest model version: Triton's model versions are positive 64-bit integers.
MAX_MODEL_VERSION = 2**63 - 1
#: The options that say how the servers are reached, not what they compute: a job resumed with other values of them
#: (another address, longer timeouts) gives the same results; the model's name, version and checksum say what runs.
CONNECTION_OPTIONS = ("url", "urls", "protocol", "timeout_s", "attempt_timeout_s", "connect_timeout_s", "retries",
                      "retry_backoff_s", "retry_on", "health_recheck_s", "fallback_instances",
                      "fallback_startup_timeout_s", "tls", "root_certificates", "private_key", "certificate_chain",
                      "headers", "token_env", "compression", "shared_memory", "async_workers",
                      "grpc_max_message_bytes")  # fmt: skip
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _model_version(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or (
        value and not (value.isascii() and value.isdigit() and 0 < int(value) <= MAX_MODEL_VERSION)
    ):
        raise ValueError(
            f"model_version must be '' (the server's latest) or a positive integer as text, like '1'; got {value!r}"
        )


def _signature(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, ModelSignature):
        raise OptionKindError(f"'{attribute.name}' must be a ModelSignature or None, got {value!r}")


def _headers(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Header names to values, all strings; the message names a header, never shows a value (it may be a secret)."""
    if not isinstance(value, Mapping):
        raise OptionKindError(f"'headers' must be a table of header names to strings, got a {type(value).__name__}")
    bad = [key for key, item in value.items() if not (isinstance(key, str) and isinstance(item, str))]
    if bad:
        names = ", ".join(map(repr, bad))
        raise OptionKindError(
            f"'headers' must be a table of header names to strings; {names}: not a string with a string value"
        )


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
        model_version: a pinned version, a positive integer as text (``"1"``), or ``""`` for the server's latest.
        expected_signature: when set, the server's signature must match it (names, dtypes, shapes; -1 on
            either side matches any size).
        model_checksum: when set, the hex SHA-256 the served model must report in its ``onnx_sha256`` parameter:
            that of its ONNX file, or of whatever else its repository's writer digested there; a ``sha256:`` prefix
            is allowed.
        timeout_s: deadline of one whole call, retries and failover included (at most :data:`MAX_TIMEOUT_S`).
        attempt_timeout_s: deadline of one attempt (0 = whatever is left of ``timeout_s``; at most
            :data:`MAX_TIMEOUT_S`).
        connect_timeout_s: deadline of health checks, of the model checks when a server is first reached or
            re-admitted and of connecting (HTTP); at most :data:`MAX_TIMEOUT_S`.
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
        root_certificates, private_key, certificate_chain: PEM files (env: ``INFERENCE_IFACE_TRITON_*``).
        headers: extra request headers (never logged).
        token_env: environment variable holding a bearer token sent as ``authorization`` (never logged).
        compression: ``"none"``, ``"gzip"`` or ``"deflate"`` for requests (and HTTP responses).
        shared_memory: ``"auto"`` (system shared memory when the server is on loopback and accepts it),
            ``"system"`` (required) or ``"none"``.
        async_workers: threads serving :meth:`TritonInference.infer_async`.
        grpc_max_message_bytes: the largest gRPC request the client sends (default and upper bound: gRPC's
            limit, 2 GiB - 1); a request whose inline tensors would exceed it raises ``InputError`` before
            anything is serialised. Not used with HTTP.
    """

    url: str = attrs.field(default="", validator=text)
    urls: tuple[str, ...] = attrs.field(default=(), validator=texts)
    protocol: Protocol = attrs.field(default="grpc", validator=attrs.validators.in_(("grpc", "http")))
    model_name: str = attrs.field(default="", validator=text)
    model_version: str = attrs.field(default="", validator=_model_version)
    expected_signature: ModelSignature | None = attrs.field(default=None, validator=_signature)
    model_checksum: str = attrs.field(default="", validator=text)
    timeout_s: float = attrs.field(
        default=60.0, validator=[finite, attrs.validators.gt(0), attrs.validators.le(MAX_TIMEOUT_S)]
    )
    attempt_timeout_s: float = attrs.field(
        default=0.0, validator=[finite, attrs.validators.ge(0), attrs.validators.le(MAX_TIMEOUT_S)]
    )
    connect_timeout_s: float = attrs.field(
        default=5.0, validator=[finite, attrs.validators.gt(0), attrs.validators.le(MAX_TIMEOUT_S)]
    )
    retries: int = attrs.field(default=2, validator=[integer, attrs.validators.ge(0)])
    retry_backoff_s: float = attrs.field(default=0.05, validator=[finite, attrs.validators.ge(0)])
    retry_on: tuple[str, ...] = attrs.field(default=("UNAVAILABLE",), validator=[texts, _retry_codes])
    health_recheck_s: float = attrs.field(default=5.0, validator=[finite, attrs.validators.ge(0)])
    fallback: Fallback = attrs.field(default="none", validator=attrs.validators.in_(("none", "local")))
    fallback_model_path: str = attrs.field(default="", validator=text)
    fallback_repository: str = attrs.field(default="", validator=text)
    fallback_instances: int = attrs.field(default=1, validator=[integer, attrs.validators.ge(1)])
    fallback_startup_timeout_s: float = attrs.field(default=120.0, validator=[finite, attrs.validators.gt(0)])
    tls: bool = attrs.field(default=False, validator=boolean)
    root_certificates: str = attrs.field(default="", validator=text)
    private_key: str = attrs.field(default="", validator=text)
    certificate_chain: str = attrs.field(default="", validator=text)
    headers: dict[str, str] = attrs.field(factory=dict, repr=False, validator=_headers)
    token_env: str = attrs.field(default=ENV_TOKEN, validator=text)
    compression: Compression = attrs.field(default="none", validator=attrs.validators.in_(("none", "gzip", "deflate")))
    shared_memory: SharedMemoryMode = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "system", "none"))
    )
    async_workers: int = attrs.field(default=4, validator=[integer, attrs.validators.ge(1)])
    grpc_max_message_bytes: int = attrs.field(
        default=GRPC_MAX_MESSAGE_BYTES,
        validator=[integer, attrs.validators.gt(0), attrs.validators.le(GRPC_MAX_MESSAGE_BYTES)],
    )

    def addresses(self) -> list[tuple[str, bool]]:
        """Each server address, ``url`` first and then ``urls``, checked by :func:`parse_url`: (``host:port``,
        whether it asked for TLS); empty where none is set.

        Raises:
            ServerOptionError: an address is malformed (its ``key`` is ``"url"`` or ``"urls"``).
        """
        parsed = []
        for key, addresses in (("url", [self.url] if self.url else []), ("urls", list(self.urls))):
            for address in addresses:
                try:
                    parsed.append(parse_url(address, self.protocol))
                except ConfigError as error:
                    raise ServerOptionError(key, str(error)) from None
        return parsed

    def servers(self) -> list[tuple[str, bool]]:
        """The server addresses of :meth:`addresses`, once the configuration is known to name a server to call:
        ``url`` or ``urls``, or ``fallback = "local"`` with the model or repository the local server serves.

        Raises:
            ServerOptionError: a malformed address, no server at all (``key`` ``"url"``) or a local fallback with
                nothing to serve (``key`` ``"fallback"``).
        """
        parsed = self.addresses()
        if not parsed and self.fallback == "none":
            raise ServerOptionError("url", 'no server is set; set url = "HOST:PORT", or urls, or fallback = "local"')
        if self.fallback == "local" and not (self.fallback_model_path or self.fallback_repository):
            raise ServerOptionError(
                "fallback",
                '"local" needs fallback_model_path or fallback_repository: the model the local server serves',
            )
        return parsed


class ServerOptionError(ConfigError):
    """A ``triton`` configuration has no server to call, or one at a malformed address.

    Attributes:
        key: the option at fault (``"url"``, ``"urls"`` or ``"fallback"``), so that a caller that read it from a
            larger document can name it in full.
        problem: what is wrong with it.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def parse_url(url: str, protocol: Protocol) -> tuple[str, bool]:
    """Check one server address; returns (``host:port``, whether the URL asked for TLS via ``https://``).

    Raises:
        ConfigError: a scheme or path in a gRPC URL, a path in an HTTP URL, user info, a host that is not a host
            name, an IPv4 address or a bracketed IPv6 address, a bad, empty or zero port, or the other protocol's
            well-known port (8000 with gRPC, 8001 with HTTP), each with a hint.
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
    if "@" in parts.netloc:
        raise ConfigError(
            f"{protocol} URL {url!r} must be host:port without user info (send credentials with 'headers' or "
            "'token_env')"
        )
    if not _valid_host(parts.hostname):
        idn = "" if parts.hostname.isascii() else "; write an internationalised name in its ASCII (xn--) form"
        raise ConfigError(
            f"{protocol} URL {url!r}: {parts.hostname!r} is not a host name, an IPv4 address or an IPv6 address in "
            f"brackets ([::1]:8001){idn}"
        )
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ConfigError(
            f"{protocol} URL {url!r} has {'port 0' if port == 0 else 'an empty port'}; give the server's port "
            "(1 to 65535), or leave ':port' out for Triton's default"
        )
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


def _valid_host(host: str) -> bool:
    """Whether ``host`` (as :func:`urllib.parse.urlsplit` gives it) is a DNS name, an IPv4 or an IPv6 address."""
    if ":" in host:  # from brackets
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    name = host.removesuffix(".")
    return len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine's loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
