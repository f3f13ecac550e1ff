"""The two edge-scoring stages: the filter MLP (chunked) and the GNN, each through an inference interface."""

from __future__ import annotations

import numpy as np

from inference_iface import ConfigError, InferenceInterface
from tracking_algs.finding.config import FilterConfig, GNNConfig

#: What each neural stage sends its model and the output it reads: (input names, output name).
STAGE_TENSORS: dict[str, tuple[tuple[str, ...], str]] = {
    "embedding": (("features",), "embedding"),
    "filter": (("features", "embedding", "edge_index"), "score"),
    "gnn": (("features", "edge_index"), "score"),
}


def check_stage_model(stage: str, inference: InferenceInterface) -> None:
    """The model behind ``inference`` must take exactly the inputs that ``stage`` sends and give the output it
    reads (:data:`STAGE_TENSORS`): a model of another stage is refused before any event, naming both.

    Raises:
        ConfigError: the model's inputs or outputs do not fit the stage.
    """
    inputs, output = STAGE_TENSORS[stage]
    signature = inference.signature
    if set(signature.input_names) != set(inputs) or output not in signature.output_names:
        raise ConfigError(
            f"the model of stage {stage!r} ({inference.describe()}) takes {', '.join(signature.input_names)} and "
            f"gives {', '.join(signature.output_names)}; the {stage} stage sends {', '.join(inputs)} and reads "
            f"{output}: is it another stage's model?"
        )


def check_edges(edges: np.ndarray, n_nodes: int, stage: str) -> None:
    """``ValueError`` naming ``stage`` for edges that are not [2, E] integer indices of the ``n_nodes`` spacepoints: a
    model's gather takes a negative index from the end, a wrong score with no error."""
    if edges.ndim != 2 or len(edges) != 2 or edges.dtype.kind not in "iu":
        raise ValueError(f"{stage} stage: edges of dtype {edges.dtype} and shape {list(edges.shape)}; expected integer "
                         "indices [2, E]")  # fmt: skip
    if edges.size and not (edges.min() >= 0 and edges.max() < n_nodes):
        raise ValueError(f"{stage} stage: edges from node {edges.min()} to {edges.max()}; expected nodes 0 to "
                         f"{n_nodes - 1} of the event's {n_nodes} spacepoints")  # fmt: skip


class EdgeFiltering:
    """Stage 2: score every candidate edge with the filter model, in chunks of ``chunk_size`` edges,
    and keep those with score > ``cut``."""

    def __init__(self, inference: InferenceInterface, config: FilterConfig, cut: float) -> None:
        self.inference = inference
        self.config = config
        self.cut = cut

    def scores(self, features: np.ndarray, embedding: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """The filter score [E] of each edge (``ValueError`` for edges that are not indices of ``features``' rows)."""
        check_edges(edges, len(features), "filter")
        out = np.empty(edges.shape[1], dtype=np.float32)
        step = self.config.chunk_size
        for start in range(0, edges.shape[1], step):
            chunk = np.ascontiguousarray(edges[:, start : start + step])
            result = self.inference.infer(features=features, embedding=embedding, edge_index=chunk, outputs=["score"])
            out[start : start + step] = result.score
        return out

    def run(self, features: np.ndarray, embedding: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The edges that pass the cut [2, E'] and their scores [E']."""
        scores = self.scores(features, embedding, edges)
        keep = scores > self.cut
        return edges[:, keep], scores[keep]


class GNNClassification:
    """Stage 3: score the filtered graph with the GNN and keep edges with score > ``cut`` (and, with a
    ``weak_cut``, the weak ones above it)."""

    def __init__(self, inference: InferenceInterface, config: GNNConfig) -> None:
        self.inference = inference
        self.config = config

    def scores(self, features: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """The GNN score [E] of each edge (the whole graph in one call: message passing needs it all; ``ValueError``
        for edges that are not indices of ``features``' rows)."""
        check_edges(edges, len(features), "GNN")
        if edges.shape[1] == 0:
            return np.empty(0, dtype=np.float32)
        edges = np.ascontiguousarray(edges)
        return np.asarray(self.inference.infer(features=features, edge_index=edges, outputs=["score"]).score)

    def run(self, features: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The edges for the building, their scores and which are weak (:func:`above_gnn_cuts`)."""
        return above_gnn_cuts(edges, self.scores(features, edges), self.config)


def above_gnn_cuts(
    edges: np.ndarray, scores: np.ndarray, config: GNNConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges [2, E'] scored above ``config.cut`` or, with a ``weak_cut``, above that, in their order, their
    scores [E'] and the mask [E'] of the weak ones (not above ``cut``)."""
    keep = scores > (config.weak_cut or config.cut)
    kept = scores[keep]
    return edges[:, keep], kept, ~(kept > config.cut)
