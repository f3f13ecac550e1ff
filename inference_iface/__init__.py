"""inference-iface: one inference interface for reconstruction software — named inputs in, named outputs out.

The backend (local ONNX Runtime, a remote Triton server, or a third party's) is chosen by configuration::

    from inference_iface import create_inference

    with create_inference({"backend": "onnxruntime", "model_path": "embedding.onnx"}) as iface:
        print(iface.signature)
        out = iface.infer(features=x)
        out.embedding
"""

from inference_iface.dtypes import DTYPE_NAMES, dtype_name, numpy_dtype
from inference_iface.errors import (
    BackendUnavailableError,
    ConfigError,
    InferenceError,
    InferenceTimeoutError,
    InputError,
    ModelChecksumError,
    ModelError,
)
from inference_iface.interface import InferenceInterface
from inference_iface.registry import (
    ENTRY_POINT_GROUP,
    BackendConfig,
    available_backends,
    backend_class,
    create_inference,
    register_backend,
)
from inference_iface.signature import ModelSignature, Outputs, TensorSpec, field_name, field_names

__all__ = [
    "DTYPE_NAMES",
    "ENTRY_POINT_GROUP",
    "BackendConfig",
    "BackendUnavailableError",
    "ConfigError",
    "InferenceError",
    "InferenceInterface",
    "InferenceTimeoutError",
    "InputError",
    "ModelChecksumError",
    "ModelError",
    "ModelSignature",
    "Outputs",
    "TensorSpec",
    "available_backends",
    "backend_class",
    "create_inference",
    "dtype_name",
    "field_name",
    "field_names",
    "numpy_dtype",
    "register_backend",
]
