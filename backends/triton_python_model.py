"""The generic Triton Python-backend model that runs an ONNX file with ONNX Runtime.

:func:`backends.model_repository.add_onnx_model` copies this file as ``<name>/<version>/model.py`` next to
the ONNX file, so the model directory is self-contained (it needs only numpy and onnxruntime inside the
server). Everything model-specific comes from ``config.pbtxt`` parameters:

``onnx_file``
    the ONNX file name inside the version directory (default ``model.onnx``);
``intra_op_threads``
    ONNX Runtime intra-op threads per instance (``0`` = one per core the server process may use, its CPU
    affinity, as the local ``onnxruntime`` backend counts them: served and local sessions on one machine then
    split their operators alike);
``memory_pattern``
    ``false`` switches off ONNX Runtime's memory-pattern optimisation (default ``true``);
``allow_spinning``
    ``false`` stops ONNX Runtime's worker threads spinning for work between operators (default ``true``);
``deterministic_compute``
    ``false`` switches off ONNX Runtime's ``use_deterministic_compute`` (default ``true``).

As in the local ``onnxruntime`` backend, numeric inputs reach ONNX Runtime starting on a 64-byte boundary, so a
model gives the same bits served as run locally (this file must stay self-contained, hence its own copies of
that rule and of the core count).

Strings (``TYPE_STRING``) reach ONNX Runtime as ``str`` and leave it as UTF-8 ``bytes``. A failure while
running becomes an error response carrying the ONNX Runtime message, so the client sees it.

This module imports ``triton_python_backend_utils``, which exists only inside the Triton server. The
backend's embedded interpreter ignores ``PYTHONPATH``, so the module puts its entries on ``sys.path`` first.
"""

from __future__ import annotations

import os
import sys

# The Python backend starts its interpreter isolated (it ignores PYTHONPATH); honour PYTHONPATH here, in front,
# so the server's environment (set by backends.triton_server) decides which numpy and onnxruntime load.
sys.path[:0] = [
    entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry and entry not in sys.path
]

import json  # noqa: E402 - after the path fix above
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), or ``os.cpu_count()`` where the platform keeps none."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class TritonPythonModel:
    """Triton's Python-backend entry point: one ONNX Runtime session per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the ONNX file named in the model's parameters."""
        parameters = _parameters(json.loads(args["model_config"]))
        path = Path(args["model_repository"]) / args["model_version"] / parameters.get("onnx_file", "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "0") or 0) or _usable_cores()
        options.inter_op_num_threads = 1
        options.enable_mem_pattern = parameters.get("memory_pattern", "true") != "false"
        spinning = "0" if parameters.get("allow_spinning", "true") == "false" else "1"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.use_deterministic_compute = parameters.get("deterministic_compute", "true") != "false"
        options.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            device = {"device_id": int(args.get("model_instance_device_id", "0"))}
            providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.inputs = [(node.name, node.type == "tensor(string)") for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run each request on its own; an exception becomes that request's error response."""
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except Exception as error:  # the message must reach the client, whatever ONNX Runtime raised
                message = f"{type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)))
        return responses

    def _run(self, request: Any) -> Any:
        feeds = {}
        for name, is_string in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"the request has no input {name!r}")
            array = tensor.as_numpy()
            if is_string:
                array = np.vectorize(_text, otypes=[object])(array) if array.size else array.astype(object)
            feeds[name] = array if is_string else _aligned(array)
        wanted = list(request.requested_output_names()) or self.output_names
        results = self.session.run(wanted, feeds)
        tensors = [pb_utils.Tensor(name, _for_triton(value)) for name, value in zip(wanted, results, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        """Drop the session."""
        self.session = None


def _aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """``array``, or a copy of it starting on an ``alignment``-byte boundary."""
    if array.ctypes.data % alignment == 0 or array.nbytes == 0:
        return array
    buffer = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -buffer.ctypes.data % alignment
    aligned = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    aligned[...] = array
    return aligned


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _for_triton(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:
        return (
            np.vectorize(lambda item: item.encode("utf-8") if isinstance(item, str) else item, otypes=[object])(array)
            if array.size
            else array
        )
    return array
