"""Helpers shared by the Triton tests: model repositories of the test ONNX models, inputs, comparisons."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx_models
import tritonclient.grpc as grpcclient

from backends.model_repository import add_onnx_model
from inference_iface import ModelSignature, numpy_dtype

#: Every dtype the Python-backend flavour can serve (it cannot hand bfloat16 to numpy).
SERVED_DTYPES: tuple[str, ...] = tuple(name for name in onnx_models.ONNX_TYPES if name != "bfloat16")


def served_model_files(model_dir: Path) -> dict[str, Path]:
    """Model name → ONNX file, for every shared test model the embedded server can serve."""
    files = {
        "two_in_two_out": onnx_models.two_in_two_out(model_dir),
        "fixed_shape": onnx_models.fixed_shape_model(model_dir),
        "mixed_dtypes": onnx_models.mixed_dtypes_model(model_dir),
        "small_mlp": onnx_models.small_mlp(model_dir),
        "medium_mlp": onnx_models.medium_mlp(model_dir),
        "flatten": onnx_models.flatten_model(model_dir),
    }
    files |= {f"identity_{dtype}": onnx_models.identity_model(model_dir, dtype) for dtype in SERVED_DTYPES}
    return files


def build_repository(repository: Path, files: Mapping[str, Path], instances: int = 1) -> Path:
    """A model repository serving each ONNX file under its name (Python-backend flavour)."""
    for name, path in files.items():
        add_onnx_model(path, repository, name, instances=instances)
    return repository


def random_inputs(signature: ModelSignature, seed: int = 0, rows: int = 7) -> dict[str, np.ndarray]:
    """Random arrays for every input: dynamic dimensions of size ``rows``, values drawn per dtype."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in signature.inputs:
        shape = tuple(rows if dim < 0 else dim for dim in spec.shape)
        if spec.dtype == "bytes":
            words = [b"hit", "\u00e9t\u00e9".encode(), b"", b"track 42", "\u03b7".encode()]
            arrays[spec.name] = np.array(rng.choice(np.array(words, dtype=object), size=shape), dtype=object)
        elif spec.dtype == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif spec.dtype.startswith(("int", "uint")):
            info = np.iinfo(numpy_dtype(spec.dtype))
            arrays[spec.name] = rng.integers(
                info.min, info.max, size=shape, dtype=numpy_dtype(spec.dtype), endpoint=True
            )
        else:
            arrays[spec.name] = (rng.standard_normal(shape) * 10).astype(numpy_dtype(spec.dtype))
    return arrays


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Identical shape, dtype and bytes (strings compared as UTF-8 bytes)."""
    if a.dtype == object or b.dtype == object:
        encode = np.vectorize(lambda item: item.encode() if isinstance(item, str) else item, otypes=[object])
        return a.shape == b.shape and (a.size == 0 or bool(np.all(encode(a) == encode(b))))
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``text`` (servers and their stubs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            mentions = entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes()
            if mentions and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def server_regions(grpc_url: str) -> set[str]:
    """Names of the system shared-memory regions registered with the server at ``grpc_url``."""
    raw = grpcclient.InferenceServerClient(grpc_url)
    try:
        return {
            region["name"] for region in raw.get_system_shared_memory_status(as_json=True).get("regions", {}).values()
        }
    finally:
        raw.close()
