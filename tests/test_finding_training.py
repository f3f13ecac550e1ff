"""A tiny training run: checkpoints, resume, ONNX export and a model card with the data seeds."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import attrs
import numpy as np
import onnx
import pytest
import tomllib
import torch
from onnx import numpy_helper
from scipy.spatial import cKDTree

from inference_iface import ConfigError
from inference_iface.options import structure
from tracking_algs.cli import main
from tracking_algs.finding.config import PairCuts
from tracking_algs.finding.model_dir import CARD_NAME, STAGES
from tracking_algs.finding.models import EmbeddingNet, FilterNet
from tracking_algs.finding.pairs import PairGeometry
from tracking_algs.finding.training import (
    OPTIONS_FILE,
    VALIDATION_SEED_MIN,
    DataConfig,
    EmbeddingTraining,
    TrainConfig,
    _balanced_bce_step,
    _hard_negatives,
    choose_radius,
    embedding_sector,
    make_sample,
    sector,
    step_rng,
    train,
    train_embedding,
    training_sectors,
)
from tracking_algs.magnetic_field import SolenoidField, UniformField
from tracking_algs.simulation import SimulationConfig, simulate_event

SHIPPED = Path(__file__).resolve().parents[1] / "tracking_algs" / "finding" / "shipped"
TINY = """
seed = 3
checkpoint_every = 2
[data]
pileups = [3.0, 0.0]
train_seed = 11
train_events = 2
validation_seed = 1000011
validation_events = 1
validation_pileups = [3.0]
sector_fraction = 0.5
focus_sectors = 1
beam_spot_sigma_z_mm = 80.0
[embedding]
hidden = [16]
steps = 4
query_hits = 100
compatible_search = 20
positive_pt_min = 0.2
focus_fraction = 0.5
pileups = [3.0]
[filter]
hidden = [16]
steps = 4
batch_edges = 500
[gnn]
hidden = 8
iterations = 2
steps = 4
"""


def test_train_checkpoints_resumes_and_writes_the_card(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "model"
    assert main(["train", str(config), "--output", str(output)]) == 0
    for stage in STAGES:
        assert (output / f"{stage}.onnx").stat().st_size > 1000
        assert (output / "checkpoints" / f"{stage}.pt").is_file()
    card = json.loads((output / CARD_NAME).read_text())
    assert card["data"]["training_events"] == {"seed": 11, "event_ids": [0, 1], "pileups": [3.0, 0.0]}
    assert card["data"]["validation_events"]["seed"] == 1000011
    assert card["data"]["simulation"]["beam_spot_sigma_z_mm"] == 80.0  # the training events' luminous region
    assert card["training_config"]["data"]["train_seed"] == 11
    assert card["recommended"]["radius"] > 0
    held_out = card["held_out_metrics"]
    assert set(held_out) == {"pileup_3"}
    assert held_out["pileup_3"]["tracks"]["pt>1"]["n_selected"] > 0
    assert set(held_out["pileup_3"]["edges"]) == {"graph", "filter", "gnn"}
    for stage in STAGES:
        assert card["training"][stage]["resumed_at"] == 0

    # a second run with more steps continues from the checkpoints
    assert main(["train", str(config), "--output", str(output), "--set", "embedding.steps=6",
                 "--set", "filter.steps=6", "--set", "gnn.steps=6"]) == 0  # fmt: skip
    card = json.loads((output / CARD_NAME).read_text())
    for stage in STAGES:
        assert card["training"][stage]["resumed_at"] == 4
        assert card["training"][stage]["steps"] == 6
    assert "pileup_3" in capsys.readouterr().out  # the held-out metrics are printed
    assert "embedding_axes" not in card

    # exported again with the embedding compacted onto its widest axes: both models read the narrower embedding
    assert main(["train", str(config), "--output", str(output), "--set", "embedding.steps=6", "--set",
                 "filter.steps=6", "--set", "gnn.steps=6", "--set", "embedding.compact_spread=0.9"]) == 0  # fmt: skip
    card = json.loads((output / CARD_NAME).read_text())
    kept, spread = card["embedding_axes"]["kept"], card["embedding_axes"]["spread"]
    assert len(spread) == 8
    assert 1 <= kept < 8
    assert spread[kept - 1] >= 0.9 * card["recommended"]["radius"] or kept == 1
    assert spread[kept] < 0.9 * card["recommended"]["radius"]

    def width(stage: str, tensor: str) -> int:
        model = onnx.load(output / f"{stage}.onnx").graph
        (value,) = [v for v in [*model.input, *model.output] if v.name == tensor]
        return value.type.tensor_type.shape.dim[1].dim_value

    assert width("embedding", "embedding") == width("filter", "embedding") == kept
    assert card["held_out_metrics"]["pileup_3"]["tracks"]["pt>1"]["n_selected"] > 0


#: large enough sectors and batches that torch's multi-threaded scatter-adds would sum in varying order
REPRODUCIBLE = """
seed = 5
threads = 2
[data]
pileups = [20.0]
train_seed = 12
train_events = 1
validation_seed = 1000012
sector_fraction = 0.5
[embedding]
hidden = [128, 128]
steps = 6
query_hits = 1000
[filter]
hidden = [16]
steps = 2
batch_edges = 500
[gnn]
hidden = 8
iterations = 1
steps = 2
"""


def test_two_training_runs_give_the_same_models(tmp_path):
    config = structure(tomllib.loads(REPRODUCIBLE), TrainConfig)
    cards = [train(config, tmp_path / name) for name in ("a", "b")]
    assert cards[0]["recommended"] == cards[1]["recommended"]
    for stage in STAGES:
        first, second = (onnx.load(tmp_path / name / f"{stage}.onnx").graph.initializer for name in ("a", "b"))
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b), err_msg=a.name)
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored after training


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("trkx train: error: "), lines
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def test_an_interrupted_training_keeps_its_checkpoint_and_refuses_to_resume_another(tmp_path, capsys):
    """Ctrl-C stops a training with status 3 and one line, its checkpoints whole (each saved under a temporary name
    and renamed); resuming from a damaged checkpoint or one of another model shape is one line naming it, status 2,
    the checkpoint left as it was."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "model"
    checkpoint = output / "checkpoints" / "embedding.pt"
    argv = ["train", str(config), "--output", str(output), "--set", "embedding.steps=1000000"]
    with subprocess.Popen(
        [sys.executable, "-m", "tracking_algs.cli", *argv, "--set", "checkpoint_every=1"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        began = time.monotonic()
        while not checkpoint.exists() and process.poll() is None and time.monotonic() - began < 120:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"trkx train: stopped early: interrupted; the checkpoints are kept in {output / 'checkpoints'}; the same "
        "command resumes from them"
    )
    options = checkpoint.parent / OPTIONS_FILE
    assert sorted(path.name for path in checkpoint.parent.iterdir()) == ["embedding.pt", options.name]  # no temporary
    assert torch.load(checkpoint, weights_only=True)["step"] >= 1

    saved = checkpoint.read_bytes()
    assert main([*argv, "--set", "embedding.hidden=[32]", "--set", "seed=4"]) == 2  # refused before any simulation
    assert _error_line(capsys) == (
        f"trkx train: error: the training options differ from those of the checkpoints in {checkpoint.parent} "
        "(embedding.hidden: [16] there, [32] now; seed: 3 there, 4 now); resume with the same options (see "
        f"{options}), or train into another --output"
    )
    options.unlink()  # checkpoints without their options: a model of another shape is found as it is loaded
    assert main([*argv, "--set", "embedding.hidden=[32]"]) == 2
    assert _error_line(capsys) == (
        f"trkx train: error: {checkpoint}: the embedding it holds is not the one the training options give (size "
        "mismatch for net.0.weight: copying a param with shape torch.Size([16, 5]) from checkpoint, the shape in "
        "current model is torch.Size([32, 5])); resume with the options it was trained with, train into another "
        f"--output, or remove {checkpoint} to train the embedding from step 0"
    )
    assert checkpoint.read_bytes() == saved
    assert not options.exists()  # not recorded for checkpoints it did not see made
    runs_code = io.BytesIO()
    torch.save({"model": Path("x"), "optimizer": {}, "step": 1, "history": []}, runs_code)  # a class: code on load
    for damaged in (saved[: len(saved) // 2], b"", runs_code.getvalue()):
        checkpoint.write_bytes(damaged)
        assert main(argv) == 2
        assert _error_line(capsys).startswith(
            f"trkx train: error: {checkpoint}: cannot be read as a training checkpoint ("
        )
        assert checkpoint.read_bytes() == damaged


def test_training_refuses_an_output_of_models_without_checkpoints(tmp_path, capsys):
    """An ``--output`` holding models that no resumable training wrote (a copy of the shipped ones) is refused,
    status 2, and left as it was."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "models"
    shutil.copytree(SHIPPED, output)
    before = {path.name: path.read_bytes() for path in output.iterdir()}
    assert main(["train", str(config), "--output", str(output)]) == 2
    assert _error_line(capsys) == (
        f"trkx train: error: --output {output} holds models (model_card.json, embedding.onnx, filter.onnx, gnn.onnx) "
        "but no checkpoints/ to resume from; training would replace them: choose another --output, or remove them"
    )
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before


@pytest.mark.parametrize(("key", "value"), [("train_seed", VALIDATION_SEED_MIN), ("validation_seed", 5)])
def test_training_and_validation_seeds_cannot_overlap(key, value):
    with pytest.raises(ConfigError, match=key):
        structure({"data": {key: value}}, TrainConfig)


def test_the_embedding_pileups_must_be_among_the_training_events():
    with pytest.raises(ConfigError, match=r"embedding.pileups \[20.0\] are not among data.pileups \[200.0\]"):
        structure({"data": {"pileups": [200.0]}, "embedding": {"pileups": [20.0]}}, TrainConfig)
    config = structure({"data": {"pileups": [200.0, 0.0]}, "embedding": {"pileups": [200.0]}}, TrainConfig)
    assert config.embedding.pileups == (200.0,)


def test_focus_sectors_hold_the_fast_particles():
    event = simulate_event(SimulationConfig(pileup=20.0), 7, 0)
    sample = make_sample(event)
    fast = sample.pt >= 2.0
    assert 0 < fast.sum() < len(fast)
    assert (sample.pt[event.truth.particle_id == 0] == 0).all()
    data = DataConfig(sector_fraction=0.05, focus_sectors=4, focus_pt_min=2.0)
    sectors = training_sectors(sample, data, step_rng(0, 4, 0))
    assert len(sectors) == 5
    for rows in sectors[1:]:
        assert 0 < len(rows) < len(fast) / 5
        assert fast[rows].any()  # each focus sector is centred on a fast particle's hit


def test_embedding_sectors_focus_on_fast_particles_as_often_as_asked():
    sample = make_sample(simulate_event(SimulationConfig(pileup=20.0), 7, 0))
    fast = sample.pt >= 5.0
    data = DataConfig(sector_fraction=0.02, focus_pt_min=5.0)
    sectors = [embedding_sector(sample, data, 1.0, step_rng(0, 1, step)) for step in range(40)]
    assert all(fast[rows].any() for rows in sectors)  # every sector is centred on a fast particle's hit
    random = [embedding_sector(sample, data, 0.0, step_rng(0, 1, step)) for step in range(40)]
    assert sum(fast[rows].any() for rows in random) < 20  # random sectors mostly miss the few fast particles (6 of 40)
    # without focus, the sector is the plain random one of the same generator (configurations without it draw as before)
    for step, rows in enumerate(random):
        assert rows.tolist() == sector(sample.phi, 0.02, step_rng(0, 1, step)).tolist()


def test_an_embedding_step_without_positive_pairs_has_a_finite_loss():
    sample = make_sample(simulate_event(SimulationConfig(pileup=0.0), 7, 0))
    model = EmbeddingNet(sample.features.shape[1], (16,), 4)
    config = EmbeddingTraining(query_hits=50, positive_pt_min=1e3)  # no particle counts as a positive
    step = train_embedding(model, [sample], config, 0, DataConfig(sector_fraction=0.2), PairCuts())
    losses = [step(index) for index in range(3)]
    assert np.isfinite(losses).all()
    assert min(losses) > 0


def test_an_edge_step_without_weighted_edges_leaves_the_model_alone():
    model = FilterNet(5, 4, (8,))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    features, embedding = torch.rand((6, 5)), torch.rand((6, 4))
    edges = torch.tensor([[0, 1, 2], [3, 4, 5]])
    label = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    logits = model.logits(features, embedding, edges)
    assert _balanced_bce_step(optimizer, logits, label, np.zeros(3, dtype=np.float32)) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    loss = _balanced_bce_step(optimizer, model.logits(features, embedding, edges), label, np.ones(3, np.float32))
    assert np.isfinite(loss)
    assert loss > 0
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_radius_keeps_the_asked_share_of_the_fast_particles_truth_edges():
    samples = [make_sample(simulate_event(SimulationConfig(pileup=5.0), 7, index)) for index in range(2)]
    model = EmbeddingNet(samples[0].features.shape[1], (16,), 4).eval()
    radius_all = choose_radius(model, samples, 0.9)
    radius_fast = choose_radius(model, samples, 0.9, pt_min=1.0)
    assert radius_fast != radius_all
    kept = []
    for sample in samples:
        embedding = model(sample.features).detach().numpy()
        fast = sample.truth[:, sample.pt[sample.truth[0]] >= 1.0]
        kept.append(np.linalg.norm(embedding[fast[0]] - embedding[fast[1]], axis=1) <= radius_fast)
    assert np.concatenate(kept).mean() == pytest.approx(0.9, abs=0.01)


def test_hard_negatives_are_the_nearest_compatible_hits():
    event = simulate_event(SimulationConfig(pileup=3.0), 11, 0)
    sample = make_sample(event)
    embedding = sample.features.numpy()  # any embedding will do: the hits' own features
    query = np.arange(0, len(embedding), 7)
    cuts = PairCuts()
    config = EmbeddingTraining(hard_negatives=5, compatible_search=40)
    first, second = _hard_negatives(embedding, query, sample, config, cuts)
    geometry = PairGeometry(sample.spacepoints, cuts)
    assert geometry.compatible(first, second).all()
    # per query: the 5 nearest of its 40 nearest neighbours that pass the cuts, found by brute force
    _, near = cKDTree(embedding).query(embedding[query], k=41)
    for hit, row in zip(query[:50], near[:50], strict=True):
        others = row[1:]
        expected = others[geometry.compatible(np.full(len(others), hit), others)][:5]
        assert second[first == hit].tolist() == expected.tolist()
    # without the search, the plain 5 nearest, compatible or not
    plain = _hard_negatives(embedding, query, sample, EmbeddingTraining(hard_negatives=5), cuts)
    assert plain[1].tolist() == near[:, 1:6].ravel().tolist()
    assert not geometry.compatible(*plain).all()


def test_the_training_events_come_from_the_configured_simulation():
    """``[data] geometry`` picks the simulation of the training and validation events; the default stays the
    cylinders, and an unknown geometry is refused."""
    assert DataConfig().simulation(0).geometry == "cylinders"
    config = structure({"data": {"geometry": "modules", "pileups": [200.0, 20.0]}}, TrainConfig)
    assert [config.data.simulation(i).pileup for i in range(2)] == [200.0, 20.0]
    assert {config.data.simulation(i).geometry for i in range(2)} == {"modules"}
    validation = config.data.validation_simulation(20.0)
    assert (validation.geometry, validation.pileup) == ("modules", 20.0)
    assert validation.beam_spot_sigma_z_mm == SimulationConfig().beam_spot_sigma_z_mm  # the simulation's default
    with pytest.raises(ConfigError, match="geometry"):
        structure({"data": {"geometry": "cones"}}, TrainConfig)
    assert config.data.magnetic_field() == UniformField(2.0)
    in_solenoid = structure({"data": {"field": {"kind": "solenoid"}}}, TrainConfig)
    assert in_solenoid.data.magnetic_field() == SolenoidField(2.0)


def test_the_training_events_lose_energy_and_take_long_steps_in_pieces_where_asked():
    """``[data] energy_loss`` and ``step_tolerance_mm`` reach the simulation of the training and the validation
    events alike; by default neither (one step per surface, no loss), as the shipped model sets were trained."""
    default = DataConfig()
    assert not default.simulation(0).energy_loss
    assert default.simulation(0).step_tolerance_mm == 0.0
    config = structure({"data": {"energy_loss": True, "step_tolerance_mm": 0.002}}, TrainConfig)
    for simulation in (config.data.simulation(0), config.data.validation_simulation(200.0)):
        assert simulation.energy_loss
        assert simulation.step_tolerance_mm == 0.002
    with pytest.raises(ConfigError, match="energy_loss"):
        structure({"data": {"energy_loss": "often"}}, TrainConfig)


@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory) -> Path:
    """The output of a finished TINY training (models, card, checkpoints at step 4), to be copied, not changed."""
    output = tmp_path_factory.mktemp("tiny") / "model"
    train(structure(tomllib.loads(TINY), TrainConfig), output)
    return output


def _copy_of(training: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of a finished training in ``tmp_path`` with its TINY options file, and the ``trkx`` arguments that
    resume it."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = shutil.copytree(training, tmp_path / "model")
    return output, ["train", str(config), "--output", str(output)]


def test_an_export_stopped_half_way_leaves_no_card_beside_other_models(tiny_training, tmp_path):
    """The models and their card are written into a staging directory and moved into place card last, so a model
    directory with a card holds that card's models, even when the moves stop half-way; the next export removes the
    leftover staging directory."""
    output, _ = _copy_of(tiny_training, tmp_path)
    names = [CARD_NAME, *(f"{stage}.onnx" for stage in STAGES)]
    before = {name: (output / name).read_bytes() for name in names}
    (output / "filter.onnx").unlink()
    (output / "filter.onnx" / "blocked").mkdir(parents=True)  # the filter cannot be put in place
    config = structure(tomllib.loads(TINY), TrainConfig)
    longer = attrs.evolve(config, embedding=attrs.evolve(config.embedding, steps=6))
    with pytest.raises(IsADirectoryError):
        train(longer, output)
    assert (output / "embedding.onnx").read_bytes() != before["embedding.onnx"]  # the new embedding is in place
    assert not (output / CARD_NAME).exists()  # so the old card, whose radius is the old embedding's, is gone

    shutil.rmtree(output / "filter.onnx")
    card = train(longer, output)  # resumed at step 6: exports again
    assert json.loads((output / CARD_NAME).read_text()) == card
    assert card["training"]["embedding"]["steps"] == 6
    assert sorted(path.name for path in output.iterdir()) == sorted(["checkpoints", *names])  # no staging left


def _rewritten(checkpoint: Path, **values) -> bytes:
    """The checkpoint with ``values`` in place of its own, as saved by torch."""
    state = torch.load(checkpoint, weights_only=True)
    content = io.BytesIO()
    torch.save({**state, **values}, content)
    return content.getvalue()


def _overwritten(saved: bytes, fill: int) -> bytes:
    """The checkpoint ``saved`` with the bytes of its first weight tensor overwritten by ``fill`` (zip CRC stale)."""
    with zipfile.ZipFile(io.BytesIO(saved)) as archive:
        name = next(name for name in archive.namelist() if "/data/" in name and not name.endswith(".pkl"))
        tensor = archive.read(name)
    at = saved.index(tensor)
    return saved[:at] + bytes([fill]) * len(tensor) + saved[at + len(tensor) :]


def test_a_checkpoint_that_holds_wrong_values_is_refused(tiny_training, tmp_path, capsys):
    """A checkpoint that loads but whose step, history, model or optimizer are not what a training saves, whose
    weights are not finite, or whose bytes fail the zip's checksums, is refused: one line naming it, status 2, the
    file left as it was."""
    output, argv = _copy_of(tiny_training, tmp_path)
    checkpoint = output / "checkpoints" / "embedding.pt"
    saved = checkpoint.read_bytes()
    state = torch.load(checkpoint, weights_only=True)
    nan_model = {**state["model"], "net.0.weight": torch.full_like(state["model"]["net.0.weight"], math.nan)}
    not_finite = "its model or optimizer holds values that are not finite"
    for damaged, fault in (
        (_rewritten(checkpoint, step="x"), "its step is 'x', not a whole number ≥ 0"),
        (_rewritten(checkpoint, step=2.5), "its step is 2.5, not a whole number ≥ 0"),
        (_rewritten(checkpoint, step=-5), "its step is -5, not a whole number ≥ 0"),
        (_rewritten(checkpoint, history=None), "its history is not a list of losses"),
        (_rewritten(checkpoint, model=[1, 2]), "its model or optimizer is not a state dict"),
        (_rewritten(checkpoint, model=nan_model), not_finite),
        (_overwritten(saved, 0xFF), not_finite),  # NaN weights
        (_overwritten(saved, 0x00), "archive/data/0 fails its checksum"),  # finite weights, but not those saved
    ):
        checkpoint.write_bytes(damaged)
        assert main(argv) == 2
        assert _error_line(capsys) == (
            f"trkx train: error: {checkpoint}: not a training checkpoint ({fault}); remove it to train this stage "
            "from step 0"
        )
        assert checkpoint.read_bytes() == damaged


def test_resuming_with_fewer_steps_than_the_checkpoint_is_refused(tiny_training, tmp_path, capsys):
    output, argv = _copy_of(tiny_training, tmp_path)
    card = (output / CARD_NAME).read_bytes()
    assert main([*argv, "--set", "embedding.steps=2"]) == 2
    checkpoint = output / "checkpoints" / "embedding.pt"
    assert _error_line(capsys) == (
        f"trkx train: error: {checkpoint}: the embedding was trained for 4 steps, more than embedding.steps = 2; "
        f"resume with embedding.steps of at least 4, or remove {checkpoint} to train the embedding from step 0"
    )
    assert (output / CARD_NAME).read_bytes() == card


def test_a_diverging_training_stops_before_its_export_and_a_retry_takes_new_options(tmp_path, capsys):
    """A loss or weights that are no longer finite stop the training with one line naming the stage, the step and
    its learning rate, status 2, before any checkpoint of them or any export; options recorded before any checkpoint
    existed give way to those of the next training."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "model"
    argv = ["train", str(config), "--output", str(output)]
    assert main([*argv, "--set", "embedding.learning_rate=1e30"]) == 2
    line = _error_line(capsys)
    assert line.startswith("trkx train: error: the embedding training diverged at step "), line
    assert line.endswith("; lower embedding.learning_rate (now 1e+30)")
    assert not list((output / "checkpoints").glob("*.pt"))

    assert main([*argv, "--set", "filter.learning_rate=1e30", "--set", "gnn.learning_rate=1e30"]) == 2
    line = _error_line(capsys)
    assert line.startswith("trkx train: error: the filter training diverged at step "), line
    assert line.endswith("; lower filter.learning_rate (now 1e+30)")
    recorded = json.loads((output / "checkpoints" / OPTIONS_FILE).read_text())
    assert recorded["filter"]["learning_rate"] == 1e30
    assert sorted(path.name for path in output.iterdir()) == ["checkpoints"]  # nothing exported


def test_an_interrupt_before_the_first_checkpoint_says_so(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "model"
    argv = ["train", str(config), "--output", str(output), "--set", "data.train_events=100000"]
    with subprocess.Popen(
        [sys.executable, "-m", "tracking_algs.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        began = time.monotonic()
        while not (output / "checkpoints" / OPTIONS_FILE).exists() and time.monotonic() - began < 120:
            time.sleep(0.05)
        time.sleep(1.0)  # simulating the training events
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert err.strip().splitlines()[-1] == (
        "trkx train: stopped early: interrupted; before its first checkpoint; a training into the same --output "
        "starts from step 0, with its own options"
    )


def test_a_graph_radius_is_refused_since_training_chooses_its_own():
    with pytest.raises(ConfigError, match=r"graph.radius = 0.3 would be ignored: .*filter.radius_efficiency"):
        structure({"graph": {"radius": 0.3}}, TrainConfig)
    assert structure({"graph": {"radius": 0}}, TrainConfig).graph.radius == 0


@pytest.mark.parametrize(
    ("table", "key", "value", "limit"),
    [("embedding", "hidden", [10**12], 65536), ("embedding", "dim", 10**12, 65536), ("gnn", "hidden", 10**12, 65536),
     ("filter", "hidden", [64, 10**12], 65536), ("data", "train_events", 10**12, 100000),
     ("data", "validation_events", 10**13, 100000), ("data", "focus_sectors", 10**12, 100000),
     ("embedding", "query_hits", 10**12, 10**7), ("filter", "batch_edges", 10**12, 10**7),
     ("embedding", "random_negatives", 10**12, 10000), ("embedding", "hard_negatives", 10**12, 10000),
     ("embedding", "compatible_search", 10**12, 10000)],
)  # fmt: skip
def test_sizes_beyond_any_training_are_refused_with_the_options(table, key, value, limit):
    with pytest.raises(ConfigError, match=rf"'{key}' must be <= {limit}: .* @ \$\.{table}"):
        structure({table: {key: value}}, TrainConfig)


def test_the_shipped_training_options_are_within_the_limits():
    path = Path(__file__).resolve().parents[1] / "configs" / "train.toml"
    config = structure(tomllib.loads(path.read_text()), TrainConfig)
    assert config.embedding.hidden == (128, 128, 128)


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.sector_fraction=1e-9", "no truth edges pass graph.cuts (min_pt_gev=0.5, max_z0_mm=400) in the training "
      "sectors (data.sector_fraction=1e-09): loosen the cuts or widen the sectors"),
     ("graph.cuts.min_pt_gev=1e6", "no truth edges pass graph.cuts (min_pt_gev=1e+06, max_z0_mm=400) in the training "
      "sectors (data.sector_fraction=0.5): loosen the cuts or widen the sectors"),
     ("embedding.positive_pt_min=1e6", "no truth edges of particles of at least 1e+06 GeV in the training events to "
      "choose the graph radius from: lower embedding.positive_pt_min (now 1e+06)")],
)  # fmt: skip
def test_options_that_leave_no_truth_edges_are_named(tmp_path, capsys, override, message):
    """Options that pass their checks but leave the filter no truth edge to learn stop the training with one line
    naming them, status 2."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    argv = ["train", str(config), "--output", str(tmp_path / "model"), "--set", override]
    argv += ["--set", "embedding.steps=1"]
    assert main(argv) == 2
    assert _error_line(capsys) == f"trkx train: error: {message}"


@pytest.mark.parametrize("directory", [True, False])
def test_checkpoint_paths_of_the_wrong_kind_are_named(tmp_path, capsys, directory):
    """A ``checkpoints`` that is a file, or a ``checkpoints/train_options.json`` that is a directory, is refused with
    one line saying what was expected, status 2, before any training."""
    config = tmp_path / "train.toml"
    config.write_text(TINY)
    output = tmp_path / "model"
    checkpoints = output / "checkpoints"
    if directory:
        output.mkdir()
        checkpoints.write_text("")
        expected = f"{checkpoints}: expected a directory of checkpoints, found a file"
    else:
        (checkpoints / OPTIONS_FILE).mkdir(parents=True)
        expected = f"{checkpoints / OPTIONS_FILE}: expected a file, found a directory"
    assert main(["train", str(config), "--output", str(output)]) == 2
    assert _error_line(capsys) == f"trkx train: error: {expected}; remove it, or train into another --output"
