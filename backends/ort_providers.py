"""Choosing ONNX Runtime execution providers from what can actually load on this machine.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` in ``get_available_providers()`` even where no GPU,
driver or CUDA library exists, and then logs an error for every session that asks for it. So CUDA is
probed quietly once per process instead: the driver (``libcuda.so.1``) must load and report a device,
and ONNX Runtime's CUDA provider library must load with its CUDA/cuDNN dependencies. Only then is
CUDA put in front of the CPU provider.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from inference_iface.errors import BackendUnavailableError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

_log = logging.getLogger(__name__)


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why ONNX Runtime cannot run on CUDA here (``None`` when it can); probed once, without ORT logging."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no CUDA execution provider; install onnxruntime-gpu"
    if not sys.platform.startswith("linux"):
        return None  # the driver probe below is Linux-only; let ONNX Runtime decide elsewhere
    devices = _cuda_device_count()
    if isinstance(devices, str):
        return devices
    if devices == 0:
        return "the CUDA driver reports no GPU"
    capi = Path(ort.__file__).parent / "capi"
    try:
        # as ONNX Runtime itself does: the shared bridge globally first, it defines symbols the CUDA provider needs
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as error:
        return f"ONNX Runtime's CUDA provider cannot load ({error}); install CUDA and cuDNN matching onnxruntime-gpu"
    return None


def _cuda_device_count() -> int | str:
    """The number of CUDA devices, or a reason string when the driver cannot be used."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no CUDA driver (libcuda.so.1) is installed"
    status = driver.cuInit(0)
    if status != 0:
        return f"the CUDA driver failed to initialise (cuInit returned {status})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return f"the CUDA driver cannot count devices (cuDeviceGetCount returned {status})"
    return count.value


def select_providers(device: Device, cuda_device_id: int = 0) -> list[str | tuple[str, dict[str, str]]]:
    """The provider list for ``InferenceSession`` for ``device`` ("auto" prefers CUDA when it can load).

    Raises:
        BackendUnavailableError: ``device="cuda"`` and CUDA cannot be used (the message says why).
    """
    if device == "cpu":
        return [CPU_PROVIDER]
    reason = cuda_unavailable_reason()
    if reason is not None:
        if device == "cuda":
            raise BackendUnavailableError(f"onnxruntime: device 'cuda' was requested but {reason}")
        _log.debug("onnxruntime: using the CPU because %s", reason)
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, {"device_id": str(cuda_device_id)}), CPU_PROVIDER]
