"""Start and stop the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel (extra ``server``).

The server binds to loopback on free ports (unless told otherwise; a port given that another process holds
raises :class:`PortInUseError`, and the server counts as ready only once its own process listens on all its
ports), is tied to the lifetime of the process that started it (``PR_SET_PDEATHSIG`` plus an ``atexit`` hook,
so no orphan survives), keeps its log in a file and, when it fails to start, raises
:class:`~inference_iface.errors.BackendUnavailableError` with the log's tail.

Example::

    with TritonServer(TritonServerConfig(repository="model_repository")) as server:
        print(server.grpc_url)          # "127.0.0.1:40123"

What the bundled binary needs (found by running the binary of the ``nvidia-pytriton`` 0.7 wheel, tritonserver 2.51):
a backend directory with the Python backend and the stub for the running interpreter, ``LD_LIBRARY_PATH`` starting
with the interpreter's ``LIBDIR`` (else the stub loads the system's libpython against this interpreter's standard
library) and then ``nvidia_pytriton.libs/``, and ``PYTHONPATH`` holding what the starting interpreter imports from
(its ``sys.path``: site-packages and, for editable installs, the source trees) so that Python-backend models import
the same packages as the process that started the server.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import errno
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable
from pathlib import Path

import attrs

from inference_iface.errors import BackendUnavailableError, ConfigError
from inference_iface.shared_memory import remove_unmapped

#: Name prefix of the shared-memory region each Python-backend stub shares with the server (on its command line).
PYTHON_BACKEND_REGION = "triton_python_backend_shm_region_"
#: Lines of the server log quoted in error messages.
LOG_TAIL_LINES = 40

_PR_SET_PDEATHSIG = 1
_ADDRESS_IN_USE = ("Address already in use", "address already in use", "already in use", "Failed to bind")
_SOCKET_IN_USE = re.compile(r"Socket '([^']+)' already in use")
#: Log lines of a model that failed to load (its directory unreadable, its config, its files or its backend
#: refused): the message between the quotes, up to its first escaped line break (a Python traceback follows).
_MODEL_FAILED = re.compile(r'^E[\d:. ]+ \d+ (?:model_repository_manager|model_lifecycle)\.cc:\d+\] "(.*?)(?:\\n.*)?"$')
#: Log line of a ``config.pbtxt`` that protobuf could not parse: where and why.
_CONFIG_UNPARSED = re.compile(r"Error parsing text-format inference\.ModelConfig: (.*)$")


class PortInUseError(BackendUnavailableError):
    """A port the server should bind is held by another process (the message names it).

    Attributes:
        port: the port (0 when the server's log did not say which).
    """

    def __init__(self, message: str, port: int = 0) -> None:
        super().__init__(message)
        self.port = port


@attrs.frozen(kw_only=True)
class TritonServerConfig:
    """How to run one embedded ``tritonserver``.

    Ports of 0 are picked free on ``address`` at start. ``log_path`` empty keeps the log in a temporary file
    that lives as long as the server object. The ``grpc_ssl_*`` files switch the gRPC endpoint to TLS
    (``grpc_ssl_mutual`` also requires client certificates signed by ``grpc_ssl_root_certificate``).
    """

    repository: str = "model_repository"
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    address: str = "127.0.0.1"
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    log_path: str = ""
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    grpc_ssl_certificate: str = ""
    grpc_ssl_private_key: str = ""
    grpc_ssl_root_certificate: str = ""
    grpc_ssl_mutual: bool = False


def pytriton_root() -> Path:
    """The ``pytriton/tritonserver`` directory of the installed ``nvidia-pytriton`` wheel.

    Raises:
        BackendUnavailableError: the wheel (extra ``server``) is not installed.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "the embedded Triton server needs the 'nvidia-pytriton' package: pip install 'inference-iface[server]'"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise BackendUnavailableError(f"no tritonserver binary under {root}; reinstall 'nvidia-pytriton'")
    return root


def build_backend_directory(target: str | Path) -> Path:
    """Write the backend directory the bundled server needs (the Python backend for this interpreter).

    Returns ``target``, which holds ``python/libtriton_python.so``, ``python/triton_python_backend_utils.py``
    and ``python/triton_python_backend_stub`` copied from ``python_backend_stubs/X.Y/``.
    """
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailableError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})")
    python_dir = Path(target) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    backend = root / "backends" / "python"
    for source in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
        shutil.copy2(source, python_dir / source.name)
    return Path(target)


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: ``LD_LIBRARY_PATH`` and ``PYTHONPATH`` set as the bundled binary needs."""
    env = dict(os.environ if base is None else base)
    libs = pytriton_root().parent.parent / "nvidia_pytriton.libs"
    library_path = [str(sysconfig.get_config_var("LIBDIR")), str(libs)]
    python_path = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    python_path += [entry for entry in sys.path if entry and Path(entry).is_dir()]
    for key, first in (("LD_LIBRARY_PATH", library_path), ("PYTHONPATH", python_path)):
        rest = [part for part in env.get(key, "").split(os.pathsep) if part]
        env[key] = os.pathsep.join(dict.fromkeys(first + rest))
    return env


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``address`` right now."""
    return free_ports(1, address)[0]


def free_ports(count: int, address: str = "127.0.0.1", taken: Iterable[int] = ()) -> list[int]:
    """``count`` different TCP ports that are free on ``address`` right now, none of them in ``taken``.  The sockets
    that find them stay bound until all are found: the system hands a port out again as soon as its socket closes,
    so ports asked for one at a time can repeat."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(_family(address), socket.SOCK_STREAM))
            sock.bind((address, 0))
            port = sock.getsockname()[1]
            if port not in taken:
                ports.append(port)
        return ports


def _family(address: str) -> socket.AddressFamily:
    """The socket family of an address: IPv6 for one with a colon, else IPv4."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def port_is_free(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``address:port`` now (nothing listens there; TIME_WAIT is no obstacle)."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            sock.bind((address, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening_ports(pid: int) -> set[int] | None:
    """TCP ports that process ``pid`` listens on (from ``/proc``), or None where ``/proc`` cannot tell."""
    try:
        inodes = set()
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(entry)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        ports = set()
        for table in ("tcp", "tcp6"):
            path = Path(f"/proc/{pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports
    except OSError:
        return None


def _die_with_parent() -> None:
    """``preexec_fn``: ask the kernel to SIGTERM the child when the thread that started it goes away.

    SIGTERM (not SIGKILL) lets tritonserver shut down and stop its Python-backend stub processes, which
    would otherwise outlive it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(errno.EPERM)


def _process_group(pgid: int) -> list[int]:
    """PIDs of the live processes in process group ``pgid`` (from ``/proc``)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.append(int(entry.name))
    return members


def _stub_regions(pgid: int) -> list[str]:
    """The shared-memory regions of the Python-backend stubs in process group ``pgid`` (each names its region on
    its command line: ``triton_python_backend_shm_region_*``)."""
    regions = []
    for pid in _process_group(pgid):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        regions += [arg.decode() for arg in arguments if arg.startswith(PYTHON_BACKEND_REGION.encode())]
    return regions


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in group ``pgid`` and remove the Python-backend shared memory they held."""
    regions = _stub_regions(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    remove_unmapped(regions)


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so servers are started from one
# long-lived launcher thread; a server started from a short-lived worker thread would otherwise die with it.
_launcher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tritonserver-launcher")
_running: weakref.WeakSet[TritonServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


class TritonServer:
    """A running ``tritonserver`` process; a context manager (``start`` on enter, ``stop`` on exit).

    Attributes after :meth:`start`: ``grpc_port``, ``http_port``, ``metrics_port``, ``grpc_url``,
    ``http_url``, ``log_path`` and ``process``.
    """

    def __init__(self, config: TritonServerConfig) -> None:
        repository = Path(config.repository)
        if not repository.is_dir():
            raise ConfigError(f"model repository {str(repository)!r} is not a directory")
        self.config = config
        self.repository = repository.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._regions: list[str] = []
        self.log_path = Path(config.log_path) if config.log_path else Path()
        self._log_start = 0
        self._lock = threading.Lock()

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (an IPv6 host in brackets)."""
        return f"{self._host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (an IPv6 host in brackets)."""
        return f"{self._host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """``http://host:port/metrics`` of the Prometheus endpoint (an IPv6 host in brackets)."""
        return f"http://{self._host}:{self.metrics_port}/metrics"

    @property
    def _host(self) -> str:
        """The address as the host of a URL: an IPv6 address in brackets."""
        address = self.config.address
        return f"[{address}]" if ":" in address else address

    def start(self) -> TritonServer:
        """Start the server and wait (at most ``startup_timeout_s``) until it and all its models are ready.

        Raises:
            BackendUnavailableError: it exited or did not become ready in time (with the log's tail).
        """
        with self._lock:
            if self.process is not None:
                return self
            self._check_configured_ports()
            self._workdir = tempfile.TemporaryDirectory(prefix="inference-iface-tritonserver-")
            workdir = Path(self._workdir.name)
            if not self.config.log_path:
                self.log_path = workdir / "tritonserver.log"
            backends = build_backend_directory(workdir / "backends")
            # Ports picked free may be taken by someone else before the server binds them: try again.
            attempts = 3 if 0 in (self.config.grpc_port, self.config.http_port, self.config.metrics_port) else 1
            for attempt in range(attempts):
                self._pick_ports()
                spawned = _launcher.submit(self._spawn, backends)
                try:
                    self.process = spawned.result()
                    _running.add(self)
                    self._wait_ready()
                    # kept to remove them when the server is stopped, also after someone else killed it
                    self._regions = _stub_regions(self.process.pid)
                    return self
                except BaseException as error:  # Ctrl-C while starting too: no server or stub outlives start()
                    if self.process is None:  # interrupted while the launcher thread started it, or it failed to
                        with contextlib.suppress(Exception):
                            self.process = spawned.result()
                    self._terminate()
                    if attempt + 1 == attempts or not isinstance(error, PortInUseError):
                        self._cleanup()
                        raise
            return self  # pragma: no cover - the loop returns or raises

    def _endpoints(self) -> dict[str, int]:
        """The endpoints the server will open (those not disabled by ``extra_args``) and their ports."""
        ports = {"gRPC": self.grpc_port, "HTTP": self.http_port, "metrics": self.metrics_port}
        disabled = {"gRPC": "--allow-grpc", "HTTP": "--allow-http", "metrics": "--allow-metrics"}
        args = [arg.lower() for arg in self.config.extra_args]
        return {kind: port for kind, port in ports.items() if f"{disabled[kind]}=false" not in args}

    def _check_configured_ports(self) -> None:
        """Raise :class:`PortInUseError` when a port given in the config is held by another process, and
        :class:`ConfigError` for a port out of range, ports that coincide, or an address that is empty or that this
        host cannot listen on."""
        config = self.config
        given = {"gRPC": config.grpc_port, "HTTP": config.http_port, "metrics": config.metrics_port}
        outside = {kind: port for kind, port in given.items() if not 0 <= port <= 65535}
        if outside:
            raise ConfigError(f"tritonserver: a port is 1 to 65535 (0: a free one), got {outside}")
        given = {kind: port for kind, port in given.items() if port}
        if len(set(given.values())) < len(given):
            raise ConfigError(f"tritonserver: the gRPC, HTTP and metrics ports must differ, got {given}")
        if not config.address.strip():  # a socket binds "" as every interface; the server's options take no such thing
            raise ConfigError(
                f"tritonserver: address {config.address!r} is empty; give an address of this host, e.g. 127.0.0.1 "
                "(this host only) or 0.0.0.0 (every interface)"
            )
        try:
            port_is_free(0, config.address)
        except OSError as error:  # a name that does not resolve, or an address of another host
            raise ConfigError(
                f"tritonserver: cannot listen on address {config.address!r} ({error.strerror or error}); give an "
                "address of this host, e.g. 127.0.0.1 or 0.0.0.0"
            ) from None
        for kind, port in given.items():
            if not port_is_free(port, config.address):
                raise PortInUseError(self._in_use_message(kind, port), port)

    def _in_use_message(self, kind: str, port: int) -> str:
        return (
            f"tritonserver: the {kind} port {self._host}:{port} is already in use by another process "
            "(another server?); stop it or choose another port"
        )

    def _pick_ports(self) -> None:
        """The configured ports, and for those left 0 free ones, all different."""
        config = self.config
        configured = (config.grpc_port, config.http_port, config.metrics_port)
        chosen = iter(free_ports(configured.count(0), config.address, taken=[port for port in configured if port]))
        self.grpc_port, self.http_port, self.metrics_port = (port or next(chosen) for port in configured)

    def command(self, backend_directory: str | Path) -> list[str]:
        """The server's command line."""
        config = self.config
        # the HTTP and metrics services (libevhtp) take an IPv6 address as "ipv6:ADDRESS", else read it as IPv4
        evhtp_address = f"ipv6:{config.address}" if ":" in config.address else config.address
        argv = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory}",
            f"--grpc-address={self._host}",  # gRPC joins host and port as a URL does: an IPv6 host in brackets
            f"--grpc-port={self.grpc_port}",
            f"--http-address={evhtp_address}",
            f"--http-port={self.http_port}",
            f"--metrics-address={evhtp_address}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={config.log_verbose}",
            f"--exit-timeout-secs={max(1, int(config.stop_timeout_s))}",
        ]
        if config.grpc_ssl_certificate or config.grpc_ssl_private_key:
            for path in (config.grpc_ssl_certificate, config.grpc_ssl_private_key):
                if not Path(path).is_file():
                    raise ConfigError(f"gRPC SSL certificate/key file {path!r} does not exist")
            argv += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={config.grpc_ssl_certificate}",
                f"--grpc-server-key={config.grpc_ssl_private_key}",
            ]
            if config.grpc_ssl_mutual:
                argv += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={config.grpc_ssl_root_certificate}"]
        return argv + list(config.extra_args)

    def _spawn(self, backend_directory: Path) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()  # a log file given in the config may hold earlier runs
            return subprocess.Popen(
                self.command(backend_directory),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                cwd=self.repository,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # its own process group: the server and its stubs are killed together
            )

    def _wait_ready(self) -> None:
        """Wait until the server answers ready on its HTTP port and itself listens on all its ports.

        An answer from a port the process does not listen on comes from another process holding it.
        """
        deadline = time.monotonic() + self.config.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        endpoints = self._endpoints()
        while True:
            code = self.process.poll() if self.process else None
            if code is not None:
                self._raise_if_port_in_use(endpoints)
                raise BackendUnavailableError(
                    f"tritonserver exited with status {code} while starting{self._load_errors()}{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    answered = response.status == 200
            except (urllib.error.URLError, OSError):
                answered = False
            if answered:
                assert self.process is not None  # started above
                owned = listening_ports(self.process.pid)
                if owned is None or set(endpoints.values()) <= owned:
                    return
                if self.http_port not in owned:  # the answer came from someone else on that port
                    raise PortInUseError(self._in_use_message("HTTP", self.http_port), self.http_port)
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    f"tritonserver was not ready after {self.config.startup_timeout_s} s "
                    f"(repository {str(self.repository)!r}){self.log_tail()}"
                )
            time.sleep(0.1)

    def _raise_if_port_in_use(self, endpoints: dict[str, int]) -> None:
        """Raise :class:`PortInUseError` when the server's log says it could not bind one of its ports."""
        text = self._read_log(self._log_start)
        if not any(needle in text for needle in _ADDRESS_IN_USE):
            return
        match = _SOCKET_IN_USE.search(text)
        port = int(match.group(1).rsplit(":", 1)[1]) if match else 0
        kind = next((kind for kind, value in endpoints.items() if value == port), "")
        if kind:
            raise PortInUseError(self._in_use_message(kind, port), port)
        ports = ", ".join(f"{kind} {value}" for kind, value in endpoints.items())
        raise PortInUseError(f"tritonserver could not bind its ports ({ports}): one is in use by another process")

    def _load_errors(self) -> str:
        """The reasons the server's log gives for the models that failed to load, as the start of an error message
        (empty when it gives none): they come before the model table and the shutdown lines of the log's tail."""
        reasons: dict[str, None] = {}
        for line in self._read_log(self._log_start).splitlines():
            if match := _MODEL_FAILED.match(line):
                reasons[match.group(1)] = None
            elif match := _CONFIG_UNPARSED.search(line):  # logged before the line naming the model's directory
                reasons[f"config.pbtxt, line:column {match.group(1)}"] = None
        if not reasons:
            return ""
        return (
            ": models of the repository failed to load (fix or remove their directories, or serve another "
            "repository):\n  " + "\n  ".join(reasons)
        )

    def _read_log(self, start: int = 0) -> str:
        """The server log from byte ``start`` (:attr:`_log_start`: this run's), ``""`` where it cannot be read."""
        try:
            return self.log_path.read_bytes()[start:].decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log, formatted for an error message."""
        tail = self._read_log().splitlines()[-lines:]
        return f"\n--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def is_alive(self) -> bool:
        """Whether the server process is running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and its stub processes at once (as a crash would); the log is kept."""
        process = self.process
        if process is not None and process.poll() is None:
            _kill_group(process.pid)
            process.wait()

    def _terminate(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.config.stop_timeout_s + 2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _kill_group(process.pid)  # stubs left behind by a server that did not shut down cleanly
        self.process = None

    def _cleanup(self) -> None:
        _running.discard(self)
        remove_unmapped(self._regions)
        if self._workdir is None:
            return
        if self.config.log_path:  # the log lives elsewhere: nothing here is worth keeping
            self._workdir.cleanup()
            self._workdir = None
        else:  # keep the log (removed with this object); drop the backend copies
            shutil.rmtree(Path(self._workdir.name) / "backends", ignore_errors=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout_s``); safe to call twice."""
        with self._lock:
            self._terminate()
            self._cleanup()

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        if self.process is None:
            raise BackendUnavailableError("tritonserver is not running")
        return self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"grpc {self.grpc_url}, http {self.http_url}" if self.is_alive() else "stopped"
        return f"<TritonServer {self.repository} ({state})>"
