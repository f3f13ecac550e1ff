"""``trkx serve [--repository DIR] [--grpc-port P] [--http-port P] [--metrics-port P]``: the embedded tritonserver.

Runs the real ``tritonserver`` from the ``nvidia-pytriton`` wheel on loopback (free ports unless given),
prints its endpoints once it is ready and serves until interrupted (Ctrl-C or SIGTERM) or until the server
exits. A port held by another process (another server), a port out of range or an address this host cannot listen
on is refused before anything is printed: one line on stderr naming it, exit status 2 (as for every library error,
see :func:`tracking_algs.cli.main`); so is a repository whose models fail to load, with each one's reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from tracking_algs.commands.arg_types import file_to_write, positive_float
from tracking_algs.commands.interrupts import terminate_as_interrupt

NAME = "serve"
HELP = "serve a Triton model repository with the embedded tritonserver (loopback, free ports by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx serve``."""
    parser.add_argument(
        "--repository", type=Path, default=Path("model_repository"), help="model repository (default: %(default)s)"
    )
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (default: a free port)")
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (default: a free port)")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (default: a free port)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--log",
        type=file_to_write,
        help="server log file (default: a new trkx-serve-*.log in the temporary directory, kept; printed)",
    )
    parser.add_argument(
        "--startup-timeout", type=positive_float, default=120.0, help="seconds to wait for readiness (default: 120)"
    )


def run(args: argparse.Namespace) -> int:
    """Start the server, print its endpoints, block until interrupted; exit status 0 when interrupted (SIGINT,
    SIGTERM), else the status of a server that ended by itself (1 where that is none or 0).

    Raises:
        PortInUseError: a port is held by another process (nothing has been printed).
        BackendUnavailableError: the server did not start (with its log's tail).
    """
    from backends.triton_server import TritonServer, TritonServerConfig

    log = args.log or _new_log()
    try:
        config = TritonServerConfig(
            repository=str(args.repository),
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            address=args.address,
            startup_timeout_s=args.startup_timeout,
            log_path=str(log),
        )
        with terminate_as_interrupt(), TritonServer(config) as server:
            print(f"grpc: {server.grpc_url}", f"http: {server.http_url}", f"metrics: {server.metrics_url}", sep="\n")
            print(f"log: {server.log_path}", flush=True)
            try:
                status = server.wait()
            except KeyboardInterrupt:
                print("stopping tritonserver", file=sys.stderr)
                return 0
    finally:
        if args.log is None:
            with contextlib.suppress(OSError):
                if log.stat().st_size == 0:  # refused before the server wrote anything
                    log.unlink()
    print(f"tritonserver exited with status {status}{server.log_tail()}", file=sys.stderr)
    return status or 1


def _new_log() -> Path:
    """A new, empty log file in the temporary directory, kept after the command: the log its errors name."""
    descriptor, name = tempfile.mkstemp(prefix="trkx-serve-", suffix=".log")
    os.close(descriptor)
    return Path(name)
