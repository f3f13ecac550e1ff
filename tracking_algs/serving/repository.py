"""A Triton model repository serving the tracking chain in three ways.

``serving="models"``
    each neural model on its own, named after its stage: ``embedding``, ``filter``, ``gnn``
    (``configs/remote_triton.toml``: inference on the server, graph and track building in the job);
``serving="ensemble"``
    ``tracking_ensemble``, a Triton ensemble (``platform: "ensemble"``) whose steps are the three
    neural models and four Python-backend models for the steps between them
    (``tracking_features``, ``tracking_graph``, ``tracking_filter_select``, ``tracking_building``);
``serving="chain"``
    ``tracking_chain``, one Python-backend model running the whole :class:`TrackFinder` in-process
    with ONNX Runtime (its ONNX files and model card are copied into ``tracking_chain/1/models/``);
``serving="all"``
    all of the above in one repository.

The ensemble and the chain take ``FEATURES`` [N, 8] float64 and ``HIT_ID`` [N] int64 and return
``LABELS`` [N] int64, and the GNN's edges above its cut, ``GNN_EDGES`` [2, E] int64 with their ``GNN_SCORES`` [E]
float32, for a client that builds over them again (see :mod:`tracking_algs.finding.served`). The Python-backend
models are thin adapters (:mod:`tracking_algs.serving.chain_model`) calling :mod:`tracking_algs`, which the server's
Python must be able to import (the embedded server's ``PYTHONPATH`` holds this project; on another server, install
the project into the Python the Python backend runs).

Data flow of the ensemble (tensor names between the steps)::

    FEATURES, HIT_ID ─ tracking_features ─ features ─ embedding ─ embedding
    FEATURES, HIT_ID, embedding ─ tracking_graph ─ graph_edges
    features, embedding, graph_edges ─ filter ─ filter_scores
    graph_edges, filter_scores ─ tracking_filter_select ─ filter_edges
    features, filter_edges ─ gnn ─ gnn_scores
    FEATURES, HIT_ID, filter_edges, gnn_scores ─ tracking_building ─ LABELS, GNN_EDGES, GNN_SCORES
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import attrs

from backends.model_repository import (
    CHECKSUM_PARAMETER,
    FLAVOURS,
    Flavour,
    InstanceKind,
    add_onnx_model,
    install_models,
    model_config,
    onnx_signature,
    staging_directory,
    write_model_config,
)
from inference_iface.errors import ConfigError
from inference_iface.options import unstructure
from inference_iface.signature import ModelSignature, TensorSpec
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.features import FEATURE_NAMES
from tracking_algs.finding.model_dir import CARD_NAME, STAGES, model_path, resolve_model_dir
from tracking_algs.finding.served import (
    CHAIN_SIGNATURE,
    EDGE_OUTPUTS,
    FEATURES,
    GNN_EDGES,
    GNN_SCORES,
    HIT_ID,
    LABELS,
    SERVED_MODELS,
    chain_checksum,
)
from tracking_algs.serving.ensemble_steps import with_working_point

Serving = Literal["models", "ensemble", "chain", "all"]
SERVINGS: tuple[str, ...] = ("models", "ensemble", "chain", "all")

CHAIN_MODEL = SERVED_MODELS["chain"]
ENSEMBLE_MODEL = SERVED_MODELS["ensemble"]

#: The template copied as ``model.py`` into the chain's and the ensemble steps' model directories.
TRACKING_MODEL_TEMPLATE = Path(__file__).with_name("chain_model.py")

_EDGES = TensorSpec("edge_index", "int64", (2, -1))
_SCORE = TensorSpec("score", "float32", (-1,))
_CHAIN_INPUTS = CHAIN_SIGNATURE.inputs
#: What the served chain and the ensemble (and the ensemble's building step) return: the labels and the GNN's edges
SERVED_OUTPUTS = CHAIN_SIGNATURE.outputs + EDGE_OUTPUTS
_SERVED_SIGNATURE = ModelSignature(inputs=_CHAIN_INPUTS, outputs=SERVED_OUTPUTS)

#: Ensemble step (parameter ``step``) → model name and signature.
STEP_MODELS: dict[str, tuple[str, ModelSignature]] = {
    "features": (
        "tracking_features",
        ModelSignature(inputs=_CHAIN_INPUTS, outputs=(TensorSpec("features", "float32", (-1, len(FEATURE_NAMES))),)),
    ),
    "graph": (
        "tracking_graph",
        ModelSignature(inputs=(*_CHAIN_INPUTS, TensorSpec("embedding", "float32", (-1, -1))), outputs=(_EDGES,)),
    ),
    "filter_select": ("tracking_filter_select", ModelSignature(inputs=(_EDGES, _SCORE), outputs=(_EDGES,))),
    "building": (
        "tracking_building",
        ModelSignature(inputs=(*_CHAIN_INPUTS, _EDGES, _SCORE), outputs=SERVED_OUTPUTS),
    ),
}

#: The ensemble's steps: (model name, {model input: ensemble tensor}, {model output: ensemble tensor}).
ENSEMBLE_STEPS: tuple[tuple[str, dict[str, str], dict[str, str]], ...] = (
    ("tracking_features", {FEATURES: FEATURES, HIT_ID: HIT_ID}, {"features": "features"}),
    ("embedding", {"features": "features"}, {"embedding": "embedding"}),
    ("tracking_graph", {FEATURES: FEATURES, HIT_ID: HIT_ID, "embedding": "embedding"}, {"edge_index": "graph_edges"}),
    (
        "filter",
        {"features": "features", "embedding": "embedding", "edge_index": "graph_edges"},
        {"score": "filter_scores"},
    ),
    ("tracking_filter_select", {"edge_index": "graph_edges", "score": "filter_scores"}, {"edge_index": "filter_edges"}),
    ("gnn", {"features": "features", "edge_index": "filter_edges"}, {"score": "gnn_scores"}),
    (
        "tracking_building",
        {FEATURES: FEATURES, HIT_ID: HIT_ID, "edge_index": "filter_edges", "score": "gnn_scores"},
        {LABELS: LABELS, GNN_EDGES: GNN_EDGES, GNN_SCORES: GNN_SCORES},
    ),
)


@attrs.frozen(kw_only=True)
class TrackingRepositoryOptions:
    """How ``trkx repo add-tracking`` writes the tracking models.

    Attributes:
        serving: ``"models"``, ``"ensemble"``, ``"chain"`` or ``"all"`` (see the module docstring).
        flavour: how the neural models are served: ``"python"`` (Python backend running ONNX Runtime; the
            embedded server) or ``"onnxruntime"`` (``platform: "onnxruntime_onnx"``; a full Triton server).
            The chain and the ensemble's steps are Python-backend models either way.
        instances: model instances of every model written.
        instance_kind: ``"cpu"`` or ``"gpu"``.
        intra_op_threads: ONNX Runtime intra-op threads per model instance (0 = ONNX Runtime's default).
        finding: the finder's configuration (its ``model_dir`` names the models; empty = the shipped ones).
        overwrite: replace model directories that exist.
    """

    serving: Serving = attrs.field(default="all", validator=attrs.validators.in_(SERVINGS))
    flavour: Flavour = attrs.field(default="python", validator=attrs.validators.in_(FLAVOURS))
    instances: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    instance_kind: InstanceKind = attrs.field(default="cpu", validator=attrs.validators.in_(("cpu", "gpu")))
    intra_op_threads: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    finding: FindingConfig = FindingConfig()
    overwrite: bool = False


def add_tracking(repository: str | Path, options: TrackingRepositoryOptions | None = None) -> list[Path]:
    """Write the tracking models into ``repository`` (created if needed); returns the model directories.

    Raises:
        ConfigError: a model directory exists and ``overwrite`` is false, or the model directory lacks an ONNX file,
            or its model card where the ensemble or the chain is written (nothing is written then).
        ModelError: an ONNX file cannot be read.
        TrackingError: the model card cannot be read.

    The models are written into a hidden staging directory inside ``repository`` and moved in only once every one is
    written: whatever stops the writing (one of the errors above, a full disk, Ctrl-C) leaves the repository as it
    was, the models that ``overwrite`` would replace included.
    """
    options = options or TrackingRepositoryOptions()
    repository = Path(repository)
    model_dir = resolve_model_dir(options.finding.model_dir)
    needed = [model_path(model_dir, stage) for stage in STAGES]
    if options.serving != "models":  # the ensemble's steps and the chain take their working point from the card
        needed.append(model_dir / CARD_NAME)
    for path in needed:
        if not path.is_file():
            raise ConfigError(f"model directory {str(model_dir)!r} has no {path.name} (train with 'trkx train')")
    for stage in STAGES:  # the chain copies the files as they are: each is read here, so that a bad one stops it
        onnx_signature(model_path(model_dir, stage))
    if options.serving != "models":
        with_working_point(attrs.evolve(options.finding, model_dir=str(model_dir)))  # the card and its values
    names = []
    if options.serving in ("models", "ensemble", "all"):
        names += list(STAGES)
    if options.serving in ("ensemble", "all"):
        names += [name for name, _ in STEP_MODELS.values()] + [ENSEMBLE_MODEL]
    if options.serving in ("chain", "all"):
        names.append(CHAIN_MODEL)
    existing = [name for name in names if (repository / name).exists()]
    if existing and not options.overwrite:
        raise ConfigError(
            f"model repository {str(repository)!r} already holds {', '.join(existing)}; "
            "pass overwrite=True (--force) to replace them"
        )
    with staging_directory(repository) as staging:  # nothing in the repository changes unless every model is written
        _write(staging, model_dir, options)
        install_models(staging, repository, names)
    return [repository / name for name in names]


def _write(repository: Path, model_dir: Path, options: TrackingRepositoryOptions) -> None:
    """Write the models of ``options.serving`` from ``model_dir`` into ``repository``."""
    if options.serving in ("models", "ensemble", "all"):
        for stage in STAGES:
            add_onnx_model(
                model_path(model_dir, stage),
                repository,
                stage,
                flavour=options.flavour,
                instances=options.instances,
                instance_kind=options.instance_kind,
                intra_op_threads=options.intra_op_threads,
                memory_pattern=False,  # every event has other node and edge counts
                allow_spinning=False,  # the chain's numpy steps share the cores between the stages
            )
    checksum = (
        chain_checksum(attrs.evolve(options.finding, model_dir=str(model_dir))) if options.serving != "models" else ""
    )
    if options.serving in ("ensemble", "all"):
        steps_config = with_working_point(attrs.evolve(options.finding, model_dir=str(model_dir)))
        for step, (name, signature) in STEP_MODELS.items():
            _python_model(repository, name, signature, step, steps_config, options)
        _ensemble(repository, checksum)
    if options.serving in ("chain", "all"):
        _chain(repository, model_dir, options, checksum)


def _python_model(
    repository: Path,
    name: str,
    signature: ModelSignature,
    step: str,
    finding: FindingConfig,
    options: TrackingRepositoryOptions,
    checksum: str = "",
) -> Path:
    """A Python-backend model running ``step`` of :mod:`tracking_algs.serving.chain_model`; with ``checksum``, that
    of the chain it runs (:func:`~tracking_algs.finding.served.chain_checksum`) in its ``onnx_sha256`` parameter."""
    parameters = {
        "step": step,
        "finding": json.dumps(unstructure(finding)),
        "intra_op_threads": str(options.intra_op_threads),
    } | ({CHECKSUM_PARAMETER: checksum} if checksum else {})
    config = model_config(
        name,
        signature,
        backend="python",
        instances=options.instances,
        instance_kind=options.instance_kind,
        parameters=parameters,
    )
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True)
    shutil.copyfile(TRACKING_MODEL_TEMPLATE, version_dir / "model.py")
    write_model_config(repository / name, config)
    return repository / name


def _chain(repository: Path, model_dir: Path, options: TrackingRepositoryOptions, checksum: str) -> Path:
    """``tracking_chain``: the whole finder, with its ONNX files and card copied into ``1/models/``."""
    finding = attrs.evolve(options.finding, model_dir="")  # the model sets its own models/ directory
    path = _python_model(repository, CHAIN_MODEL, _SERVED_SIGNATURE, "chain", finding, options, checksum)
    models = path / "1" / "models"
    models.mkdir()
    for source in [model_path(model_dir, stage) for stage in STAGES] + [model_dir / CARD_NAME]:
        shutil.copyfile(source, models / source.name)
    return path


def _ensemble(repository: Path, checksum: str) -> Path:
    """``tracking_ensemble``: the ensemble scheduling of :data:`ENSEMBLE_STEPS`, with the ``checksum`` of the chain
    its steps run in its ``onnx_sha256`` parameter."""
    config = model_config(ENSEMBLE_MODEL, _SERVED_SIGNATURE, platform="ensemble",
                          parameters={CHECKSUM_PARAMETER: checksum})  # fmt: skip
    config.ClearField("instance_group")  # an ensemble has no instances of its own
    for model_name, inputs, outputs in ENSEMBLE_STEPS:
        step = config.ensemble_scheduling.step.add(model_name=model_name, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    (repository / ENSEMBLE_MODEL / "1").mkdir(parents=True)
    write_model_config(repository / ENSEMBLE_MODEL, config)
    return repository / ENSEMBLE_MODEL
