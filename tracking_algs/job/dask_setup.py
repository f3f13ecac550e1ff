"""What the job needs of Dask before it loads Dask: the check of a scheduler address, the import of the Dask
executor that names the extra to install when Dask is missing, and the error that stops a job whose cluster is lost.

Dask is imported only by a job with ``[job] executor = "dask"``, so the core install and local jobs stay light.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from types import ModuleType

from tracking_algs.errors import JobSetupError

#: The form of a scheduler address, as messages show it.
ADDRESS_FORM = "tcp://HOST:PORT"
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
#: The distribution and extra that bring Dask.
DASK_EXTRA = "inference-iface[dask]"


class DaskClusterLost(Exception):
    """The Dask cluster of a running job was lost: the client lost its scheduler, or the scheduler has had no worker
    for longer than the job waits (``trkx.no-workers-timeout``), or a worker that joined the running job cannot run
    it (its numpy setting). The job stops as with a lost backend: the finished events are kept and ``--resume``
    continues it. The message says what was lost, in words."""


def scheduler_address(text: str) -> str:
    """``text`` if it is a Dask scheduler address ``tcp://HOST:PORT`` (a host name, an IPv4 address or an IPv6
    address in brackets; a port from 1 to 65535).

    Raises:
        ValueError: the address does not have that form; the message says what is wrong.
    """
    expected = f"expected a Dask scheduler address {ADDRESS_FORM}, e.g. tcp://127.0.0.1:8786, got {text!r}"
    scheme, separator, _ = text.partition("://")
    if not separator:
        raise ValueError(f"{expected} (no tcp:// in front)")
    if scheme != "tcp":
        raise ValueError(f"{expected} (the scheme must be tcp)")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{expected} ({error})") from None
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"{expected} (nothing may follow the port)")
    if port is None or port == 0:
        raise ValueError(f"{expected} (no port)")
    host = parts.hostname or ""
    if not (_HOSTNAME.fullmatch(host) or _is_ip(host)):
        raise ValueError(f"{expected} (bad host {host!r})")
    if ":" in host and not parts.netloc.startswith("["):
        raise ValueError(f"{expected} (an IPv6 address goes in brackets)")
    return text


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def load_dask_executor() -> ModuleType:
    """The module :mod:`tracking_algs.job.dask_executor` (importing Dask).

    Raises:
        JobSetupError: Dask or Dask distributed is not installed; the message names the extra to install.
    """
    try:
        from tracking_algs.job import dask_executor
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in ("dask", "distributed"):
            raise
        raise JobSetupError(
            f'[job] executor = "dask" needs Dask distributed, which is not installed ({error}); install it with '
            f"pip install '{DASK_EXTRA}'"
        ) from None
    return dask_executor
