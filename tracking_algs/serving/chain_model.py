"""The Triton Python-backend model of the tracking chain and of the ensemble's non-neural steps.

:func:`tracking_algs.serving.repository.add_tracking` copies this file as ``<name>/1/model.py``. It is a thin
adapter: the work is done by :mod:`tracking_algs` (so the server's Python must be able to import this
project; the embedded server's ``PYTHONPATH`` holds it). ``config.pbtxt`` parameters choose what it runs:

``step``
    ``chain`` (the whole :class:`~tracking_algs.finding.finder.TrackFinder`, neural stages on ONNX
    Runtime inside this model) or one of the ensemble steps ``features``, ``graph``, ``filter_select``,
    ``building`` (:class:`~tracking_algs.serving.ensemble_steps.EnsembleSteps`);
``finding``
    the :class:`~tracking_algs.finding.config.FindingConfig` as JSON (``chain``: the model directory is
    the version directory's ``models/``; the steps: radius and filter cut are set);
``intra_op_threads``
    ONNX Runtime intra-op threads per stage and instance (``chain`` only; 0 = ONNX Runtime's default).

A response carries the outputs its request names (all of them where it names none): a client that asks for
``LABELS`` alone is not sent the GNN's edges. A failure becomes that request's error response carrying the
message, so the client sees it.
"""

from __future__ import annotations

import os
import sys

# The Python backend starts its interpreter isolated (it ignores PYTHONPATH); honour PYTHONPATH here, in front.
sys.path[:0] = [
    entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry and entry not in sys.path
]

import json  # noqa: E402 - after the path fix above
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import attrs  # noqa: E402
import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from inference_iface.options import structure  # noqa: E402
from tracking_algs.finding.config import FindingConfig  # noqa: E402
from tracking_algs.finding.finder import TrackFinder  # noqa: E402
from tracking_algs.finding.model_dir import STAGES  # noqa: E402
from tracking_algs.finding.served import (  # noqa: E402
    FEATURES,
    GNN_EDGES,
    GNN_SCORES,
    HIT_ID,
    LABELS,
    spacepoints_from_chain,
)
from tracking_algs.job_options import JobOptions  # noqa: E402
from tracking_algs.serving.ensemble_steps import EnsembleSteps  # noqa: E402

Step = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class TritonPythonModel:
    """Triton's Python-backend entry point; one finder (or step) per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Build the step named by the ``step`` parameter."""
        model_config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}
        self.input_names = [tensor["name"] for tensor in model_config["input"]]
        config = structure(json.loads(parameters["finding"]), FindingConfig, where="parameter 'finding'")
        step = parameters["step"]
        if step == "chain":
            models = Path(args["model_repository"]) / args["model_version"] / "models"
            self.finder = _chain_finder(attrs.evolve(config, model_dir=str(models)), parameters, args)
            self.run: Step = self._chain
        else:
            self.steps = EnsembleSteps(config)
            self.run = {
                "features": self._features,
                "graph": self._graph,
                "filter_select": self._filter_select,
                "building": self._building,
            }[step]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run each request on its own; an exception becomes that request's error response."""
        responses = []
        for request in requests:
            try:
                tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.input_names}
                outputs = self.run({name: tensor.as_numpy() for name, tensor in tensors.items()})
                requested = set(request.requested_output_names()) or outputs.keys()  # none named: all of them
                output_tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in outputs.items()
                                  if name in requested]  # fmt: skip
                responses.append(pb_utils.InferenceResponse(output_tensors=output_tensors))
            except Exception as error:  # the message must reach the client, whatever the step raised
                message = f"{type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)))
        return responses

    def _chain(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spacepoints = spacepoints_from_chain(inputs[FEATURES], inputs[HIT_ID])
        found = self.finder.find(spacepoints)
        return {LABELS: found.candidates.labels, GNN_EDGES: found.edges["gnn"], GNN_SCORES: found.scores["gnn"]}

    def _features(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"features": self.steps.features(spacepoints_from_chain(inputs[FEATURES], inputs[HIT_ID]))}

    def _graph(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spacepoints = spacepoints_from_chain(inputs[FEATURES], inputs[HIT_ID])
        return {"edge_index": self.steps.graph(spacepoints, inputs["embedding"])}

    def _filter_select(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"edge_index": self.steps.select_filtered(inputs["edge_index"], inputs["score"])}

    def _building(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spacepoints = spacepoints_from_chain(inputs[FEATURES], inputs[HIT_ID])
        labels, edges, scores = self.steps.build(spacepoints, inputs["edge_index"], inputs["score"])
        return {LABELS: labels, GNN_EDGES: edges, GNN_SCORES: scores}

    def finalize(self) -> None:
        """Release the finder's ONNX Runtime sessions."""
        finder = getattr(self, "finder", None)
        if finder is not None:
            finder.close()


def _chain_finder(config: FindingConfig, parameters: dict[str, str], args: dict[str, str]) -> TrackFinder:
    """The local finder: every stage on ONNX Runtime (CUDA on a GPU instance when it can load), with the job
    options' stage settings."""
    onnxruntime = {
        "device": "auto" if args.get("model_instance_kind") == "GPU" else "cpu",
        "cuda_device_id": int(args.get("model_instance_device_id", "0") or 0),
        "intra_op_threads": int(parameters.get("intra_op_threads", "0") or 0),
    }
    options = JobOptions(finding=config, inference={"backend": "onnxruntime", "onnxruntime": onnxruntime})
    return TrackFinder.from_options(config, {stage: options.stage_inference(stage) for stage in STAGES})
