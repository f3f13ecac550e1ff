"""The tracking chain served by a real tritonserver in its three ways, against the local finder.

One server (module scope) serves a repository written by ``trkx repo add-tracking --serving all``: the
neural models on their own (``embedding``, ``filter``, ``gnn``), the ``tracking_ensemble`` ensemble and the
``tracking_chain`` Python-backend model. For the same simulated events, every way gives exactly the labels
of the local :class:`TrackFinder` on ONNX Runtime, and ``trkx run`` writes the same ``tracks.csv`` (and
``fitted_tracks.csv``) with ``configs/remote_triton.toml`` as with ``configs/local_onnx.toml``.  The building weighs
the GNN scores (``score_weight``, as ``configs/trackml.toml`` does), so the served scores decide links as the local
ones do.

The models are the shipped ones when they are in the package, otherwise untrained networks exported with
the project's exporter (:mod:`finding_models`; the comparison needs real ONNX models, not good ones).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from finding_models import finding_model_dir
from job_outputs import assert_same_results

from backends.model_repository import CHECKSUM_PARAMETER, read_model_config
from backends.triton_server import PYTHON_BACKEND_REGION, TritonServer, TritonServerConfig, free_ports
from inference_iface import BackendUnavailableError, ConfigError, InputError, ModelError, create_inference
from inference_iface.checksums import file_sha256
from inference_iface.shared_memory import names
from tracking_algs.cli import main
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.finder import TrackFinder
from tracking_algs.finding.model_dir import CARD_NAME, STAGES, resolve_model_dir
from tracking_algs.finding.served import FEATURES, HIT_ID, ServedTrackFinder, chain_checksum, chain_inputs
from tracking_algs.job_options import JobOptions, load_job_options, local_finder
from tracking_algs.serving.repository import ENSEMBLE_STEPS, TrackingRepositoryOptions, add_tracking
from tracking_algs.simulation import SimulationConfig, simulate_event

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
SEED = 2_000_000  # seeds >= 1e6 are never used for training
EVENTS = 2
PILEUP = 5.0
SCORE_WEIGHT = 0.1
WEAK_CUT = 0.01
#: the job options of the served jobs here, with which the served chain is written
JOB = ROOT / "configs" / "remote_triton.toml"
#: the job options of every job here: the same GNN cuts and building as the server's
FINDING = (f"finding.building.score_weight={SCORE_WEIGHT}", f"finding.gnn.weak_cut={WEAK_CUT}")
#: the track selection's steps after the fit that configs/trackml.toml takes
SELECTION = (*(f"fitting.selection.{name}=true" for name in ("merge_split", "rescue_outliers", "follow_tracks",
                                                             "extend_tracks", "join_pieces", "rebuild_free_hits")),
             "fitting.selection.slow_pt_gev=0.6")  # fmt: skip


def _finding(model_dir: Path) -> FindingConfig:
    """The ``[finding]`` options of the jobs here and of the served chain: remote_triton.toml's, with ``FINDING``."""
    return load_job_options(JOB, [*FINDING, f"finding.model_dir={model_dir}"]).finding


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return finding_model_dir(tmp_path_factory.mktemp("finding_models"))


def _tracking_repository(repository: Path, model_dir: Path, serving: str) -> Path:
    """``trkx repo add-tracking --serving serving`` of ``model_dir`` with the job options of the jobs here."""
    assert main(["repo", "add-tracking", "--repository", str(repository), "--model-dir", str(model_dir),
                 "--config", str(JOB), "--serving", serving,
                 *(arg for item in FINDING for arg in ("--set", item))]) == 0  # fmt: skip
    return repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory, model_dir) -> Path:
    return _tracking_repository(tmp_path_factory.mktemp("tracking_repository"), model_dir, "all")


@pytest.fixture(scope="module")
def models_repository(tmp_path_factory, model_dir) -> Path:
    """The neural models alone (``--serving models``), what the jobs with a stage table per model need: its server
    starts in seconds, where the Python backend's stubs of ``repository`` take many."""
    return _tracking_repository(tmp_path_factory.mktemp("models_repository"), model_dir, "models")


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=180)) as running:
        yield running


@pytest.fixture(scope="module")
def events():
    return [simulate_event(SimulationConfig(pileup=PILEUP), seed=SEED, event_id=event_id) for event_id in range(EVENTS)]


@pytest.fixture(scope="module")
def local_results(model_dir, events):
    with local_finder(_finding(model_dir)) as finder:
        return [finder.find(event.spacepoints) for event in events]


def _triton(server: TritonServer, model_name: str = "") -> dict[str, str]:
    options = {"backend": "triton", "url": server.grpc_url}
    return options | ({"model_name": model_name} if model_name else {})


def test_repository_holds_the_three_ways(repository, model_dir):
    for stage in STAGES:
        assert read_model_config(repository / stage).backend == "python"
        parameters = read_model_config(repository / stage).parameters
        assert parameters["memory_pattern"].string_value == parameters["allow_spinning"].string_value == "false"
    ensemble = read_model_config(repository / "tracking_ensemble")
    assert ensemble.platform == "ensemble"
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [name for name, _, _ in ENSEMBLE_STEPS]
    for step in ensemble.ensemble_scheduling.step:
        served = read_model_config(repository / step.model_name)
        assert set(step.input_map) == {tensor.name for tensor in served.input}, step.model_name
    chain = read_model_config(repository / "tracking_chain")
    assert chain.backend == "python"
    assert chain.parameters["step"].string_value == "chain"
    copied = sorted(path.name for path in (repository / "tracking_chain" / "1" / "models").iterdir())
    assert copied == sorted([f"{stage}.onnx" for stage in STAGES] + [CARD_NAME])
    for stage in STAGES:
        assert (repository / "tracking_chain/1/models" / f"{stage}.onnx").read_bytes() == (
            model_dir / f"{stage}.onnx"
        ).read_bytes()
    with pytest.raises(ConfigError, match="already holds"):
        add_tracking(repository, TrackingRepositoryOptions(finding=FindingConfig(model_dir=str(model_dir))))


def test_every_stage_on_triton_matches_local(server, model_dir, events, local_results):
    options = {stage: _triton(server, stage) for stage in STAGES}
    with TrackFinder.from_options(_finding(model_dir), options) as finder:
        for event, local in zip(events, local_results, strict=True):
            served = finder.find(event.spacepoints)
            for stage, edges in local.edges.items():
                assert np.array_equal(served.edges[stage], edges), stage
            for stage, scores in local.scores.items():
                assert served.scores[stage].tobytes() == scores.tobytes(), stage
            assert np.array_equal(served.candidates.labels, local.candidates.labels)


@pytest.mark.parametrize("model_name", ["tracking_ensemble", "tracking_chain"])
def test_served_chain_matches_local(server, events, local_results, model_name):
    with ServedTrackFinder(create_inference(_triton(server, model_name))) as finder:
        for event, local in zip(events, local_results, strict=True):
            served = finder.find(event.spacepoints)
            assert len(local.candidates) > 3, "the comparison needs tracks"
            assert np.array_equal(served.candidates.labels, local.candidates.labels)
            assert set(served.timing_ms) == {"inputs", "served"}
            assert served.edges == served.scores == {}


@pytest.mark.parametrize("model_name", ["tracking_ensemble", "tracking_chain"])
def test_served_chain_returns_the_local_gnn_edges_when_asked(server, events, local_results, model_name):
    """The edges a client builds over again (``rebuild_free_hits``): the local finder's GNN edges above the cut, in
    its order, and their scores to the bit."""
    with ServedTrackFinder(create_inference(_triton(server, model_name)), with_edges=True) as finder:
        for event, local in zip(events, local_results, strict=True):
            served = finder.find(event.spacepoints)
            assert local.edges["gnn"].shape[1] > 100, "the comparison needs edges"
            assert np.array_equal(served.edges["gnn"], local.edges["gnn"])
            assert served.scores["gnn"].tobytes() == local.scores["gnn"].tobytes()
            assert np.array_equal(served.candidates.labels, local.candidates.labels)


def test_serving_a_chain_needs_a_server_backend():
    with pytest.raises(ConfigError, match="serving = 'stages'"):
        JobOptions(finding=FindingConfig(serving="chain")).served_inference()
    with pytest.raises(ConfigError, match="expected one of chain, ensemble"):
        JobOptions(inference={"backend": "triton"}).served_inference()
    with pytest.raises(ConfigError, match="inference options of the served chain"):
        load_job_options(ROOT / "configs" / "local_onnx.toml", ["finding.serving=chain"])


def test_served_chain_rejects_bad_inputs(server, events):
    with pytest.raises(ModelError, match="not a served tracking chain"):
        ServedTrackFinder(create_inference(_triton(server, "embedding")))
    inputs = chain_inputs(events[0].spacepoints)
    with create_inference(_triton(server, "tracking_chain")) as chain:
        with pytest.raises(InputError, match=FEATURES):
            chain.infer({FEATURES: inputs[FEATURES][:, :6], HIT_ID: inputs[HIT_ID]})
        features = inputs[FEATURES].copy()
        features[3, 4] = 2.5  # layer_id
        with pytest.raises(ModelError, match="column 'layer_id' must hold integers; row 3"):
            chain.infer({FEATURES: features, HIT_ID: inputs[HIT_ID]})
        features = inputs[FEATURES].copy()
        features[5, 1] = np.nan  # y
        expected = rf"InputError: {FEATURES}: spacepoint row 5 \(hit_id {inputs[HIT_ID][5]}\): x, y, z must be finite"
        with pytest.raises(ModelError, match=expected):
            chain.infer({FEATURES: features, HIT_ID: inputs[HIT_ID]})


def test_the_other_protocols_port_is_named_as_such(server):
    """A served job's ``url`` with the server's HTTP port on gRPC, or its gRPC port on HTTP: the error says which
    port it is and what to change (it said only 'Socket closed' or 'HTTPParseError')."""
    with pytest.raises(BackendUnavailableError, match=rf"{server.http_url} answers HTTP, not gRPC: HTTP port\? give "
                       "the gRPC port or set protocol = 'http'"):  # fmt: skip
        create_inference(_triton(server, "tracking_chain") | {"url": server.http_url})
    with pytest.raises(BackendUnavailableError, match=rf"{server.grpc_url} does not speak HTTP: a gRPC port\? give "
                       "the HTTP port or set protocol = 'grpc'"):  # fmt: skip
        create_inference(_triton(server, "tracking_chain") | {"protocol": "http"})


def _run_job(config: str, output: Path, *overrides: str) -> Path:
    sets = [f"simulation.pileup={PILEUP}", f"job.seed={SEED}", *FINDING, *SELECTION, *overrides]
    argv = ["run", str(ROOT / "configs" / config), "--simulate", str(EVENTS), "--output", str(output), "--no-progress"]
    assert main(argv + [f"--set={item}" for item in sets]) == 0
    return output


def test_a_served_job_refuses_a_chain_written_with_other_finding_options(
    repository, server, model_dir, tmp_path, capsys
):
    """The served chain and ensemble carry the checksum of their ``[finding]`` options and models; a job whose own
    differ (here the library's default building, which ``trkx repo add-tracking`` without ``--config`` writes) is
    refused before any event (status 2, nothing written) instead of taking labels from another chain."""
    expected = chain_checksum(_finding(model_dir))
    for name in ("tracking_chain", "tracking_ensemble"):
        assert read_model_config(repository / name).parameters[CHECKSUM_PARAMETER].string_value == expected
    argv = ["run", str(JOB), "--simulate", "1", "--no-progress", f"--set=inference.triton.url={server.grpc_url}",
            f"--set=finding.model_dir={model_dir}", *[f"--set={item}" for item in FINDING]]  # fmt: skip
    finding = _finding(model_dir)
    longest = chain_checksum(attrs.evolve(finding, building=attrs.evolve(finding.building, shared_hits="longest")))
    for serving in ("chain", "ensemble"):
        output = tmp_path / serving
        other = "finding.building.shared_hits=longest"
        assert main([*argv, "--output", str(output), f"--set=finding.serving={serving}", f"--set={other}"]) == 2
        error = capsys.readouterr().err
        assert f"model_checksum {longest} expected, the server reports sha256 {expected}" in error
        assert "write its repository with 'trkx repo add-tracking --config'" in error
        assert not output.exists()
    output = tmp_path / "unknown_model"  # not a checksum: no word about how the chain was written
    assert main([*argv, "--output", str(output), "--set=finding.serving=chain",
                 "--set=inference.triton.model_name=no_such_chain"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "no_such_chain" in error
    assert "add-tracking" not in error
    assert not output.exists()


def test_a_served_stages_job_refuses_models_other_than_its_model_dirs(server, model_dir, tmp_path, capsys):
    """Each stage served on its own checks the SHA-256 of its ``[finding] model_dir`` ONNX file: a job with another
    model set than the server's is refused before any event (status 2, nothing written), naming the stage's model and
    how to write the repository, instead of writing the server's tracks under options that name other models."""
    other = "shipped:modules"
    assert file_sha256(resolve_model_dir(other) / "embedding.onnx") != file_sha256(model_dir / "embedding.onnx")
    output = tmp_path / "stages"
    argv = ["run", str(JOB), "--simulate", "1", "--no-progress", "--output", str(output),
            f"--set=inference.triton.url={server.grpc_url}", f"--set=finding.model_dir={other}",
            *[f"--set={item}" for item in FINDING]]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    expected = file_sha256(resolve_model_dir(other) / "embedding.onnx")
    served = file_sha256(model_dir / "embedding.onnx")
    assert (
        f"triton model 'embedding' on {server.grpc_url}: model_checksum {expected} expected, the server reports "
        f"sha256 {served}" in error
    )
    assert "write the repository with 'trkx repo add-tracking --model-dir' that directory" in error
    assert not output.exists()


def test_trkx_run_remote_and_served_chain_write_the_local_tracks(server, model_dir, tmp_path):
    """Local ONNX Runtime, every stage on Triton and the served chain give the same tracks and fits, with the
    track selection's steps after the fit that ``configs/trackml.toml`` takes."""
    model = f"finding.model_dir={model_dir}"
    url = f"inference.triton.url={server.grpc_url}"
    local = _run_job("local_onnx.toml", tmp_path / "local", model)
    remote = _run_job("remote_triton.toml", tmp_path / "remote", model, url)
    chain = _run_job("remote_triton.toml", tmp_path / "chain", model, url, "finding.serving=chain")
    assert (local / "tracks.csv").read_bytes().count(b"\n") > 100
    for output in (remote, chain):
        assert_same_results(output, local)
    backends = {name: json.loads((path / "performance.json").read_text())["backend"] for name, path in
                (("remote", remote), ("chain", chain))}  # fmt: skip
    assert set(backends["remote"]) == set(STAGES)
    assert all("triton" in text for text in backends["remote"].values())
    assert list(backends["chain"]) == ["chain"]
    assert "tracking_chain" in backends["chain"]["chain"]


def test_job_stopped_by_a_dead_server_keeps_its_events_and_resumes(repository, models_repository, model_dir, tmp_path):
    """A server that dies mid-job (with its Python backend's stubs): the job reports it (exit status 3), writes every
    file from the events it finished, and ``--resume`` against a server on another address (of the neural models
    alone, which are all the job asks for), with longer timeouts and more retries, completes with the local results:
    how the servers are reached is no part of what a resumed job must find unchanged."""
    events, output = 4, tmp_path / "stopped"
    common = [f"simulation.pileup={PILEUP}", f"job.seed={SEED}", f"finding.model_dir={model_dir}", *FINDING]
    sets = [*common, "inference.triton.timeout_s=5.0", "inference.triton.retries=0"]
    regions_before = names(f"{PYTHON_BACKEND_REGION}*")
    first = TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=180)).start()
    port = first.grpc_port
    sets.append(f"inference.triton.url={first.grpc_url}")
    # the job kills the server's process group (SIGKILL) as it reaches its third event: two events finished
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", str(-first.process.pid), "run",
               str(ROOT / "configs" / "remote_triton.toml"), "--simulate", str(events), "--output", str(output),
               "--no-progress", *[f"--set={item}" for item in sets]]  # fmt: skip
    try:
        job = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        stderr = job.stderr
    finally:
        first.stop()
    assert not names(f"{PYTHON_BACKEND_REGION}*") - regions_before, "the killed server's stubs left shared memory"
    assert job.returncode == 3, stderr
    assert "--resume" in stderr
    performance = json.loads((output / "performance.json").read_text())
    finished = performance["events"]
    assert finished == [0, 1]
    assert [failure["stage"] for failure in performance["failed_events"]] == ["backend"]
    written = {int(line.split(",")[0]) for line in (output / "tracks.csv").read_text().splitlines()[1:]}
    assert written == set(finished)

    (other_port,) = free_ports(1, taken=[port])
    with TritonServer(TritonServerConfig(repository=str(models_repository), grpc_port=other_port,
                                         startup_timeout_s=180)) as second:  # fmt: skip
        moved = [*common, f"inference.triton.url={second.grpc_url}", "inference.triton.timeout_s=60.0",
                 "inference.triton.retries=3"]  # fmt: skip
        argv = ["run", str(ROOT / "configs" / "remote_triton.toml"), "--simulate", str(events), "--resume",
                "--output", str(output), "--no-progress", *[f"--set={item}" for item in moved]]  # fmt: skip
        assert main(argv) == 0
    local = tmp_path / "local"
    argv = ["run", str(ROOT / "configs" / "local_onnx.toml"), "--simulate", str(events), "--output", str(local),
            "--no-progress", *[f"--set={item}" for item in common]]  # fmt: skip
    assert main(argv) == 0
    assert_same_results(output, local)
    assert json.loads((output / "performance.json").read_text())["failed_events"] == []
