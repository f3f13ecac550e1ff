"""Job options: the shipped TOML files, --set overrides, per-stage backends, and errors listing valid choices."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from backends.triton_config import TritonConfig
from inference_iface import ConfigError
from inference_iface.options import tomllib
from tracking_algs.cli import main
from tracking_algs.finding.config import FindingConfig, GNNConfig, GraphConfig, PairCuts
from tracking_algs.finding.finder import TrackFinder
from tracking_algs.finding.model_dir import SHIPPED_DIR, SHIPPED_MODULES_DIR, STAGES, load_model_card
from tracking_algs.finding.training import DataConfig, EmbeddingTraining, TrainConfig
from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.selection import TrackSelection
from tracking_algs.job_options import JobConfig, JobOptions, load_job_options
from tracking_algs.magnetic_field import FieldConfig, SolenoidField
from tracking_algs.performance import ParticleSelection
from tracking_algs.simulation import SimulationConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_local_and_remote_configs_differ_only_in_the_backend_line():
    local, remote = (
        [line for line in (CONFIGS / name).read_text().splitlines() if not line.startswith("#")]
        for name in ("local_onnx.toml", "remote_triton.toml")
    )
    changed = [(a, b) for a, b in zip(local, remote, strict=True) if a != b]
    assert changed == [('backend = "onnxruntime"', 'backend = "triton"')]
    local_data = tomllib.loads("\n".join(local))
    remote_data = tomllib.loads("\n".join(remote))
    remote_data["inference"]["backend"] = "onnxruntime"
    assert local_data == remote_data


def test_local_config_loads_with_every_stage_on_onnxruntime():
    options = load_job_options(CONFIGS / "local_onnx.toml")
    for stage in ("embedding", "filter", "gnn"):
        settings = options.stage_inference(stage)
        assert settings["backend"] == "onnxruntime"
        assert settings["device"] == "auto"


def test_remote_config_sends_every_stage_to_triton():
    options = load_job_options(CONFIGS / "remote_triton.toml")
    assert {options.stage_inference(stage)["backend"] for stage in ("embedding", "filter", "gnn")} == {"triton"}
    assert options.stage_inference("gnn")["url"] == "127.0.0.1:8001"


def test_set_overrides_nested_keys_with_toml_values():
    options = load_job_options(
        CONFIGS / "local_onnx.toml",
        ["finding.gnn.cut=0.7", "finding.graph.method=faiss", "job.jobs=2", "fitting.hook=none"],
    )
    assert options.finding.gnn.cut == 0.7
    assert options.finding.graph.method == "faiss"
    assert options.job.jobs == 2
    assert options.fitting.hook == "none"


def test_a_stage_can_override_the_backend_and_its_options():
    options = load_job_options(
        CONFIGS / "local_onnx.toml",
        ["finding.stages.gnn.backend=triton", "finding.stages.gnn.timeout_s=5.0"],
    )
    assert options.stage_inference("embedding")["backend"] == "onnxruntime"
    gnn = options.stage_inference("gnn")
    assert gnn["backend"] == "triton"
    assert gnn["url"] == "127.0.0.1:8001"
    assert gnn["timeout_s"] == 5.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "finding.graph.radiuss=1.0",
            r"\(finding\.graph\.radiuss\); valid keys are method, radius, k_max, query_k, eps, cuts",
        ),
        ("nonsense.key=1", r"nonsense.*valid keys are job, inference"),
        ("inference.backend=tensorrt", r"'tensorrt' is unknown; valid backends are onnxruntime, triton"),
        (
            "inference.onnxruntime.devise=cpu",
            r"unknown key\(s\) devise \(inference\.onnxruntime\.devise\); valid keys are cast_policy",
        ),
        (
            "finding.stages.tracking.backend=triton",
            r"unknown key\(s\) tracking \(finding\.stages\.tracking\); valid keys are embedding",
        ),
        ("finding.graph.method=annoy", r"expected one of 'kdtree', 'faiss', got 'annoy' @ \$\.finding\.graph\.method"),
        ("finding.building.score_weight=-0.1", r"score_weight"),
        ("finding=5", r"\[finding\] must be a table of options, got 5"),
        ("finding.stages=5", r"\[finding\.stages\] must be a table of stage tables, got 5"),
        ("inference.onnxruntime=5", r"\[inference\] onnxruntime must be a table of that backend's options, got 5"),
        ("stages.gnn.backend=triton", r"unknown key\(s\) stages; valid keys are job, .*\[finding\.stages\.<stage>\]"),
    ],
)
def test_bad_options_name_the_key_and_list_the_valid_choices(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_job_options(CONFIGS / "local_onnx.toml", [override])


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_job_options(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[job\nevents = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml.*not valid TOML"):
        load_job_options(broken)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes(b"\xff\xfe[job]\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml' is not UTF-8 text \(byte 0\)"):
        load_job_options(config)


def test_each_of_several_bad_overrides_is_blamed_on_its_own():
    """Two bad overrides: each error is blamed on the override that brought it in, not both on the last."""
    overrides = ["job.seed=-3", "job.events=2", "finding.building.method=nope"]
    with pytest.raises(ConfigError) as error:
        load_job_options(CONFIGS / "local_onnx.toml", overrides)
    assert str(error.value) == (
        "--set job.seed=-3: 'seed' must be >= 0: -3 @ $.job; --set finding.building.method=nope: expected one of "
        "'triplets', 'walkthrough', 'components', got 'nope' @ $.finding.building.method"
    )


def test_override_syntax_errors_are_clear():
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        load_job_options(None, ["finding.gnn.cut"])


def test_service_config_serves_the_whole_chain_on_triton():
    options = load_job_options(CONFIGS / "service.toml")
    assert options.finding.serving == "chain"
    assert options.inference["backend"] == "triton"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("job.seed=-3", r"'seed' must be >= 0: -3"),
        ("job.events=0", r"'events' must be >= 1: 0"),
        ("job.jobs=-1", r"'jobs' must be >= 1: -1"),
        ("finding.graph.radius=abc", r"expected a number, got 'abc' @ \$\.finding\.graph\.radius"),
        ("finding.graph.radiuss=1.0", r"unknown key\(s\) radiuss \(finding\.graph\.radiuss\)"),
        ("inference.backend=tensorrt", r"'tensorrt' is unknown"),
    ],
)
def test_a_bad_override_is_blamed_on_the_override_not_the_file(override, expected):
    config = CONFIGS / "local_onnx.toml"
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: .*{expected}") as error:
        load_job_options(config, ["simulation.pileup=2", override, "finding.gnn.cut=0.5"])
    assert str(config) not in str(error.value)


def test_a_bad_file_value_is_blamed_on_the_file_and_an_override_may_fix_it(tmp_path):
    config = tmp_path / "job.toml"
    config.write_text("[job]\nseed = -1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}: 'seed' must be >= 0: -1"):
        load_job_options(config, ["job.events=2"])
    assert load_job_options(config, ["job.seed=5"]).job.seed == 5


def test_missing_detector_and_model_directory_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[job\] detector '/no/such/detector\.toml' does not exist"):
        load_job_options(None, ["job.detector=/no/such/detector.toml"])
    absent = tmp_path / "absent"
    expected = rf"--set finding\.model_dir=.*: \[finding\] model_dir '{re.escape(str(absent))}' does not exist; "
    with pytest.raises(ConfigError, match=expected + r"expected a directory with embedding\.onnx, filter\.onnx"):
        load_job_options(None, [f"finding.model_dir='{absent}'"])
    with pytest.raises(ConfigError, match=r"model_dir 'shipped:cones' does not exist.*or \"shipped:modules\" for"):
        load_job_options(None, ["finding.model_dir=shipped:cones"])


def test_the_shipped_module_models_are_named_and_record_their_training_data():
    """``model_dir = "shipped:modules"``: the set trained on the module simulation in the solenoid, its card
    holding those settings; configs/trackml.toml runs with it, with the energy loss in the fitter and the
    simulation, the fit of each event shared out over worker processes and the GNN scores in the building's links
    (none of which the default job does); split tracks are merged in neither."""
    options = load_job_options(CONFIGS / "trackml.toml")
    assert options.fitting.kalman.energy_loss
    assert options.simulation.energy_loss
    assert options.fitting.kalman.processes == 0
    assert options.finding.building.score_weight > 0
    default = load_job_options(None)
    assert not default.fitting.kalman.energy_loss
    assert default.fitting.kalman.processes == 1
    assert default.finding.building.score_weight == 0
    assert not default.fitting.selection.merge_split
    assert options.fitting.selection.merge_split
    assert options.fitting.selection.rescue_outliers
    assert not default.fitting.selection.rescue_outliers
    assert (default.fitting.kalman.max_trimmed_hits, options.fitting.kalman.max_trimmed_hits) == (3, 5)
    assert options.finding.model_dir == "shipped:modules"
    assert options.stage_inference("gnn")["model_path"] == str(SHIPPED_MODULES_DIR / "gnn.onnx")
    data = load_model_card("shipped:modules")["training_config"]["data"]
    assert (data["geometry"], data["field"]["kind"]) == ("modules", "solenoid")
    assert options.magnetic_field() == SolenoidField(2.0)


def test_a_model_directory_must_hold_the_models_the_job_runs(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "tracking_algs" / "finding" / "shipped"
    partial = tmp_path / "models"
    partial.mkdir()
    for name in ("embedding.onnx", "filter.onnx"):
        shutil.copy(shipped / name, partial / name)
    override = f"finding.model_dir='{partial}'"
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: .*model_card\.json' does not exist"):
        load_job_options(None, [override])
    shutil.copy(shipped / "model_card.json", partial / "model_card.json")
    with pytest.raises(ConfigError, match=r"model of stage 'gnn', '.*gnn\.onnx', does not exist"):
        load_job_options(None, [override])
    # the GNN's file named per stage instead
    gnn = f"finding.stages.gnn.model_path='{shipped / 'gnn.onnx'}'"
    assert load_job_options(None, [override, gnn]).finding.model_dir == str(partial)
    # stages served by Triton need no local model file, only the card (the recommended cuts)
    remote = load_job_options(CONFIGS / "remote_triton.toml", [override])
    assert remote.finding.model_dir == str(partial)


@pytest.mark.parametrize(
    ("recommended", "message"),
    [
        ({"radius": math.nan, "filter_cut": 0.1}, "recommended['radius'] must be a finite number above 0, got nan"),
        ({"radius": -1.0, "filter_cut": 0.1}, "recommended['radius'] must be a finite number above 0, got -1.0"),
        ({"radius": "wide", "filter_cut": 0.1}, "recommended['radius'] must be a finite number above 0, got 'wide'"),
        ({"radius": 0.5, "filter_cut": 5}, "recommended['filter_cut'] must be a number from 0 to below 1, got 5"),
        ({"radius": 0.5}, "has no recommended['filter_cut'] value"),
    ],
)
def test_a_model_cards_working_point_is_checked_before_work(tmp_path, recommended, message):
    """The radius and filter cut a job takes from the model card are checked with the options, naming the card;
    options that set both do not need them."""
    models = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, models)
    card = json.loads((models / "model_card.json").read_text())
    (models / "model_card.json").write_text(json.dumps(card | {"recommended": recommended}))
    override = f"finding.model_dir='{models}'"
    with pytest.raises(ConfigError, match=re.escape(f"model card '{models / 'model_card.json'}'") + ".*"
                                          + re.escape(message)):  # fmt: skip
        load_job_options(None, [override])
    both = load_job_options(None, [override, "finding.graph.radius=0.5", "finding.filter.cut=0.1"])
    finder = TrackFinder.from_options(both.finding, {stage: both.stage_inference(stage) for stage in STAGES})
    assert (finder.graph.radius, finder.filter.cut) == (0.5, 0.1)


def test_what_a_resumed_job_must_find_unchanged_leaves_out_how_servers_are_reached():
    """A job stopped by a dead server may resume on another address, with other timeouts or TLS settings: the Triton
    tables' connection options are left out of what a resume compares, wherever they are set; the model's name,
    version and checksum, which say what runs, stay in."""
    remote = CONFIGS / "remote_triton.toml"

    def recorded(*overrides: str) -> dict:
        return load_job_options(remote, overrides).to_dict(execution=False)

    base = recorded()
    moved = recorded("inference.triton.url=10.0.0.7:8000", "inference.triton.timeout_s=120.0",
                     "inference.triton.retries=9", "inference.triton.protocol=http",
                     "finding.stages.gnn.url=10.0.0.8:8000", "finding.stages.gnn.attempt_timeout_s=3.0")  # fmt: skip
    assert moved == base
    for override in ("inference.triton.model_checksum=abc", "finding.stages.gnn.model_version='2'",
                     "finding.stages.gnn.backend=onnxruntime"):  # fmt: skip
        assert recorded(override) != base, override
    local = load_job_options(CONFIGS / "local_onnx.toml", ["finding.stages.gnn.intra_op_threads=1"])
    assert local.to_dict(execution=False)["finding"]["stages"]["gnn"] == {"intra_op_threads": 1}
    assert load_job_options(remote).to_dict()["inference"]["triton"]["url"]  # the report keeps every option


def test_the_module_geometry_file_is_checked_before_work(tmp_path):
    """``[detector] file``: empty (the default) = no module geometry; otherwise a readable file, named when not."""
    options = load_job_options(CONFIGS / "local_onnx.toml")
    assert options.detector.file == ""
    assert options.module_geometry() is None
    absent = tmp_path / "absent.csv.gz"
    with pytest.raises(ConfigError, match=rf"--set detector\.file=.*: \[detector\] file '{re.escape(str(absent))}' "
                                          r"does not exist; expected a TrackML detectors\.csv"):  # fmt: skip
        load_job_options(CONFIGS / "local_onnx.toml", [f"detector.file='{absent}'"])
    with pytest.raises(ConfigError, match=rf"\[detector\] file '{re.escape(str(tmp_path))}' is not a file"):
        load_job_options(None, [f"detector.file='{tmp_path}'"])
    with pytest.raises(
        ConfigError,
        match=r"detector\.path=x\.csv: unknown key\(s\) path \(detector\.path\); valid keys are file, field$",
    ):
        load_job_options(None, ["detector.path=x.csv"])
    written = tmp_path / "detectors.csv"
    written.write_text("volume_id,layer_id,module_id,cx,cy,cz,rot_xu,rot_xv,rot_xw,rot_yu,rot_yv,rot_yw,rot_zu,rot_zv,"
                       "rot_zw,module_t,module_minhu,module_maxhu,module_hv,pitch_u,pitch_v\n"
                       "8,2,1,32,0,0,0,0,1,1,0,0,0,1,0,0.15,8.4,8.4,36,0.05,0.05625\n")  # fmt: skip
    options = load_job_options(None, [f"detector.file='{written}'"])
    assert options.to_dict()["detector"]["file"] == str(written)
    assert len(options.module_geometry()) == 1
    # a file the job may not read: root reads any file, so under root the options are loaded without the capabilities
    # that let it (setpriv), as another user would
    load = "\n".join([
        "import sys", "from inference_iface import ConfigError",
        "from tracking_algs.job_options import load_job_options",
        "try:", "    load_job_options(None, [sys.argv[1]])", "except ConfigError as error:", "    print(error)",
    ])  # fmt: skip
    user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    written.chmod(0)
    try:
        argv = [*user, sys.executable, "-c", load, f"detector.file='{written}'"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    finally:
        written.chmod(0o644)
    assert re.search(rf"\[detector\] file '{re.escape(str(written))}' cannot be read", done.stdout), done.stdout


# --- the command line: every bad option is one line, exit status 2, before any work -------------------------------


def _trkx_run(capsys, config: Path, output: Path, *arguments: str) -> tuple[int, list[str]]:
    """``trkx run CONFIG --simulate 1 --output OUTPUT ARGUMENTS`` (a tiny event: pile-up 1): its exit status and the
    lines it wrote to stderr."""
    status = main(["run", str(config), "--simulate", "1", "--output", str(output), "--no-progress",
                   "--set", "simulation.pileup=1", *arguments])  # fmt: skip
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("config", "sets", "expected"),
    [
        # non-finite numbers: an infinite pT threshold would hang the simulation; NaN passes no range check
        (
            "local_onnx",
            ["simulation.pt_min_gev=inf"],
            r"expected a finite number, got inf @ \$\.simulation\.pt_min_gev",
        ),
        ("local_onnx", ["finding.graph.radius=inf"], r"expected a finite number, got inf @ \$\.finding\.graph\.radius"),
        ("local_onnx", ["performance.eta_max=inf"], r"got inf @ \$\.performance\.eta_max"),
        # the table of a backend no stage uses is checked too (it was left unread)
        ("local_onnx", ["inference.triton.timeout_s=nan"], r"got nan @ \$\.inference\.triton\.timeout_s"),
        (
            "local_onnx",
            ["inference.triton.urll=h:1"],
            r"unknown key\(s\) urll \(inference\.triton\.urll\); .*\(did you mean inference\.triton\.url\?\)$",
        ),
        ("local_onnx", ["inference.triton.url=http://h:8001"], r"inference\.triton\.url: gRPC URL 'http://h:8001'"),
        # unknown keys and tables at any depth: named in full, with the closest valid name
        (
            "local_onnx",
            ["finding.grpah.radius=1"],
            r"unknown key\(s\) grpah \(finding\.grpah\); .*did you mean finding\.graph\?",
        ),
        (
            "local_onnx",
            ["fitting.kalman.batchsize=5"],
            r"batchsize \(fitting\.kalman\.batchsize\); .*did you mean fitting\.kalman\.batch_size",
        ),
        (
            "local_onnx",
            ["finding.stages.gnn.devise=cpu"],
            r"devise \(finding\.stages\.gnn\.devise\); .*\(did you mean finding\.stages\.gnn\.device\?\)",
        ),
        (
            "local_onnx",
            ["finding.stages.gnn.backend=trion"],
            r"\[finding\.stages\.gnn\] backend 'trion' is unknown; .*'triton'",
        ),
        # a list where a table is
        ("local_onnx", ["finding.graph=[1, 2]"], r"expected a table of options, got \[1, 2\] @ \$\.finding\.graph$"),
        # --set: a list that is not TOML, a key set twice, a key through a value
        ("local_onnx", ["inference.triton.urls=[h:1, g:1]"], r"urls=\[h:1, g:1\]: the value .* is not a TOML list"),
        (
            "local_onnx",
            ["job.seed=1", "--set", "job.seed=2"],
            r"--set job\.seed=2: job\.seed is already set by --set job\.seed=1",
        ),
        ("local_onnx", ["job.seed.x=1"], r"--set job\.seed\.x=1: 'job\.seed' is a value, not a table"),
        # options the job would have ignored, or found only as it started
        ("local_onnx", ["fitting.options.x=1"], r"fitting\.options\.x: .*hook = 'kalman' takes none"),
        (
            "remote_triton",
            ["inference.triton.url=''"],
            r"inference\.triton\.url \(inference of stage 'embedding'\): no server is set; set url",
        ),
        ("service", ["finding.stages.gnn.timeout_s=5"], r"\[finding\.stages\.gnn\] sets .* serving = 'chain'"),
    ],
)
def test_the_command_refuses_a_bad_option_in_one_line_before_any_work(tmp_path, capsys, config, sets, expected):
    output = tmp_path / "out"
    status, lines = _trkx_run(capsys, CONFIGS / f"{config}.toml", output, "--set", *sets)
    assert (status, len(lines)) == (2, 1), lines
    assert lines[0].startswith("trkx run: error: --set "), lines[0]
    assert re.search(expected, lines[0]), lines[0]
    assert not output.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[job]\nseed = 1\nseed = 2\n",
            r"job\.toml' is not valid TOML: Cannot overwrite a value \(at line 3, column 9\)",
        ),
        ("[job]\nseed = = 1\n", r"job\.toml' is not valid TOML: .*\(at line 2, column 8\)"),
        ("[[finding.graph]]\nradius = 1\n", r"job\.toml: expected a table of options, got \[\{'radius': 1\}\]"),
        (
            "[finding.graph]\nradiuss = 1.0\n",
            r"job\.toml: unknown key\(s\) radiuss \(finding\.graph\.radiuss\); .*did you mean",
        ),
    ],
)
def test_a_bad_options_file_is_named_with_its_line(tmp_path, capsys, text, expected):
    config = tmp_path / "job.toml"
    config.write_text(text)
    status, lines = _trkx_run(capsys, config, tmp_path / "out")
    assert (status, len(lines)) == (2, 1), lines
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_a_resumed_job_takes_a_number_written_either_way_and_refuses_a_bad_option(tmp_path, capsys):
    """``job_options.json`` keeps a backend's or a stage's table as written (30 or 30.0); ``--resume`` with the other
    spelling is the same job. A bad option given to ``--resume`` is refused like any other, the output untouched."""
    output = tmp_path / "out"
    status, lines = _trkx_run(capsys, CONFIGS / "local_onnx.toml", output,
                              "--set", "inference.onnxruntime.cuda_device_id=0",
                              "--set", "finding.stages.gnn.intra_op_threads=1")  # fmt: skip
    assert status == 0, lines
    recorded = json.loads((output / "job_options.json").read_text())["options"]
    assert repr(recorded["inference"]["onnxruntime"]["cuda_device_id"]) == "0"
    status, lines = _trkx_run(capsys, CONFIGS / "local_onnx.toml", output, "--resume",
                              "--set", "inference.onnxruntime.cuda_device_id=0.0",
                              "--set", "finding.stages.gnn.intra_op_threads=1.0")  # fmt: skip
    assert status == 0, lines
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    for sets in (["inference.triton.timeout_s=nan"], ["finding.stages.gnn.intra_op_threads=1", "--set",
                                                      "finding.stages.gnn.intra_op_threads=2"]):  # fmt: skip
        status, lines = _trkx_run(capsys, CONFIGS / "local_onnx.toml", output, "--resume", "--set", *sets)
        assert (status, len(lines)) == (2, 1), lines
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before


# --- the same options built in Python ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: GraphConfig(radius=math.inf), r"'radius' must be a finite number: inf"),
        (lambda: GraphConfig(radius="1.0"), r"'radius' must be a number, got '1\.0'"),
        (lambda: GraphConfig(k_max=64.5), r"'k_max' must be an integer, got 64\.5"),
        (lambda: GraphConfig(method="annoy"), r"'method' must be in \('kdtree', 'faiss'\) \(got 'annoy'\)"),
        (
            lambda: PairCuts(different_layers=1),
            r"'different_layers' must be <class 'bool'> \(got 1 that is a <class 'int'>\)",
        ),
        (lambda: GNNConfig(cut=math.nan), r"'cut' must be a finite number: nan"),
        (
            lambda: FindingConfig(graph={"radius": 1.0}),
            r"'graph' must be <class '[\w.]+GraphConfig'> \(got \{'radius': 1\.0\}",
        ),
        (lambda: KalmanConfig(batch_size=True), r"'batch_size' must be an integer, got True"),
        (lambda: KalmanConfig(outlier_chi2_cut_1d=math.inf), r"'outlier_chi2_cut_1d' must be a finite number"),
        (lambda: TritonConfig(retry_backoff_s=math.inf), r"'retry_backoff_s' must be a finite number"),
        (lambda: TritonConfig(tls=1), r"'tls' must be true or false, got 1"),
        (lambda: JobConfig(events="5"), r"'events' must be an integer, got '5'"),
        (lambda: SimulationConfig(pileup=math.inf), r"'pileup' must be a finite number: inf"),
        (lambda: SimulationConfig(module_noise_volumes=(7.5,)), r"'module_noise_volumes' must be an integer"),
        (lambda: TrackSelection(min_hits=4.5), r"'min_hits' must be an integer, got 4\.5"),
        (lambda: TrackSelection(enabled="no"), r"'enabled' must be <class 'bool'> \(got 'no'"),
        (lambda: FieldConfig(solenoid_radius_mm="1e3"), r"'solenoid_radius_mm' must be a number"),
        (lambda: ParticleSelection(pt_min=-0.5), r"'pt_min' must be >= 0\.0: -0\.5"),
        (lambda: ParticleSelection(min_hits=0), r"'min_hits' must be >= 1: 0"),
        (lambda: DataConfig(pileups=(200.0, "20")), r"'pileups' must be a number, got '20'"),
        (lambda: EmbeddingTraining(hidden=(64, 64.5)), r"'hidden' must be an integer, got 64\.5"),
        (lambda: JobConfig(executor="dusk"), r"'executor' must be in \('local', 'dask'\) \(got 'dusk'\)"),
        (lambda: JobOptions(finding={"graph": {}}), r"'finding' must be <class '[\w.]+FindingConfig'>"),
        (lambda: JobOptions(inference=["onnxruntime"]), r"'inference' must be a table \(a mapping\), got \['onnx"),
    ],
)
def test_options_built_in_python_name_the_key_and_what_it_takes(build, expected):
    """Built directly (no TOML, no converter), each option class checks the kind of each value, naming the key (attrs'
    own validators where they say it, the project's for finite numbers and integers that are not booleans): a string
    radius is refused where it is given, not in a comparison deep in the finder, and an infinite cut is refused."""
    with pytest.raises((TypeError, ValueError), match=expected):
        build()
    assert GraphConfig(radius=2, k_max=32).radius == 2  # an integer is a number


#: Values of another kind for each kind of option: a flag, a count, a number, a text, a tuple of numbers
WRONG_KINDS = {bool: ["yes", 1], int: [2.5, "3", True], float: ["3", True, math.nan], str: [3], tuple: ["ab", ("x",)]}


def _option_leaves(options: object, key: str = "") -> Iterator[tuple[str, object, attrs.Attribute]]:
    """(dotted key, the option class holding it, its field) of every option below ``options``."""
    for field in attrs.fields(type(options)):
        value = getattr(options, field.name)
        if attrs.has(type(value)):
            yield from _option_leaves(value, f"{key}{field.name}.")
        else:
            yield f"{key}{field.name}", options, field


@pytest.mark.parametrize("root", [JobOptions, TrainConfig])
def test_every_option_built_in_python_refuses_a_value_of_another_kind(root):
    """Every option of a job (down to the simulation, the track selection, the field and the particle selection) and
    of a training refuses a value of another kind when its class is built in Python: a flag given a string or 1, a
    count given 2.5 or True, a number given a string, True or NaN, a tuple of numbers given text."""
    leaves = list(_option_leaves(root()))
    accepted = []
    for key, holder, field in leaves:
        for wrong in WRONG_KINDS.get(type(getattr(holder, field.name)), []):
            try:
                attrs.evolve(holder, **{field.name: wrong})
            except (TypeError, ValueError):
                continue
            accepted.append(f"{key} = {wrong!r}")
    assert accepted == []
    assert len(leaves) > 40  # the walk reaches the nested classes


def test_a_stage_table_is_named_in_full():
    with pytest.raises(ConfigError, match=r"got nan @ \$\.finding\.stages\.gnn\.timeout_s"):
        load_job_options(CONFIGS / "remote_triton.toml", ["finding.stages.gnn.timeout_s=nan"])
    with pytest.raises(
        ConfigError, match=r"finding\.stages\.gnn\.url \(inference of stage 'gnn'\): grpc URL 'h:8000' uses port 8000"
    ):
        load_job_options(CONFIGS / "remote_triton.toml", ["finding.stages.gnn.url='h:8000'"])
    with pytest.raises(
        ConfigError, match=r"finding\.stages\.filter\.url \(inference of stage 'filter'\): no server is set"
    ):
        load_job_options(CONFIGS / "remote_triton.toml", ["finding.stages.filter.url=''"])
    with pytest.raises(ConfigError, match=r"inference\.triton\.fallback \(.*\): \"local\" needs fallback_model_path"):
        load_job_options(CONFIGS / "remote_triton.toml", ["inference.triton.fallback=local"])
