"""Writing standard Triton model directories, with ``config.pbtxt`` generated from the model's signature.

Layout written by :func:`add_onnx_model` (``flavour="python"``, the default for the embedded server,
which has no ONNX Runtime backend)::

    REPOSITORY/NAME/config.pbtxt            backend: "python", inputs/outputs, instance_group, parameters
    REPOSITORY/NAME/1/model.onnx
    REPOSITORY/NAME/1/model.py              backends/triton_python_model.py: runs model.onnx with onnxruntime
    REPOSITORY/NAME/1/LOCATION              each external data file of the model, where its tensors say it is

``flavour="onnxruntime"`` writes ``platform: "onnxruntime_onnx"`` and only ``1/model.onnx`` (with its data files),
for a full (NGC) Triton server. Both record the ONNX file's SHA-256 in the parameter ``onnx_sha256``, which the
client's ``model_checksum`` option checks (the ``.onnx`` file's alone, not its external data's).

:func:`model_config` and :func:`write_model_config` are general (any backend or platform, any signature),
so ensembles and custom Python backends can be written with them too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import onnx
from google.protobuf import text_format
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data
from onnx.helper import tensor_dtype_to_np_dtype
from tritonclient.grpc import model_config_pb2

from backends.triton_config import MAX_MODEL_VERSION
from backends.triton_types import config_data_type
from inference_iface.checksums import file_sha256
from inference_iface.dtypes import DTYPE_NAMES, dtype_name
from inference_iface.errors import ConfigError, InputError, ModelError
from inference_iface.files import file_problem
from inference_iface.options import is_integer
from inference_iface.shared_memory import process_alive
from inference_iface.signature import ModelSignature, TensorSpec

Flavour = Literal["python", "onnxruntime"]
FLAVOURS: tuple[str, ...] = ("python", "onnxruntime")
InstanceKind = Literal["cpu", "gpu"]

#: The template copied as ``model.py`` into Python-flavour model directories.
PYTHON_MODEL_TEMPLATE = Path(__file__).with_name("triton_python_model.py")

#: What a model name may be: a directory name that needs no quoting in the server's HTTP paths.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
#: Parameter holding the ONNX file's SHA-256 in ``config.pbtxt``.
CHECKSUM_PARAMETER = "onnx_sha256"
#: The files a version directory holds besides the model's external data.
_OWN_FILES = (PurePosixPath("model.onnx"), PurePosixPath("model.py"))


def onnx_signature(path: str | Path) -> ModelSignature:
    """The named inputs and outputs of an ONNX file (graph inputs that are initializers are left out).

    Raises:
        ModelError: the file is not a readable ONNX model (an empty file included), or uses a dtype the interface
            does not know.
    """
    return _signature(_read_model(path), path)


def _read_model(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in ``path``, without the tensors it stores in external data files."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError, OSError, ... for a bad file
        raise ModelError(f"cannot read ONNX model {str(path)!r}: {error}") from error
    if model.ir_version == 0 or not model.graph.output:  # protobuf reads an empty file as an empty message
        raise ModelError(f"cannot read ONNX model {str(path)!r}: it holds no model (no IR version or no graph output)")
    return model


def _signature(model: onnx.ModelProto, path: str | Path) -> ModelSignature:
    """The signature of ``model``, read from ``path`` (named in errors)."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelError(f"ONNX model {str(path)!r}: {value.name!r} is not a tensor")
        try:
            dtype = dtype_name(tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, InputError):  # no numpy type (UNDEFINED, an unknown number), or none the interface has
            element_type = _element_type(tensor.elem_type)
            raise ModelError(
                f"ONNX model {str(path)!r}: tensor {value.name!r} has ONNX element type {element_type}, which the "
                f"interface does not support; supported: {', '.join(DTYPE_NAMES)}"
            ) from None
        dims = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        return TensorSpec(value.name, dtype, dims)

    inputs = [spec(value) for value in model.graph.input if value.name not in initializers]
    return ModelSignature(inputs=inputs, outputs=[spec(value) for value in model.graph.output])


def _element_type(number: int) -> str:
    """An ONNX element type's name (``FLOAT8E4M3FN``), or its number where ONNX has no name for it."""
    try:
        return onnx.TensorProto.DataType.Name(number)
    except ValueError:
        return str(number)


def _external_data_files(model: onnx.ModelProto, path: str | Path) -> list[str]:
    """The files holding the tensors that ``model`` (read from ``path``) stores outside its file, as their locations
    relative to its directory (``"weights.bin"``, ``"data/part1"``), sorted.

    Raises:
        ModelError: a location that is not a file name inside the model's directory or below it (empty, absolute, or
            through ``..``; or ``model.onnx`` or ``model.py``, the names of the repository's own files), or files
            that are missing (each named).
    """
    path = Path(path)
    locations = sorted(
        {ExternalDataInfo(tensor).location for tensor in _get_all_tensors(model) if uses_external_data(tensor)}
    )
    outside = [location for location in locations if not _inside(location)]
    if outside:
        raise ModelError(
            f"ONNX model {str(path)!r}: external data location(s) {', '.join(map(repr, outside))} must be file names "
            "relative to the model's directory, without '..' (and not model.onnx or model.py)"
        )
    files = [path.parent / location for location in locations]
    missing = [f"{str(file)!r} {problem}" for file in files if (problem := file_problem(file))]
    if missing:
        raise ModelError(f"ONNX model {str(path)!r}: its external data file(s) {'; '.join(missing)}")
    return locations


def _inside(location: str) -> bool:
    """Whether an external data location names a file of its own in the model's directory or below it."""
    relative = PurePosixPath(location)
    return bool(location) and not relative.is_absolute() and ".." not in relative.parts and relative not in _OWN_FILES


def model_config(
    name: str,
    signature: ModelSignature,
    *,
    backend: str = "",
    platform: str = "",
    instances: int = 1,
    instance_kind: InstanceKind = "cpu",
    parameters: Mapping[str, str] | None = None,
) -> model_config_pb2.ModelConfig:
    """A Triton ``ModelConfig`` with ``max_batch_size: 0`` (the batch dimension is part of each shape)."""
    if instances < 1:
        raise ConfigError(f"model {name!r}: instances must be >= 1, got {instances}")
    config = model_config_pb2.ModelConfig(name=name, backend=backend, platform=platform, max_batch_size=0)
    for specs, target in ((signature.inputs, config.input), (signature.outputs, config.output)):
        for spec in specs:
            tensor = target.add(name=spec.name, dims=list(spec.shape))
            tensor.data_type = model_config_pb2.DataType.Value(config_data_type(spec.dtype))
    kind = model_config_pb2.ModelInstanceGroup.Kind.Value(f"KIND_{instance_kind.upper()}")
    config.instance_group.add(count=instances, kind=kind)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def write_model_config(model_dir: str | Path, config: model_config_pb2.ModelConfig) -> Path:
    """Write ``config`` as protobuf text into ``model_dir/config.pbtxt``; returns that path."""
    path = Path(model_dir) / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(config))
    return path


def read_model_config(model_dir: str | Path) -> model_config_pb2.ModelConfig:
    """Parse ``model_dir/config.pbtxt``."""
    path = Path(model_dir) / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as error:
        raise ModelError(f"cannot read Triton model config {str(path)!r}: {error}") from error


def add_onnx_model(
    onnx_path: str | Path,
    repository: str | Path,
    name: str,
    *,
    flavour: Flavour = "python",
    instances: int = 1,
    instance_kind: InstanceKind = "cpu",
    version: int = 1,
    intra_op_threads: int = 0,
    memory_pattern: bool = True,
    allow_spinning: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``repository/name`` serving the ONNX file ``onnx_path``; returns the model directory.

    Args:
        flavour: ``"python"`` (Python backend running onnxruntime; works on the embedded server) or
            ``"onnxruntime"`` (``platform: "onnxruntime_onnx"``, for a full Triton server).
        instances: model instances (``instance_group`` count).
        instance_kind: ``"cpu"`` or ``"gpu"`` (``KIND_CPU``/``KIND_GPU``).
        version: the version directory's number, 1 to :data:`~backends.triton_config.MAX_MODEL_VERSION`.
        intra_op_threads: ONNX Runtime threads per instance (0: with the ``python`` flavour one per core the
            server may use, as the local backend; with ``onnxruntime`` the server's default).
        memory_pattern: ONNX Runtime's memory-pattern optimisation (``python`` flavour; off suits models whose
            input shapes change from request to request).
        allow_spinning: whether ONNX Runtime's worker threads spin for work after each operator (``python``
            flavour; off leaves the cores to other models and steps between requests).
        overwrite: replace an existing model directory instead of raising.

    Raises:
        ConfigError: bad name, flavour, count or version, bfloat16 tensors with the ``python`` flavour, or the
            directory exists and ``overwrite`` is false.
        ModelError: the ONNX file cannot be read, has a tensor of a type the interface does not support, or stores
            tensors in external data files that are missing or not in its directory or below it (each named).

    The directory is written whole or not at all (see :func:`staging_directory`); the one it replaces stays until then.
    """
    onnx_path = Path(onnx_path)
    if not is_integer(version) or not 0 < version <= MAX_MODEL_VERSION:
        raise ConfigError(
            f"model version must be an integer from 1 to {MAX_MODEL_VERSION} (Triton's versions are positive 64-bit "
            f"integers), got {version!r}"
        )
    if flavour not in FLAVOURS:
        raise ConfigError(f"flavour {flavour!r} is unknown; expected one of {', '.join(FLAVOURS)}")
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name!r} must be a plain directory name that a URL carries as it is: ASCII letters, digits, "
            "'_', '-' and '.', starting with a letter, digit or '_'"
        )
    problem = file_problem(onnx_path)
    if problem:
        raise ConfigError(f"ONNX model {str(onnx_path)!r} {problem}")
    model = _read_model(onnx_path)
    signature = _signature(model, onnx_path)
    data_files = _external_data_files(model, onnx_path)
    bfloat16 = [spec.name for spec in signature.inputs + signature.outputs if spec.dtype == "bfloat16"]
    if flavour == "python" and bfloat16:
        raise ConfigError(
            f"ONNX model {str(onnx_path)!r}: tensor(s) {', '.join(map(repr, bfloat16))} are bfloat16, which Triton's "
            "Python backend cannot hand to numpy; use flavour 'onnxruntime' on a full Triton server"
        )
    model_dir = Path(repository) / name
    if model_dir.exists() and not overwrite:
        raise ConfigError(f"model directory {str(model_dir)!r} exists; pass overwrite=True (--force) to replace it")
    parameters = {CHECKSUM_PARAMETER: file_sha256(onnx_path)}
    if flavour == "python":
        runner = {"backend": "python"}
        parameters |= {"onnx_file": "model.onnx", "intra_op_threads": str(intra_op_threads),
                       "memory_pattern": str(memory_pattern).lower(),
                       "allow_spinning": str(allow_spinning).lower()}  # fmt: skip
    else:
        runner = {"platform": "onnxruntime_onnx"}
        if intra_op_threads:
            parameters["intra_op_thread_count"] = str(intra_op_threads)
    config = model_config(
        name, signature, **runner, instances=instances, instance_kind=instance_kind, parameters=parameters
    )
    with staging_directory(repository) as staging:
        version_dir = staging / name / str(version)
        version_dir.mkdir(parents=True)
        shutil.copyfile(onnx_path, version_dir / "model.onnx")
        for location in data_files:  # where the model's tensors say they are: next to it, or below
            (version_dir / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(onnx_path.parent / location, version_dir / location)
        if flavour == "python":
            shutil.copyfile(PYTHON_MODEL_TEMPLATE, version_dir / "model.py")
        write_model_config(staging / name, config)
        install_models(staging, repository, [name])
    return model_dir


@contextlib.contextmanager
def staging_directory(repository: str | Path) -> Iterator[Path]:
    """A hidden directory inside ``repository`` (created if needed) to write model directories into before
    :func:`install_models` moves them in; removed on exit, with whatever it still holds, whatever happens (an error, a
    full disk, Ctrl-C), so that a model directory in the repository is always a whole one. One left by a killed
    process (its name holds the process id; the server would take it for a model) is removed the next time models are
    written there."""
    Path(repository).mkdir(parents=True, exist_ok=True)
    for stale in Path(repository).glob(".staging-*-*"):  # left by a killed process
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=repository))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_models(staging: Path, repository: str | Path, names: Sequence[str]) -> None:
    """Move the whole model directories ``staging/NAME`` into ``repository``, replacing those there (each a rename,
    done only once every one has been written)."""
    for name in names:
        target = Path(repository) / name
        if target.exists():
            shutil.rmtree(target)
        (staging / name).rename(target)
