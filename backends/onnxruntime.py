"""The local backend: an ONNX Runtime ``InferenceSession`` behind :class:`~inference_iface.InferenceInterface`.

Configured by :class:`OnnxRuntimeConfig`::

    create_inference({"backend": "onnxruntime", "model_path": "embedding.onnx", "intra_op_threads": 4})

The signature is read from the session; inputs are fed by name; ``run`` is called without locking
(ONNX Runtime sessions are safe to run from several threads at once).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs
import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from backends.ort_providers import DEVICES, Device, select_providers
from inference_iface.cores import usable_cores
from inference_iface.dtypes import numpy_dtype
from inference_iface.errors import BackendUnavailableError, ConfigError, ModelError
from inference_iface.files import file_problem
from inference_iface.interface import InferenceInterface
from inference_iface.options import boolean, integer, text
from inference_iface.registry import BackendConfig
from inference_iface.signature import ModelSignature, TensorSpec

#: ONNX Runtime type strings → the interface's dtype names.
ORT_DTYPES: dict[str, str] = {
    "tensor(bool)": "bool",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(string)": "bytes",
}

#: Everything ONNX Runtime raises when a model cannot load or run (its own classes derive from Exception only).
_ORT_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    *(item for item in vars(_ort_state).values() if isinstance(item, type) and issubclass(item, Exception)),
)

OptimizationLevel = Literal["disable", "basic", "extended", "all"]
_OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
LogSeverity = Literal["verbose", "info", "warning", "error", "fatal"]
#: The most threads a session takes (ONNX Runtime's own option is a C int; far more than any machine's cores).
MAX_THREADS = 4096
_LOG_SEVERITIES: tuple[str, ...] = ("verbose", "info", "warning", "error", "fatal")
ExecutionMode = Literal["sequential", "parallel"]
_EXECUTION_MODES: dict[str, ort.ExecutionMode] = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


def _path_text(value: object) -> object:
    """A path object as its text (``Path("m.onnx")`` → ``"m.onnx"``); anything else as it is, for the validator."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@attrs.frozen(kw_only=True)
class OnnxRuntimeConfig(BackendConfig):
    """Options of the ``onnxruntime`` backend (job-options table keys are the attribute names).

    Attributes:
        model_path: the ``.onnx`` file (a string, or a path object, kept as its text).
        device: ``"auto"`` (CUDA when it can really load, else CPU), ``"cpu"`` or ``"cuda"``.
        cuda_device_id: which GPU when running on CUDA.
        intra_op_threads: threads inside one operator; 0 means one per core this process may use (its CPU
            affinity, see :func:`~inference_iface.cores.usable_cores`), so worker processes given a share of the
            cores do not oversubscribe them.
        inter_op_threads: threads running independent operators (``execution_mode = "parallel"`` only);
            0 lets ONNX Runtime choose.
        execution_mode: ``"sequential"`` or ``"parallel"`` operator scheduling.
        graph_optimization_level: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``.
        memory_pattern: ONNX Runtime's memory-pattern optimisation (``enable_mem_pattern``): it records the
            allocations of a run and plans the next run with the same input shapes from them.  Switch it off for
            models whose input shapes change from call to call, where the plans never apply.
        allow_spinning: whether the session's worker threads keep spinning for work after an operator
            (``session.intra_op.allow_spinning``).  Spinning saves a wake-up between operators but holds the
            cores a while after each run: switch it off when the process computes between runs.
        deterministic_compute: ONNX Runtime's ``use_deterministic_compute``: kernels that have a deterministic and a
            faster non-deterministic variant take the deterministic one.
        log_severity: the session's minimum log level (``"verbose"`` … ``"fatal"``).
        cast_policy: see :mod:`inference_iface.validation`.
    """

    model_path: str = attrs.field(default="", converter=_path_text, validator=text)
    device: Device = attrs.field(default="auto", validator=attrs.validators.in_(DEVICES))
    cuda_device_id: int = attrs.field(default=0, validator=[integer, attrs.validators.ge(0)])
    intra_op_threads: int = attrs.field(
        default=0, validator=[integer, attrs.validators.ge(0), attrs.validators.le(MAX_THREADS)]
    )
    inter_op_threads: int = attrs.field(
        default=0, validator=[integer, attrs.validators.ge(0), attrs.validators.le(MAX_THREADS)]
    )
    execution_mode: ExecutionMode = attrs.field(default="sequential", validator=attrs.validators.in_(_EXECUTION_MODES))
    graph_optimization_level: OptimizationLevel = attrs.field(
        default="all", validator=attrs.validators.in_(_OPTIMIZATION_LEVELS)
    )
    memory_pattern: bool = attrs.field(default=True, validator=boolean)
    allow_spinning: bool = attrs.field(default=True, validator=boolean)
    deterministic_compute: bool = attrs.field(default=True, validator=boolean)
    log_severity: LogSeverity = attrs.field(default="warning", validator=attrs.validators.in_(_LOG_SEVERITIES))


class OnnxRuntimeInference(InferenceInterface):
    """One ONNX model in a local ONNX Runtime session."""

    config_class = OnnxRuntimeConfig

    def __init__(self, config: OnnxRuntimeConfig) -> None:
        super().__init__(config.cast_policy)
        if not config.model_path:
            raise ConfigError("backend 'onnxruntime': 'model_path' is not set")
        self.config = config
        self._path = Path(config.model_path)
        problem = file_problem(self._path)
        if problem:
            raise ModelError(f"ONNX model file {str(self._path)!r} {problem}")
        providers = select_providers(config.device, config.cuda_device_id)
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(self._path), sess_options=_session_options(config), providers=providers
            )
        except _ORT_ERRORS as error:
            raise ModelError(f"ONNX model file {str(self._path)!r} cannot be loaded: {error}") from None
        self._providers = tuple(self._session.get_providers())
        if config.device == "cuda" and "CUDAExecutionProvider" not in self._providers:
            raise BackendUnavailableError(
                f"onnxruntime: device 'cuda' was requested but the session for {str(self._path)!r} "
                f"runs on {', '.join(self._providers)}"
            )
        self._signature = ModelSignature(
            inputs=[_spec(arg) for arg in self._session.get_inputs()],
            outputs=[_spec(arg) for arg in self._session.get_outputs()],
        )
        self._string_inputs = frozenset(spec.name for spec in self._signature.inputs if spec.dtype == "bytes")
        tensors = self._signature.inputs + self._signature.outputs
        self._bfloat16 = frozenset(spec.name for spec in tensors if spec.dtype == "bfloat16")

    @property
    def signature(self) -> ModelSignature:
        """The model's inputs and outputs as ONNX Runtime reports them (symbolic dimensions are -1)."""
        return self._signature

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session actually uses, in priority order."""
        return self._providers

    def describe(self) -> str:
        """Backend, model file and providers, for logs."""
        threads = f"intra_op_threads={self.config.intra_op_threads or 'auto'}"
        return (
            f"onnxruntime {ort.__version__} model={str(self._path)!r} providers={','.join(self._providers)} {threads}"
        )

    def _run(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        session = self._session
        if session is None:
            raise self._closed_error()
        for name in self._string_inputs:
            inputs[name] = _as_text(inputs[name])
        for name, array in inputs.items():
            inputs[name] = aligned(array)
        try:
            if self._bfloat16:
                return self._run_ort_values(session, inputs, output_names)
            return dict(zip(output_names, session.run(output_names, inputs), strict=True))
        except _ORT_ERRORS as error:
            raise ModelError(f"{self.describe()}: the model failed: {error}") from None

    def _run_ort_values(
        self, session: ort.InferenceSession, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """The path for models with bfloat16 tensors, which ONNX Runtime's numpy bridge cannot convert."""
        feeds = {name: _to_ort_value(array, name in self._bfloat16) for name, array in inputs.items()}
        values = session.run_with_ort_values(list(output_names), feeds)
        return {
            name: _bfloat16_array(value) if name in self._bfloat16 else value.numpy()
            for name, value in zip(output_names, values, strict=True)
        }

    def close(self) -> None:
        """Drop the session; later calls raise :class:`BackendUnavailableError`."""
        self._session = None


def _session_options(config: OnnxRuntimeConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads or usable_cores()
    options.inter_op_num_threads = config.inter_op_threads
    options.execution_mode = _EXECUTION_MODES[config.execution_mode]
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[config.graph_optimization_level]
    options.enable_mem_pattern = config.memory_pattern
    options.use_deterministic_compute = config.deterministic_compute
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    options.log_severity_level = _LOG_SEVERITIES.index(config.log_severity)
    return options


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(
            f"tensor {arg.name!r} has ONNX type {arg.type}, which the interface does not support; "
            f"supported: {', '.join(ORT_DTYPES)}"
        )
    shape = arg.shape or ()
    return TensorSpec(arg.name, dtype, [dim if isinstance(dim, int) else -1 for dim in shape])


#: Byte alignment of the numeric inputs handed to ONNX Runtime: that of its own tensors (64, the AVX-512 vector).
INPUT_ALIGNMENT = 64


def aligned(array: np.ndarray) -> np.ndarray:
    """``array``, or a copy of it starting on an :data:`INPUT_ALIGNMENT`-byte boundary.

    ONNX Runtime runs directly on the memory of contiguous numpy inputs, whose start numpy aligns only to 16 bytes,
    so where an input starts depends on the process's allocation history.  Aligned like ONNX Runtime's own tensors,
    a kernel's vector loop starts at the same element in every process."""
    if array.dtype == object or array.ctypes.data % INPUT_ALIGNMENT == 0 or array.nbytes == 0:
        return array
    buffer = np.empty(array.nbytes + INPUT_ALIGNMENT, dtype=np.uint8)
    start = -buffer.ctypes.data % INPUT_ALIGNMENT
    aligned = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    aligned[...] = array
    return aligned


def _as_text(array: np.ndarray) -> np.ndarray:
    """ONNX strings are UTF-8 text: decode ``bytes`` elements (ORT would otherwise feed their repr); the interface's
    validation has checked that they are UTF-8."""
    if not any(isinstance(item, bytes) for item in array.flat):
        return array
    texts = [item.decode() if isinstance(item, bytes) else item for item in array.flat]
    return np.array(texts, dtype=object).reshape(array.shape)


def _to_ort_value(array: np.ndarray, bfloat16: bool) -> ort.OrtValue:
    if bfloat16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), TensorProto.BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(array)


def _bfloat16_array(value: ort.OrtValue) -> np.ndarray:
    """Copy a CPU bfloat16 OrtValue into a numpy ``ml_dtypes.bfloat16`` array."""
    size = value.tensor_size_in_bytes()
    raw = (ctypes.c_uint8 * size).from_address(value.data_ptr()) if size else b""
    return np.frombuffer(bytes(raw), dtype=numpy_dtype("bfloat16")).reshape(value.shape())
