"""Training of the finding chain on simulated events: embedding → filter → GNN → ONNX + model card.

* Embedding: metric learning with a hinge loss. Each step takes an azimuthal sector of one event
  (:func:`embedding_sector`), embeds all its hits, picks
  ``query_hits`` query hits and pairs them with (a) their truth-graph neighbours (positives), (b) their
  ``hard_negatives`` nearest hits in the current embedding (hard-negative mining; positives when they
  belong to the same particle; with ``compatible_search``, the nearest hits that pass the graph's pair cuts)
  and (c) random hits. Loss: d² for positives (optionally only of particles above ``positive_pt_min``),
  max(0, margin − d)² for negatives, each class averaged.
* Filter: trained on the graph the trained embedding builds with the finder's graph construction
  (``[graph]``: pair cuts and k cap; radius chosen so that the graph keeps ``radius_efficiency`` of the truth
  edges), on random batches of edges.
* GNN: trained on the graph the filter leaves (cut chosen so that the filter keeps
  ``filter_efficiency`` of the truth edges it is given), one event sector per step.

Edge labels: 1 for truth-graph edges, 0 for other pairs; pairs of the same particle that are not
consecutive get weight 0 (neither rewarded nor punished). All three train on azimuthal sectors of the events
(``sector_fraction`` of the hits) to bound memory and time.

Data seeds: training events are ``(train_seed, 0..train_events-1)``, validation events
``(validation_seed, 0..)``; training seeds lie below :data:`VALIDATION_SEED_MIN` and validation seeds at or
above it, so the two never overlap. Every random draw comes from fixed seeds; checkpoints in
``OUTPUT/checkpoints`` let an interrupted run resume where it stopped.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch
from attrs import validators as v
from scipy.spatial import cKDTree
from tqdm import tqdm

from inference_iface.options import describe_differences, finite, integer, option_differences, unstructure
from tracking_algs.errors import CheckpointError, TrackingError
from tracking_algs.event import Event, Spacepoints
from tracking_algs.finding.compaction import PrincipalAxes, compact_models, principal_axes
from tracking_algs.finding.config import FindingConfig, GraphConfig, PairCuts
from tracking_algs.finding.export import export_onnx
from tracking_algs.finding.features import FEATURE_NAMES, orient_edges, spacepoint_features
from tracking_algs.finding.graph import candidate_edges
from tracking_algs.finding.model_dir import CARD_NAME
from tracking_algs.finding.models import EmbeddingNet, FilterNet, InteractionGNN
from tracking_algs.finding.pairs import PairGeometry
from tracking_algs.geometry import trackml_detector
from tracking_algs.io.atomic import write_atomically
from tracking_algs.magnetic_field import FieldConfig, MagneticField
from tracking_algs.performance import truth_graph
from tracking_algs.performance.lookup import hit_particle_pt
from tracking_algs.simulation import SimulationConfig, simulate_event
from tracking_algs.simulation.config import MAX_MEAN_COUNT

#: Training seeds are below this value, validation seeds at or above it.
VALIDATION_SEED_MIN = 1_000_000
#: The most units of a hidden layer (and embedding dimensions): far more than a training on CPUs can use, few enough
#: that a mistyped width is refused with the options rather than failing to allocate its weights.
MAX_WIDTH = 65_536
#: The most training or validation events, and focus sectors per event.
MAX_EVENTS = 100_000
#: The most hits or edges one step samples (query hits, edges of a batch).
MAX_STEP_SAMPLES = 10_000_000
#: The most pairs one step samples per query hit (hard and random negatives, the compatible search).
MAX_PER_QUERY = 10_000
#: The most message-passing iterations of the GNN: far beyond the 6 to 8 of the Exa.TrkX interaction networks (Ju
#: et al., arXiv:2103.06995), few enough that a mistyped count is refused with the options rather than unrolled into
#: the exported model until the memory runs out.
MAX_GNN_ITERATIONS = 1000


#: every pile-up of a list: a mean the simulation takes (0 to ``MAX_MEAN_COUNT``), checked with the options rather
#: than when the events of that pile-up are simulated, minutes into a training
_pileup_values = v.deep_iterable(member_validator=[finite, v.ge(0.0), v.le(MAX_MEAN_COUNT)])


@attrs.frozen(kw_only=True)
class DataConfig:
    """Which simulated events to train and validate on. Training events are simulated at ``pileups`` in turn and
    with a luminous region ``beam_spot_sigma_z_mm`` long; validation events with the simulation's defaults at each
    of ``validation_pileups``. Both use the detector simulation ``geometry`` (``"cylinders"``: ideal cylinders and
    disks; ``"modules"``: the TrackML module layout, with overlapping modules, TrackML noise rates and
    secondaries; :class:`~tracking_algs.simulation.SimulationConfig`) and the field ``field`` (``[data.field]``,
    :class:`~tracking_algs.magnetic_field.FieldConfig`: uniform by default, or the solenoid).

    The embedding's steps take azimuthal sectors too (:func:`embedding_sector`). The filter and GNN train on one
    random azimuthal sector per training event plus ``focus_sectors``
    sectors centred on hits of particles with pT ≥ ``focus_pt_min`` GeV (in practice the signal jets).
    Random sectors of a pile-up event hold few such dense high-pT tracks, and the networks then fail to
    separate neighbouring jet tracks."""

    #: the simulation the training and validation events come from
    geometry: Literal["cylinders", "modules"] = attrs.field(
        default="cylinders", validator=v.in_(("cylinders", "modules"))
    )
    #: pile-up of the training events, in turn: event i has ``pileups[i % len(pileups)]``
    pileups: tuple[float, ...] = attrs.field(default=(200.0,), validator=[v.min_len(1), _pileup_values])
    train_seed: int = attrs.field(default=1, validator=[integer, v.ge(0), v.lt(VALIDATION_SEED_MIN)])
    train_events: int = attrs.field(default=8, validator=[integer, v.gt(0), v.le(MAX_EVENTS)])
    validation_seed: int = attrs.field(default=VALIDATION_SEED_MIN + 1, validator=[integer, v.ge(VALIDATION_SEED_MIN)])
    validation_events: int = attrs.field(default=2, validator=[integer, v.gt(0), v.le(MAX_EVENTS)])
    validation_pileups: tuple[float, ...] = attrs.field(default=(200.0, 20.0), validator=_pileup_values)
    sector_fraction: float = attrs.field(default=0.125, validator=[finite, v.gt(0.0), v.le(1.0)])
    focus_sectors: int = attrs.field(default=0, validator=[integer, v.ge(0), v.le(MAX_EVENTS)])
    focus_pt_min: float = attrs.field(default=2.0, validator=[finite, v.gt(0.0)])
    #: length of the luminous region (Gaussian σ of the vertex z, mm) in the training events; longer than the
    #: simulation's default it gives the networks more tracks from vertices far from z = 0
    beam_spot_sigma_z_mm: float = attrs.field(
        default=SimulationConfig().beam_spot_sigma_z_mm, validator=[finite, v.gt(0.0)]
    )
    #: the field the training and validation events are simulated in (its centre field the detector's)
    field: FieldConfig = attrs.field(default=FieldConfig(), validator=v.instance_of(FieldConfig))
    #: how finely the training and validation events follow the particles through a non-uniform field
    #: (``[simulation] step_tolerance_mm``); 0, one midpoint step per surface, as the shipped model sets were trained
    step_tolerance_mm: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])
    #: whether the training and validation particles lose energy in the material (``[simulation] energy_loss``);
    #: off, as the shipped model sets were trained
    energy_loss: bool = attrs.field(default=False, validator=v.instance_of(bool))

    def magnetic_field(self) -> MagneticField:
        """The field of the training and validation events."""
        return self.field.build(trackml_detector())

    def simulation(self, event_id: int) -> SimulationConfig:
        """The simulation settings of training event ``event_id``."""
        pileup = self.pileups[event_id % len(self.pileups)]
        return SimulationConfig(geometry=self.geometry, pileup=pileup, beam_spot_sigma_z_mm=self.beam_spot_sigma_z_mm,
                                step_tolerance_mm=self.step_tolerance_mm, energy_loss=self.energy_loss)  # fmt: skip

    def validation_simulation(self, pileup: float) -> SimulationConfig:
        """The simulation settings of the validation events at ``pileup`` (the simulation's defaults otherwise)."""
        return SimulationConfig(geometry=self.geometry, pileup=pileup, step_tolerance_mm=self.step_tolerance_mm,
                                energy_loss=self.energy_loss)  # fmt: skip


#: the width of a network's layer: 1 to :data:`MAX_WIDTH`
_WIDTH = [integer, v.gt(0), v.le(MAX_WIDTH)]
#: the widths of a network's hidden layers
_LAYER_WIDTHS = v.deep_iterable(member_validator=_WIDTH)
#: a count of pairs per query hit: 0 to :data:`MAX_PER_QUERY`
_PER_QUERY = [integer, v.ge(0), v.le(MAX_PER_QUERY)]


@attrs.frozen(kw_only=True)
class EmbeddingTraining:
    """Embedding network and its metric-learning schedule."""

    hidden: tuple[int, ...] = attrs.field(default=(64, 64), validator=_LAYER_WIDTHS)
    dim: int = attrs.field(default=8, validator=_WIDTH)
    steps: int = attrs.field(default=1000, validator=[integer, v.ge(0)])
    learning_rate: float = attrs.field(default=3e-3, validator=[finite, v.gt(0.0)])
    query_hits: int = attrs.field(default=1000, validator=[integer, v.gt(0), v.le(MAX_STEP_SAMPLES)])
    hard_negatives: int = attrs.field(default=12, validator=_PER_QUERY)
    random_negatives: int = attrs.field(default=8, validator=_PER_QUERY)
    margin: float = attrs.field(default=1.0, validator=[finite, v.gt(0.0)])
    #: hard negatives are mined among the pairs that pass the graph's pair cuts (the ones that compete for the
    #: k cap in the finder), from this many nearest hits per query; 0 mines among all nearest hits
    compatible_search: int = attrs.field(default=0, validator=_PER_QUERY)
    #: same-particle pairs count as positives only for particles of at least this pT (GeV); pairs of slower
    #: particles are left out of the loss
    positive_pt_min: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])
    #: fraction of the steps whose sector is centred on a hit of a particle with pT ≥ ``data.focus_pt_min`` (the
    #: signal jets); the others take a random sector
    focus_fraction: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0), v.le(1.0)])
    #: the embedding trains on the training events of these pile-ups (each one of ``data.pileups``); empty: on all.
    #: The filter and GNN always train on all of them
    pileups: tuple[float, ...] = attrs.field(default=(), validator=_pileup_values)
    #: at export, the principal axes of the trained embedding whose standard deviation is below this fraction of
    #: the graph radius are dropped, the projection folded into the embedding and filter models
    #: (:mod:`tracking_algs.finding.compaction`); 0 keeps every axis
    compact_spread: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0), v.lt(1.0)])


@attrs.frozen(kw_only=True)
class FilterTraining:
    """Filter network and its schedule."""

    hidden: tuple[int, ...] = attrs.field(default=(64, 64), validator=_LAYER_WIDTHS)
    steps: int = attrs.field(default=1000, validator=[integer, v.ge(0)])
    learning_rate: float = attrs.field(default=3e-3, validator=[finite, v.gt(0.0)])
    batch_edges: int = attrs.field(default=20_000, validator=[integer, v.gt(0), v.le(MAX_STEP_SAMPLES)])
    radius_efficiency: float = attrs.field(default=0.99, validator=[finite, v.gt(0.0), v.le(1.0)])
    filter_efficiency: float = attrs.field(default=0.99, validator=[finite, v.gt(0.0), v.le(1.0)])


@attrs.frozen(kw_only=True)
class GNNTraining:
    """Interaction network and its schedule."""

    hidden: int = attrs.field(default=32, validator=_WIDTH)
    iterations: int = attrs.field(default=4, validator=[integer, v.gt(0), v.le(MAX_GNN_ITERATIONS)])
    steps: int = attrs.field(default=300, validator=[integer, v.ge(0)])
    learning_rate: float = attrs.field(default=2e-3, validator=[finite, v.gt(0.0)])


#: The file beside the checkpoints that records the training options they were made with.
OPTIONS_FILE = "train_options.json"
#: The directory inside the output where :func:`export_models` writes the models and their card before moving them
#: into place.
STAGING_DIR = ".export.tmp"
#: The training options a resumed training may change besides the stages' ``steps``: they do not act on the trained
#: weights (checkpoints, the export's compaction, the held-out validation).
FREE_ON_RESUME = frozenset({"checkpoint_every", "embedding.compact_spread", "data.validation_seed",
                            "data.validation_events", "data.validation_pileups"})  # fmt: skip


@attrs.frozen(kw_only=True)
class TrainConfig:
    """The whole training job (``trkx train CONFIG.toml``)."""

    seed: int = attrs.field(default=0, validator=[integer, v.ge(0)])
    threads: int = attrs.field(default=2, validator=[integer, v.gt(0)])
    checkpoint_every: int = attrs.field(default=200, validator=[integer, v.gt(0)])
    data: DataConfig = attrs.field(default=DataConfig(), validator=v.instance_of(DataConfig))
    graph: GraphConfig = attrs.field(default=GraphConfig(), validator=v.instance_of(GraphConfig))
    embedding: EmbeddingTraining = attrs.field(default=EmbeddingTraining(), validator=v.instance_of(EmbeddingTraining))
    filter: FilterTraining = attrs.field(default=FilterTraining(), validator=v.instance_of(FilterTraining))
    gnn: GNNTraining = attrs.field(default=GNNTraining(), validator=v.instance_of(GNNTraining))

    @embedding.validator
    def _embedding_pileups_among_the_data(self, attribute: attrs.Attribute, value: EmbeddingTraining) -> None:
        unknown = [pileup for pileup in value.pileups if pileup not in self.data.pileups]
        if unknown:
            raise ValueError(f"embedding.pileups {unknown} are not among data.pileups {list(self.data.pileups)}")

    @graph.validator
    def _no_graph_radius(self, attribute: attrs.Attribute, value: GraphConfig) -> None:
        """Refuse a ``graph.radius``: the training chooses its own, from ``filter.radius_efficiency``."""
        if value.radius != 0:
            raise ValueError(
                f"graph.radius = {value.radius:g} would be ignored: training chooses the radius that keeps "
                "filter.radius_efficiency of the truth edges; leave graph.radius out (or 0)"
            )


@attrs.frozen
class Sample:
    """One training event (or sector) ready for the networks."""

    features: torch.Tensor  # [N, F] float32
    particle: np.ndarray  # [N] particle id, 0 for noise
    truth: np.ndarray  # [2, T] truth-graph edges (undirected)
    truth_keys: np.ndarray  # sorted keys low * N + high of the truth edges
    phi: np.ndarray  # [N] azimuth of each hit
    pt: np.ndarray  # [N] transverse momentum (GeV) of each hit's particle, 0 for noise
    spacepoints: Spacepoints  # the hits themselves (for the pair cuts)


def make_sample(event: Event) -> Sample:
    """Features, particle ids and truth graph of one event."""
    truth = np.sort(np.asarray(truth_graph(event), dtype=np.int64), axis=0)
    n = len(event.spacepoints)
    return Sample(
        features=torch.from_numpy(spacepoint_features(event.spacepoints)),
        particle=np.asarray(event.known_truth().particle_id, dtype=np.int64),
        truth=truth,
        truth_keys=np.unique(truth[0] * n + truth[1]),
        phi=event.spacepoints.phi,
        pt=hit_particle_pt(event),
        spacepoints=event.spacepoints,
    )


def edge_labels(sample: Sample, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label (1 truth edge / 0) and loss weight (0 for same-particle non-truth pairs) of each edge."""
    n = len(sample.particle)
    keys = np.minimum(edges[0], edges[1]) * n + np.maximum(edges[0], edges[1])
    label = np.isin(keys, sample.truth_keys)
    same = (sample.particle[edges[0]] == sample.particle[edges[1]]) & (sample.particle[edges[0]] != 0)
    weight = np.where(same & ~label, 0.0, 1.0)
    return label.astype(np.float32), weight.astype(np.float32)


def step_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    """The random generator of one training step (independent of where a run was resumed)."""
    return np.random.default_rng([seed, stage, step])


@attrs.frozen
class TrainingStep:
    """The step function of one stage (``step(index)`` takes training step ``index`` and returns its loss), with the
    optimiser it steps and the stage's learning rate (before the decay :func:`run_stage` applies)."""

    run: Callable[[int], float]
    optimizer: torch.optim.Optimizer
    learning_rate: float

    def __call__(self, index: int) -> float:
        return self.run(index)


def train_embedding(
    model: EmbeddingNet, samples: list[Sample], config: EmbeddingTraining, seed: int, data: DataConfig, cuts: PairCuts
) -> TrainingStep:
    """The step function of the embedding stage (returns the loss of one step on the sector of a training event that
    :func:`embedding_sector` picks, NaN without a step where the model's embedding is not finite); ``cuts`` are the
    graph's pair cuts (used when ``config.compatible_search`` is set)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def step(index: int) -> float:
        rng = step_rng(seed, 1, index)
        whole = samples[rng.integers(len(samples))]
        sample = _sub_sample(whole, embedding_sector(whole, data, config.focus_fraction, rng))
        n = len(sample.particle)
        if not n:  # an empty sector (a tiny data.sector_fraction) takes no step
            return 0.0
        embedding = model(sample.features)
        if not bool(torch.isfinite(embedding).all()):  # a diverged model: no neighbours to mine, the loss is undefined
            return math.nan
        query = rng.choice(n, size=min(config.query_hits, n), replace=False)
        # truth-graph positives touching the queries
        is_query = np.zeros(n, dtype=bool)
        is_query[query] = True
        truth = sample.truth[:, is_query[sample.truth[0]] | is_query[sample.truth[1]]]
        # hard negatives: nearest hits in the current embedding
        hard = _hard_negatives(embedding.detach().numpy(), query, sample, config, cuts)
        random = np.stack(
            (np.repeat(query, config.random_negatives), rng.integers(n, size=len(query) * config.random_negatives))
        )
        pairs = np.concatenate((truth, hard, random), axis=1)
        pairs = pairs[:, pairs[0] != pairs[1]]
        same = (sample.particle[pairs[0]] == sample.particle[pairs[1]]) & (sample.particle[pairs[0]] != 0)
        fast = sample.pt[pairs[0]] >= config.positive_pt_min
        positive, negative = torch.from_numpy(same & fast), torch.from_numpy(~same)
        distance2 = ((embedding[pairs[0]] - embedding[pairs[1]]) ** 2).sum(dim=1)
        distance = torch.sqrt(distance2 + 1e-12)
        negative_loss = torch.relu(config.margin - distance) ** 2
        # a class absent from the step (no fast particle in a small low-pile-up sector) adds nothing, not NaN
        loss = distance2[positive].sum() / max(int(positive.sum()), 1)
        loss = loss + negative_loss[negative].sum() / max(int(negative.sum()), 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return TrainingStep(step, optimizer, config.learning_rate)


def embedding_sector(sample: Sample, data: DataConfig, focus_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rows of the sector one embedding step trains on: ``data.sector_fraction`` of the event around a random
    azimuth or, with probability ``focus_fraction``, around a random hit of a particle with pT ≥ ``data.focus_pt_min``
    (no extra random draw when ``focus_fraction`` is 0: the sectors of configurations without it stay the same)."""
    centre = None
    if focus_fraction > 0 and rng.random() < focus_fraction:
        fast = np.flatnonzero(sample.pt >= data.focus_pt_min)
        centre = float(sample.phi[rng.choice(fast)]) if len(fast) else None
    return sector(sample.phi, data.sector_fraction, rng, centre)


def _hard_negatives(
    embedding: np.ndarray, query: np.ndarray, sample: Sample, config: EmbeddingTraining, cuts: PairCuts
) -> np.ndarray:
    """Pairs [2, Q·h] of each query hit and its ``h = config.hard_negatives`` nearest other hits in the current
    embedding; with ``config.compatible_search``, the nearest among that many that pass the pair ``cuts``."""
    n = len(embedding)
    search = config.compatible_search or config.hard_negatives
    k = min(search + 1, n)
    _, near = cKDTree(embedding).query(embedding[query], k=k)
    first, second = np.repeat(query, k - 1), near.reshape(len(query), k)[:, 1:].ravel()
    if not config.compatible_search:
        return np.stack((first, second))
    keep = PairGeometry(sample.spacepoints, cuts).compatible(first, second)
    rank = np.cumsum(keep.reshape(len(query), k - 1), axis=1).ravel()
    keep &= rank <= config.hard_negatives
    return np.stack((first[keep], second[keep]))


def train_edges(model: FilterNet, graphs: list[dict[str, Any]], config: FilterTraining, seed: int) -> TrainingStep:
    """The step function of the filter stage: a random batch of edges from a random training graph."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def step(index: int) -> float:
        rng = step_rng(seed, 2, index)
        graph = graphs[rng.integers(len(graphs))]
        n_edges = graph["edges"].shape[1]
        pick = rng.choice(n_edges, size=min(config.batch_edges, n_edges), replace=False)
        edges = torch.from_numpy(graph["edges"][:, pick])
        logits = model.logits(graph["features"], graph["embedding"], edges)
        return _balanced_bce_step(optimizer, logits, graph["label"][pick], graph["weight"][pick])

    return TrainingStep(step, optimizer, config.learning_rate)


def train_gnn(model: InteractionGNN, graphs: list[dict[str, Any]], config: GNNTraining, seed: int) -> TrainingStep:
    """The step function of the GNN stage: one whole filtered training graph per step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def step(index: int) -> float:
        rng = step_rng(seed, 3, index)
        graph = graphs[rng.integers(len(graphs))]
        logits = model.logits(graph["features"], torch.from_numpy(graph["edges"]))
        return _balanced_bce_step(optimizer, logits, graph["label"], graph["weight"])

    return TrainingStep(step, optimizer, config.learning_rate)


def _balanced_bce_step(
    optimizer: torch.optim.Optimizer, logits: torch.Tensor, label: np.ndarray, weight: np.ndarray
) -> float:
    """One optimiser step on the edge-weighted, class-balanced binary cross-entropy; returns the loss.  A batch
    without an edge of non-zero weight (an empty graph) takes no step and counts 0, where the loss would be 0/0."""
    if not (weight > 0).any():
        return 0.0
    labels = torch.from_numpy(label)
    weights = torch.from_numpy(weight) * _class_weight(labels)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    loss = (losses * weights).sum() / weights.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _class_weight(label: torch.Tensor) -> torch.Tensor:
    """Weights that give both classes equal total weight in a batch."""
    n_true = float(label.sum())
    n_false = float(len(label)) - n_true
    if n_true == 0 or n_false == 0:
        return torch.ones_like(label)
    return torch.where(label > 0.5, len(label) / (2 * n_true), len(label) / (2 * n_false))


def run_stage(
    name: str,
    model: torch.nn.Module,
    step: TrainingStep,
    steps: int,
    checkpoint_dir: Path,
    checkpoint_every: int,
) -> dict[str, Any]:
    """Run ``steps`` steps of one stage with checkpoints (resuming from ``checkpoint_dir/name.pt``)."""
    path = checkpoint_dir / f"{name}.pt"
    start, history = 0, []
    if path.exists():
        state = _read_checkpoint(path)
        try:
            model.load_state_dict(state["model"])
            step.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{path}: the {name} it holds is not the one the training options give ({_first_sentence(error)}); "
                f"resume with the options it was trained with, train into another --output, or remove {path} to "
                f"train the {name} from step 0"
            ) from None
        start, history = state["step"], state["history"]
        if start > steps:
            raise CheckpointError(
                f"{path}: the {name} was trained for {start} steps, more than {name}.steps = {steps}; resume with "
                f"{name}.steps of at least {start}, or remove {path} to train the {name} from step 0"
            )
    began = time.perf_counter()
    model.train()
    with tqdm(range(start, steps), desc=f"train {name}", initial=start, total=steps, mininterval=5) as bar:
        for index in bar:
            for group in step.optimizer.param_groups:  # cosine decay, a function of the step alone
                group["lr"] = step.learning_rate * 0.5 * (1.0 + math.cos(math.pi * index / steps))
            loss = step(index)
            _refuse_divergence(name, model, step, index, loss)
            history.append(loss)
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}", refresh=False)
            if (index + 1) % checkpoint_every == 0 or index + 1 == steps:
                state = {"model": model.state_dict(), "optimizer": step.optimizer.state_dict(), "step": index + 1}
                _save_checkpoint({**state, "history": history}, path)
    model.eval()
    return {"steps": steps, "resumed_at": start, "seconds": time.perf_counter() - began,
            "final_loss": float(np.mean(history[-50:])) if history else math.nan}  # fmt: skip


def _refuse_divergence(name: str, model: torch.nn.Module, step: TrainingStep, index: int, loss: float) -> None:
    """Raise :class:`TrackingError` naming the stage, the step and its learning rate when step ``index`` gave a loss
    or weights that are not finite (a diverging training: a learning rate too large), before they are saved or
    exported."""
    if math.isfinite(loss) and _all_finite(model.state_dict()):
        return
    raise TrackingError(
        f"the {name} training diverged at step {index} (its loss or weights are no longer finite); lower "
        f"{name}.learning_rate (now {step.learning_rate:g})"
    )


def _all_finite(value: Any) -> bool:
    """Whether every tensor in ``value`` (a tensor, or dicts, lists and tuples of them) is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(item) for item in value)
    return True


def _keep_to_options(checkpoints: Path, config: TrainConfig) -> None:
    """Record the training options beside the checkpoints of a new training (:data:`OPTIONS_FILE`), replacing those of
    a training that stopped before its first checkpoint (they bind no model); where they are recorded beside
    checkpoints, raise :class:`CheckpointError` naming the options that differ, but for those of
    :data:`FREE_ON_RESUME` and the stages' ``steps`` (a resumed training may go on for longer: the draws of a step do
    not depend on how many follow): models resumed under other options would depend on where the first run stopped.
    Checkpoints without the file are resumed as they are (a model of another shape is refused as it is loaded)."""
    options = unstructure(config)
    path = checkpoints / OPTIONS_FILE
    _refuse_wrong_kind(path, directory=False)
    if not has_checkpoints(checkpoints):  # options recorded by a run stopped before its first checkpoint are replaced
        path.write_text(json.dumps(options, indent=2, sort_keys=True) + "\n")
        return
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_bytes())
    except ValueError as error:
        raise CheckpointError(f"{path} cannot be read ({error}); train into another --output") from None
    differences = [
        (key, *values)
        for key, *values in option_differences(recorded, options)
        if key not in FREE_ON_RESUME and not key.endswith(".steps")
    ]
    if differences:
        raise CheckpointError(
            f"the training options differ from those of the checkpoints in {checkpoints} "
            f"({describe_differences(differences, 'there')}); resume with the same options (see {path}), or train "
            "into another --output"
        )


def _refuse_wrong_kind(path: Path, directory: bool) -> None:
    """Raise :class:`CheckpointError` when ``path`` exists but is not a directory (``directory``) or a file (else)."""
    if not path.exists() or path.is_dir() == directory:
        return
    expected, found = ("a directory of checkpoints", "a file") if directory else ("a file", "a directory")
    raise CheckpointError(f"{path}: expected {expected}, found {found}; remove it, or train into another --output")


def has_checkpoints(checkpoints: Path) -> bool:
    """Whether the directory ``checkpoints`` holds a stage's checkpoint (``*.pt``)."""
    return any(checkpoints.glob("*.pt"))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`run_stage`; :class:`CheckpointError` naming the file when it cannot be read."""
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain values: no code runs
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
    ) as error:  # truncated, emptied, damaged
        raise CheckpointError(
            f"{path}: cannot be read as a training checkpoint ({_first_sentence(error)}); remove it to train this "
            "stage from step 0"
        ) from None
    fault = _checkpoint_fault(path, state)
    if fault:
        raise CheckpointError(f"{path}: not a training checkpoint ({fault}); remove it to train this stage from step 0")
    return state


def _checkpoint_fault(path: Path, state: Any) -> str | None:
    """What is wrong with the checkpoint ``state`` loaded from ``path``, in words; None when nothing is."""
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "history"} <= state.keys():
        return "expected the model, its optimizer, step and history"
    step, history = state["step"], state["history"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"its step is {step!r}, not a whole number ≥ 0"
    if not isinstance(history, list) or not all(_is_number(loss) for loss in history):
        return "its history is not a list of losses"
    if not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict):
        return "its model or optimizer is not a state dict"
    if not _all_finite([state["model"], state["optimizer"]]):
        return "its model or optimizer holds values that are not finite"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return f"not a zip archive: {error}"
    return f"{damaged} fails its checksum" if damaged else None


def _is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _first_sentence(error: BaseException) -> str:
    """The gist of a torch error for a one-line message: its first line that says something specific (torch's
    ``load_state_dict`` gives a title line, then one line per mismatch), up to its first full stop."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [type(error).__name__]
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line.split(". ")[0].rstrip(".")[:300]


def _save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save ``state`` whole or not at all (:func:`~tracking_algs.io.atomic.write_atomically`): Ctrl-C, SIGTERM or a
    full disk while it is saved leave the previous checkpoint as it was."""
    content = io.BytesIO()
    torch.save(state, content)
    write_atomically(path, content.getvalue())


def sector(phi: np.ndarray, fraction: float, rng: np.random.Generator, centre: float | None = None) -> np.ndarray:
    """Indices of the hits (azimuths ``phi``) in an azimuthal sector holding ``fraction`` of the event,
    centred on the azimuth ``centre`` (a random one when None)."""
    start = rng.uniform(-math.pi, math.pi) if centre is None else centre - math.pi * fraction
    return np.flatnonzero(np.mod(phi - start, 2 * math.pi) < 2 * math.pi * fraction)


def training_sectors(sample: Sample, data: DataConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The sectors of one training event the filter and GNN train on: one random sector and
    ``data.focus_sectors`` sectors centred on random hits of particles with pT ≥ ``data.focus_pt_min``."""
    sectors = [sector(sample.phi, data.sector_fraction, rng)]
    fast = np.flatnonzero(sample.pt >= data.focus_pt_min)
    if len(fast):
        for centre in sample.phi[rng.choice(fast, size=data.focus_sectors)]:
            sectors.append(sector(sample.phi, data.sector_fraction, rng, centre=float(centre)))
    return sectors


def build_graph(embedding: np.ndarray, spacepoints: Spacepoints, radius: float, graph: GraphConfig) -> np.ndarray:
    """The finder's candidate edges among ``spacepoints`` (embedded as ``embedding``), oriented inside-out."""
    return orient_edges(candidate_edges(embedding, spacepoints, radius, graph), spacepoints)


def choose_radius(model: EmbeddingNet, samples: list[Sample], efficiency: float, pt_min: float = 0.0) -> float:
    """The radius that keeps ``efficiency`` of the truth edges of the training events' particles of at least
    ``pt_min`` GeV (those the embedding pulls together)."""
    distances = []
    with torch.no_grad():
        for sample in samples:
            embedding = model(sample.features).numpy()
            truth = sample.truth[:, sample.pt[sample.truth[0]] >= pt_min]
            distances.append(np.linalg.norm(embedding[truth[0]] - embedding[truth[1]], axis=1))
    if not sum(map(len, distances)):
        raise TrackingError(
            f"no truth edges of particles of at least {pt_min:g} GeV in the training events to choose the graph "
            f"radius from: lower embedding.positive_pt_min (now {pt_min:g})"
        )
    return float(np.quantile(np.concatenate(distances), efficiency))


def embedding_axes(model: EmbeddingNet, samples: list[Sample], min_spread: float) -> PrincipalAxes:
    """The principal axes of ``model``'s embedding of the ``samples``' hits with a spread of at least ``min_spread``
    (0: all of them)."""
    with torch.no_grad():
        points = np.concatenate([model(sample.features).numpy() for sample in samples])
    return principal_axes(points, min_spread)


def sector_graphs(
    model: EmbeddingNet,
    samples: list[Sample],
    radius: float,
    config: TrainConfig,
) -> list[dict[str, Any]]:
    """Filter training data: the sector graphs (:func:`training_sectors`) of every training event with
    features, embedding and labels; :class:`TrackingError` naming the options when none holds a truth edge."""
    graphs = []
    with torch.no_grad():
        for index, sample in enumerate(samples):
            for rows in training_sectors(sample, config.data, step_rng(config.seed, 4, index)):
                if not len(rows):  # an empty sector (a tiny data.sector_fraction): no graph
                    continue
                sub = _sub_sample(sample, rows)
                embedding = model(sub.features)
                edges = build_graph(embedding.numpy(), sub.spacepoints, radius, config.graph)
                label, weight = edge_labels(sub, edges)
                graphs.append({"features": sub.features, "embedding": embedding, "edges": edges, "label": label,
                               "weight": weight})  # fmt: skip
    _refuse_without_truth_edges(graphs, config)
    return graphs


def _refuse_without_truth_edges(graphs: list[dict[str, Any]], config: TrainConfig) -> None:
    """Raise :class:`TrackingError` naming the options that leave no truth edge in the training ``graphs``: the filter
    would have nothing to learn and its cut no truth edge to keep."""
    if any(graph["label"].any() for graph in graphs):
        return
    cuts = config.graph.cuts
    raise TrackingError(
        f"no truth edges pass graph.cuts (min_pt_gev={cuts.min_pt_gev:g}, max_z0_mm={cuts.max_z0_mm:g}) in the "
        f"training sectors (data.sector_fraction={config.data.sector_fraction:g}): loosen the cuts or widen the sectors"
    )


def _sub_sample(sample: Sample, rows: np.ndarray) -> Sample:
    """The sample restricted to ``rows``, with the truth edges inside them renumbered."""
    n = len(sample.particle)
    new_index = np.full(n, -1, dtype=np.int64)
    new_index[rows] = np.arange(len(rows))
    truth = new_index[sample.truth]
    truth = truth[:, (truth >= 0).all(axis=0)]
    return Sample(
        features=sample.features[torch.from_numpy(rows)],
        particle=sample.particle[rows],
        truth=truth,
        truth_keys=np.unique(truth[0] * len(rows) + truth[1]),
        phi=sample.phi[rows],
        pt=sample.pt[rows],
        spacepoints=sample.spacepoints.take(rows),
    )


def choose_filter_cut(model: FilterNet, graphs: list[dict[str, Any]], efficiency: float) -> float:
    """The filter cut that keeps ``efficiency`` of the truth edges in the training graphs."""
    scores = []
    with torch.no_grad():
        for graph in graphs:
            true = graph["label"] > 0.5
            edges = torch.from_numpy(graph["edges"][:, true])
            scores.append(model(graph["features"], graph["embedding"], edges).numpy())
    return float(np.quantile(np.concatenate(scores), 1.0 - efficiency))


def filtered_graphs(model: FilterNet, graphs: list[dict[str, Any]], cut: float) -> list[dict[str, Any]]:
    """GNN training data: the training graphs with only the edges that pass the filter cut."""
    result = []
    with torch.no_grad():
        for graph in graphs:
            scores = model(graph["features"], graph["embedding"], torch.from_numpy(graph["edges"])).numpy()
            keep = scores > cut
            result.append({**graph, "edges": np.ascontiguousarray(graph["edges"][:, keep]),
                           "label": graph["label"][keep], "weight": graph["weight"][keep]})  # fmt: skip
    return result


def simulated_events(
    seed: int, simulations: list[SimulationConfig], field: MagneticField | None = None
) -> Iterator[Event]:
    """Events 0, 1, ... of ``seed``, each simulated with its own settings, in ``field`` (None: uniform)."""
    for event_id, simulation in enumerate(simulations):
        yield simulate_event(simulation, seed, event_id, field=field)


def train(config: TrainConfig, output: str | Path, validate: Callable[[Path, TrainConfig], dict] | None = None) -> dict:
    """Train the three models, export them to ``output`` as ONNX and write the model card.

    ``validate(output, config)`` (optional) computes held-out metrics with the exported models; they
    go into the card. Returns the card. Torch runs with its deterministic algorithms meanwhile: the scatter-adds of
    the backward passes otherwise sum in an order that depends on the threads, and two runs of one configuration
    would give different models.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(config, Path(output), validate)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(config: TrainConfig, output: Path, validate: Callable[[Path, TrainConfig], dict] | None) -> dict:
    assert config.data.train_seed < VALIDATION_SEED_MIN <= config.data.validation_seed, "seed ranges overlap"
    checkpoints = output / "checkpoints"
    _refuse_wrong_kind(checkpoints, directory=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
    _keep_to_options(checkpoints, config)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    began = time.perf_counter()

    simulations = [config.data.simulation(event_id) for event_id in range(config.data.train_events)]
    events = tqdm(simulated_events(config.data.train_seed, simulations, config.data.magnetic_field()),
                  total=config.data.train_events, desc="simulate training events", mininterval=5)  # fmt: skip
    samples = [make_sample(event) for event in events]  # a sample keeps what training needs of its event
    n_features = len(FEATURE_NAMES)
    timing: dict[str, Any] = {}

    embedding = EmbeddingNet(n_features, config.embedding.hidden, config.embedding.dim)
    chosen = config.embedding.pileups
    embedding_samples = [s for s, sim in zip(samples, simulations, strict=True) if not chosen or sim.pileup in chosen]
    step = train_embedding(embedding, embedding_samples, config.embedding, config.seed, config.data, config.graph.cuts)
    timing["embedding"] = run_stage("embedding", embedding, step, config.embedding.steps, checkpoints,
                                    config.checkpoint_every)  # fmt: skip
    radius = choose_radius(embedding, samples, config.filter.radius_efficiency, config.embedding.positive_pt_min)
    graphs = sector_graphs(embedding, samples, radius, config)

    filter_model = FilterNet(n_features, config.embedding.dim, config.filter.hidden)
    step = train_edges(filter_model, graphs, config.filter, config.seed)
    timing["filter"] = run_stage("filter", filter_model, step, config.filter.steps, checkpoints,
                                 config.checkpoint_every)  # fmt: skip
    cut = choose_filter_cut(filter_model, graphs, config.filter.filter_efficiency)
    graphs = filtered_graphs(filter_model, graphs, cut)

    gnn = InteractionGNN(n_features, config.gnn.hidden, config.gnn.iterations)
    step = train_gnn(gnn, graphs, config.gnn, config.seed)
    timing["gnn"] = run_stage("gnn", gnn, step, config.gnn.steps, checkpoints, config.checkpoint_every)

    compaction: dict[str, Any] = {}
    if config.embedding.compact_spread > 0:
        principal = embedding_axes(embedding, embedding_samples, config.embedding.compact_spread * radius)
        embedding, filter_model = compact_models(embedding, filter_model, principal)
        compaction = {"embedding_axes": {"kept": principal.axes.shape[1], "spread": principal.spread.tolist()}}
    card: dict[str, Any] = {
        "format": 1,
        "features": list(FEATURE_NAMES),
        "models": {name: f"{name}.onnx" for name in ("embedding", "filter", "gnn")},
        "recommended": {"radius": radius, "filter_cut": cut, "gnn_cut": FindingConfig().gnn.cut},
        **compaction,
        "training_config": unstructure(config),
        "data": {
            "simulation": unstructure(simulations[0]),
            "training_events": {
                "seed": config.data.train_seed,
                "event_ids": list(range(config.data.train_events)),
                "pileups": [simulation.pileup for simulation in simulations],
            },
            "validation_events": {
                "seed": config.data.validation_seed,
                "event_ids": list(range(config.data.validation_events)),
            },
            "seed_rule": f"training seeds < {VALIDATION_SEED_MIN} <= validation seeds",
        },
        "training": {
            **timing,
            "total_seconds": time.perf_counter() - began,
            "graph_edges_per_sector": float(np.mean([g["edges"].shape[1] for g in graphs])),
        },
    }
    export_models(output, {"embedding": embedding, "filter": filter_model, "gnn": gnn}, card)
    if validate is not None:
        card["held_out_metrics"] = validate(output, config)
        write_atomically(output / CARD_NAME, _card_bytes(card))
    return card


def export_models(output: Path, models: dict[str, torch.nn.Module], card: dict[str, Any]) -> None:
    """Export ``models`` (stage → model) as ONNX and write their ``card`` into ``output`` so that a directory with a
    card always holds that card's models: all are written into :data:`STAGING_DIR` first (a leftover one removed),
    then the old card is removed, the models are moved into place, and the card is moved in last. An export stopped
    half-way (Ctrl-C, a full disk) leaves the old models with their card, or models without a card."""
    staging = output / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, model in models.items():
        export_onnx(name, model, staging / f"{name}.onnx")
    (staging / CARD_NAME).write_bytes(_card_bytes(card))
    (output / CARD_NAME).unlink(missing_ok=True)
    for name in models:
        os.replace(staging / f"{name}.onnx", output / f"{name}.onnx")
    os.replace(staging / CARD_NAME, output / CARD_NAME)
    staging.rmdir()


def _card_bytes(card: dict[str, Any]) -> bytes:
    """The model card as written to :data:`~tracking_algs.finding.model_dir.CARD_NAME`."""
    return json.dumps(card, indent=2).encode()
