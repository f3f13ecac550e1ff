"""The job options of ``trkx run``: one TOML file, ``--set`` overrides, strict validation.

Layout (every table optional; see ``configs/local_onnx.toml`` and ``docs/configuration.md``)::

    [job]               events, seed, jobs, detector (the cylinder description: simulation, finder, fitter),
                        executor ("local" | "dask") and scheduler (a Dask scheduler's tcp://HOST:PORT)
    [detector]          file: the module geometry that real events are read with (a TrackML detectors.csv)
    [inference]         backend = "onnxruntime" | "triton" | ..., plus one sub-table per backend
                        ([inference.onnxruntime], [inference.triton]) holding that backend's options
    [simulation]        the simulation settings (used with --simulate)
    [finding]           the finder; [finding.graph], [finding.filter], [finding.gnn], [finding.building]
    [finding.stages.<embedding|filter|gnn>]   per-stage inference overrides (backend and its options)
    [fitting]           hook = "kalman" | "none" | "package.module:factory", and the fitter's options
    [performance]       the particle selection for efficiencies

Moving inference to a server is one change: ``backend = "onnxruntime"`` → ``"triton"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from inference_iface.checksums import file_sha256
from inference_iface.errors import BackendUnavailableError, ConfigError
from inference_iface.options import (
    closest,
    integer,
    load_toml,
    mapping,
    structure,
    unknown_keys_message,
    unstructure,
    with_overrides,
)
from inference_iface.registry import available_backends, backend_class, make_config
from tracking_algs.errors import TrackingError
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.model_dir import (
    CARD_NAME,
    SHIPPED_SETS,
    STAGES,
    load_model_card,
    model_path,
    resolve_model_dir,
    working_point,
)
from tracking_algs.finding.served import SERVED_MODELS, chain_checksum
from tracking_algs.fitting.hook import FittingConfig, TrackFitter
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.job.dask_setup import scheduler_address
from tracking_algs.magnetic_field import FieldConfig, MagneticField
from tracking_algs.performance.matching import ParticleSelection
from tracking_algs.simulation import SimulationConfig

if TYPE_CHECKING:
    from tracking_algs.finding.finder import TrackFinder
    from tracking_algs.modules import ModuleGeometry

#: What each neural stage takes from its backend's table when the job options leave it out: where the stage's model
#: is, and for ONNX Runtime its memory patterns and thread spinning off (every event has other node and edge counts,
#: so memory plans never apply; the graph and building stages compute on the same cores between the models' runs).
#: ``{stage}`` and ``{model_dir}`` in any string value, here or in the job options, become the stage's name and
#: the model directory (the shipped models' when ``[finding] model_dir`` is empty).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "onnxruntime": {"model_path": "{model_dir}/{stage}.onnx", "memory_pattern": False, "allow_spinning": False},
    "triton": {"model_name": "{stage}"},
}
#: The options of a backend's table that name files or directories (made absolute by :meth:`JobOptions.anchored`).
PATH_OPTIONS = ("model_path", "fallback_model_path", "fallback_repository", "root_certificates", "private_key",
                "certificate_chain")  # fmt: skip
#: Values of ``[job] executor``.
EXECUTORS = ("local", "dask")


def _placed(settings: Mapping[str, Any], stage: str, model_dir: Path) -> dict[str, Any]:
    """``settings`` with ``{stage}`` and ``{model_dir}`` replaced in its string values."""
    return {
        key: value.replace("{stage}", stage).replace("{model_dir}", str(model_dir)) if isinstance(value, str) else value
        for key, value in settings.items()
    }


def _check_scheduler(instance: JobConfig, attribute: attrs.Attribute, value: str) -> None:
    """``[job] scheduler``: empty, or a Dask scheduler address, and then ``executor = "dask"``."""
    if not value:
        return
    try:
        scheduler_address(value)
    except ValueError as error:
        raise ValueError(f"[job] scheduler: {error}") from None
    if instance.executor != "dask":
        raise ValueError(
            f"[job] scheduler {value!r} is a Dask scheduler, but executor = {instance.executor!r}; set "
            'executor = "dask" (or pass --scheduler, which implies it)'
        )


@attrs.frozen(kw_only=True)
class JobConfig:
    """How the job runs: simulated event count (≥ 1) and seed (≥ 0) (with ``--simulate``), worker processes
    (≥ 1), the cylinder detector file (empty: the TrackML-like default) of the simulation, the finder's pair
    cuts and the fitter, and the executor: ``"local"`` (this process or a pool of ``jobs`` worker processes) or
    ``"dask"`` (every event a task on the Dask scheduler at ``scheduler``, ``tcp://HOST:PORT``; empty: a Dask
    ``LocalCluster`` of ``jobs`` worker processes on this machine)."""

    events: int = attrs.field(default=5, validator=[integer, attrs.validators.ge(1)])
    seed: int = attrs.field(default=1_000_000, validator=[integer, attrs.validators.ge(0)])
    jobs: int = attrs.field(default=1, validator=[integer, attrs.validators.ge(1)])
    detector: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    executor: Literal["local", "dask"] = attrs.field(default="local", validator=attrs.validators.in_(EXECUTORS))
    scheduler: str = attrs.field(default="", validator=[attrs.validators.instance_of(str), _check_scheduler])


#: The ``[job]`` keys that choose how the job runs, not what it computes (the results are the same whatever their
#: values): a resumed job may change them.
EXECUTION_KEYS = ("jobs", "executor", "scheduler")


@attrs.frozen(kw_only=True)
class DetectorConfig:
    """``[detector]``: the module geometry of the job (the reading of real events, ``--input``, and the fitter):
    ``file``, a TrackML ``detectors.csv`` or ``.csv.gz``; each hit's measurement errors are then its own module's
    pitch / √12, and the fitter measures each hit on its module's plane. Empty: the built-in TrackML modules when
    ``[simulation] geometry = "modules"``, else no module geometry (the per-layer errors and nominal layers of
    ``[job] detector``).  ``[detector.field]`` (:class:`~tracking_algs.magnetic_field.FieldConfig`): the
    field's shape, uniform by default, with ``[job] detector``'s field at the centre; the simulation and the fitter
    move tracks in it."""

    file: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    field: FieldConfig = attrs.field(default=FieldConfig(), validator=attrs.validators.instance_of(FieldConfig))


@attrs.frozen(kw_only=True)
class JobOptions:
    """Every setting of one ``trkx run`` job."""

    job: JobConfig = attrs.field(default=JobConfig(), validator=attrs.validators.instance_of(JobConfig))
    inference: dict[str, Any] = attrs.field(factory=lambda: {"backend": "onnxruntime"}, validator=mapping)
    simulation: SimulationConfig = attrs.field(
        default=SimulationConfig(), validator=attrs.validators.instance_of(SimulationConfig)
    )
    finding: FindingConfig = attrs.field(default=FindingConfig(), validator=attrs.validators.instance_of(FindingConfig))
    stages: dict[str, dict[str, Any]] = attrs.field(factory=dict, validator=mapping)
    fitting: FittingConfig = attrs.field(default=FittingConfig(), validator=attrs.validators.instance_of(FittingConfig))
    performance: ParticleSelection = attrs.field(
        default=ParticleSelection(), validator=attrs.validators.instance_of(ParticleSelection)
    )
    detector: DetectorConfig = attrs.field(
        default=DetectorConfig(), validator=attrs.validators.instance_of(DetectorConfig)
    )

    def files_read(self) -> dict[str, str]:
        """The files the job reads besides its events, by the option that names them (``job.detector``,
        ``detector.file``, ``detector.field.map_file``, and each neural stage's model with the model card when the
        stages run in the job): each as its absolute path and SHA-256, so that a resumed job can tell whether it
        would read other files (options naming relative paths, resumed from another directory) or changed ones."""
        named = {"job.detector": self.job.detector, "detector.file": self.detector.file,
                 "detector.field.map_file": self.detector.field.map_file}  # fmt: skip
        if self.finding.serving == "stages":
            model_dir = resolve_model_dir(self.finding.model_dir)
            named[f"finding.model_dir/{CARD_NAME}"] = str(model_dir / CARD_NAME)
            for stage in STAGES:
                named[f"finding.stages.{stage}.model_path"] = str(self.stage_inference(stage).get("model_path", ""))
        return {key: f"{Path(path).resolve()} sha256:{file_sha256(path)}" for key, path in named.items()
                if path and Path(path).is_file()}  # fmt: skip

    def anchored(self, directory: Path) -> JobOptions:
        """These options with each relative path they name made absolute against ``directory``: ``job.detector``,
        ``detector.file``, ``detector.field.map_file``, ``finding.model_dir`` (not a shipped set) and the
        :data:`PATH_OPTIONS` of the backend tables (``[inference.*]``, ``[finding.stages.*]``; a path starting at
        ``{model_dir}`` follows the model directory). Options handed to a process in another working directory (a
        Dask worker) name the same files as here."""

        def absolute(path: str) -> str:
            return str(directory / path) if path and not Path(path).is_absolute() else path

        def table(settings: Any) -> Any:
            if not isinstance(settings, Mapping):
                return settings
            anchored = dict(settings)
            for key in PATH_OPTIONS:
                value = anchored.get(key)
                if isinstance(value, str) and not value.startswith("{model_dir}"):
                    anchored[key] = absolute(value)
            return anchored

        finding = self.finding
        if str(finding.model_dir) not in SHIPPED_SETS:
            finding = attrs.evolve(finding, model_dir=absolute(finding.model_dir))
        field = attrs.evolve(self.detector.field, map_file=absolute(self.detector.field.map_file))
        return attrs.evolve(
            self,
            job=attrs.evolve(self.job, detector=absolute(self.job.detector)),
            detector=attrs.evolve(self.detector, file=absolute(self.detector.file), field=field),
            finding=finding,
            inference={key: table(value) for key, value in self.inference.items()},
            stages={stage: table(settings) for stage, settings in self.stages.items()},
        )

    def cylinder_detector(self) -> Detector:
        """The detector named by ``[job] detector`` (a TOML file), or the TrackML-like default."""
        return Detector.from_toml(self.job.detector) if self.job.detector else trackml_detector()

    def magnetic_field(self) -> MagneticField:
        """The field of ``[detector.field]`` with the centre field of :meth:`cylinder_detector`."""
        return self.detector.field.build(self.cylinder_detector())

    def module_geometry(self) -> ModuleGeometry | None:
        """The module geometry of the job: that of ``[detector] file`` (read from the file); when the option is
        empty, the built-in TrackML modules with ``[simulation] geometry = "modules"``, else None (the layers of
        ``[job] detector`` alone).

        Raises :class:`~tracking_algs.errors.EventFormatError` naming the file, row and column of a malformed file.
        """
        from tracking_algs.modules import read_detectors_csv, trackml_modules  # only module jobs need them

        if self.detector.file:
            return read_detectors_csv(self.detector.file)
        return trackml_modules() if self.simulation.geometry == "modules" else None

    def stage_inference(self, stage: str) -> dict[str, Any]:
        """The complete inference options of one neural stage: ``[inference]``'s backend, its
        :data:`STAGE_DEFAULTS`, that backend's table, then ``[finding.stages.<stage>]``, with the placeholders
        filled in. On Triton, ``model_checksum`` defaults to the SHA-256 of the stage's ONNX file in ``[finding]
        model_dir`` (where there is one), so that a server serving another model for the stage is refused."""
        override = dict(self.stages.get(stage, {}))
        backend = override.pop("backend", self.inference.get("backend", "onnxruntime"))
        settings = {**STAGE_DEFAULTS.get(backend, {}), **self.inference.get(backend, {}), **override}
        placed = _placed(settings, stage, resolve_model_dir(self.finding.model_dir))
        model_file = model_path(self.finding.model_dir, stage)
        if backend == "triton" and not placed.get("model_checksum") and model_file.is_file():
            placed["model_checksum"] = file_sha256(model_file)
        return {"backend": backend, **placed}

    def served_inference(self) -> dict[str, Any]:
        """The inference options of the served chain (``[finding] serving`` = ``"chain"`` or ``"ensemble"``): the
        ``[inference]`` backend with its table, ``model_name`` defaulting to the served model's name and, on
        Triton, ``model_checksum`` to that of a chain running this job's ``[finding]`` options and models
        (:func:`~tracking_algs.finding.served.chain_checksum`), so that a chain written with others is refused.

        Raises:
            ConfigError: ``serving`` names no served model, or the backend runs single ONNX files (the whole
                chain needs a server).
        """
        serving = self.finding.serving
        if serving not in SERVED_MODELS:
            raise ConfigError(
                f"[finding] serving {serving!r} has no served model; expected one of {', '.join(SERVED_MODELS)}"
            )
        backend = self.inference.get("backend", "onnxruntime")
        if backend == "onnxruntime":
            raise ConfigError(
                f"[finding] serving = {serving!r} sends whole events to a server, but [inference] backend is "
                "'onnxruntime'; set backend = 'triton' (and serve with 'trkx repo add-tracking'), or serving = 'stages'"
            )
        settings = {"backend": backend, "model_name": SERVED_MODELS[serving], **self.inference.get(backend, {})}
        if backend == "triton" and not settings.get("model_checksum"):  # the chain must run this job's finding
            settings["model_checksum"] = chain_checksum(self.finding)
        return settings

    def to_dict(self, *, execution: bool = True) -> dict[str, Any]:
        """The effective options as plain data (written next to the job's results); when ``execution`` is false
        (what a resumed job must find unchanged), without what says how the job runs rather than what it computes:
        the ``[job]`` keys of :data:`EXECUTION_KEYS` and, in the Triton tables (``[inference.triton]`` and the
        stages' ``[finding.stages.*]`` on Triton), how the servers are reached
        (:data:`~backends.triton_config.CONNECTION_OPTIONS`: a job stopped by a dead server resumes on another)."""
        from backends.triton_config import CONNECTION_OPTIONS  # the job layer may import the backends

        data = unstructure(self)
        data["finding"]["stages"] = data.pop("stages")
        if not execution:
            data["job"] = {key: value for key, value in data["job"].items() if key not in EXECUTION_KEYS}
            triton = [data["inference"].get("triton")] + [
                table for table in data["finding"]["stages"].values() if table.get("backend") == "triton"
            ]
            if data["inference"].get("backend") == "triton":  # the stages without a backend of their own
                triton += [table for table in data["finding"]["stages"].values() if "backend" not in table]
            for table in filter(None, triton):
                for key in CONNECTION_OPTIONS:
                    table.pop(key, None)
            stages = data["finding"]["stages"]  # a stage table left empty is no table
            data["finding"]["stages"] = {stage: table for stage, table in stages.items() if table}
        return data


def load_job_options(path: str | Path | None = None, overrides: Iterable[str] = ()) -> JobOptions:
    """Read a job-options TOML file (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    An error is blamed on what caused it: the file, when the file alone has it, otherwise the override
    that brought it in (``--set job.seed=-3: 'seed' must be >= 0: -3 @ $.job``).

    Raises:
        ConfigError: unreadable file, unknown key (valid keys listed), bad value, unknown backend or stage,
            a missing detector file or model directory.
    """
    data = load_toml(path) if path is not None else {}
    return with_overrides(data, overrides, job_options_from_dict, where=str(path) if path else "options")


def job_options_from_dict(data: Mapping[str, Any], where: str = "options") -> JobOptions:
    """Build and fully validate :class:`JobOptions` from plain data: values, backends, and the files the job
    will need (the ``[job] detector`` file, the ``[finding] model_dir`` and its models)."""
    data = dict(data)
    tables = [field.name for field in attrs.fields(JobOptions) if field.name != "stages"]  # stages: in [finding]
    unknown = sorted(set(data) - set(tables))
    if unknown:
        hint = " (a stage's inference options go in [finding.stages.<stage>])" if "stages" in unknown else ""
        raise ConfigError(f"{where}: {unknown_keys_message(unknown, tables, hint=hint)}")
    for table in tables:
        if not isinstance(data.get(table, {}), Mapping):
            raise ConfigError(f"{where}: [{table}] must be a table of options, got {data[table]!r}")
    finding = dict(data.get("finding", {}))
    stages = finding.pop("stages", {})
    if not isinstance(stages, Mapping):
        raise ConfigError(f"{where}: [finding.stages] must be a table of stage tables, got {stages!r}")
    bad_stages = sorted(set(stages) - set(STAGES))
    if bad_stages:
        message = unknown_keys_message(bad_stages, STAGES, "finding.stages", hint=" (the neural stages)")
        raise ConfigError(f"{where}: {message}")
    for stage, table in stages.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{where}: [finding.stages.{stage}] must be a table of the stage's inference options (backend and "
                f"that backend's keys), got {table!r}"
            )
    data["finding"] = finding
    data["stages"] = stages
    _check_inference_tables(data.get("inference", {}), stages, where)
    options = structure(data, JobOptions, where=where)
    _check_inference(options, where)
    _check_contradictions(options, where)
    _check_files(options, where)
    _check_field_map(options, where)
    _check_served_field(options, where)
    return options


def _check_inference_tables(table: Mapping[str, Any], stages: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """``[inference]`` and ``[finding.stages.<stage>]`` each on its own, so that an error names its key in full: the
    keys of ``[inference]`` (``backend`` and one table per backend), the backend names, and each backend table (the
    tables of backends the job does not use too: a misspelt key there would be silently ignored until the day the
    backend line changes) and each stage table checked against its backend's options. A backend whose library is
    not installed cannot be checked, and its table is left as it is."""
    backends = available_backends()
    unknown = sorted(key for key in table if key != "backend" and key not in backends)
    if unknown:
        message = unknown_keys_message(unknown, ["backend", *backends], "inference",
                                       hint=" (backend, and one table per backend)")  # fmt: skip
        raise ConfigError(f"{where}: {message}")
    backend = table.get("backend", "onnxruntime")
    _check_backend_name(backend, "inference.backend", backends, where)
    for key, value in table.items():
        if key != "backend" and not isinstance(value, Mapping):
            raise ConfigError(f"{where}: [inference] {key} must be a table of that backend's options, got {value!r}")
    # (where the table is, its backend, its options)
    checked: list[tuple[tuple[str, ...], str, Mapping[str, Any]]] = [
        (("inference", name), name, settings) for name, settings in table.items() if name != "backend"
    ]
    for stage, settings in stages.items():
        stage_backend = settings.get("backend", backend)
        _check_backend_name(stage_backend, f"finding.stages.{stage}.backend", backends, where)
        own = {key: value for key, value in settings.items() if key != "backend"}
        checked.append((("finding", "stages", stage), stage_backend, own))
    for path, name, settings in checked:
        try:
            config_class = backend_class(name).config_class
        except BackendUnavailableError:  # not installed: checked (and refused) only where the job uses it
            continue
        config = structure(settings, config_class, where=where, path=path)
        if path == ("inference", "triton"):  # its addresses, also where no stage uses them
            _check_triton_addresses(config, lambda name: f"inference.triton.{name}", where)


def _check_triton_addresses(config: Any, key: Callable[[str], str], where: str, what: str = "") -> None:
    """The server addresses of a ``triton`` configuration (``url``, ``urls``), or with ``what`` (what the job runs on
    it) also that it has a server to call (:meth:`~backends.triton_config.TritonConfig.servers`), each fault named by
    its dotted key in the job options, ``key(option)``."""
    from backends.triton_config import ServerOptionError  # the job layer may import the backends (not the algorithms)

    try:
        config.servers() if what else config.addresses()
    except ServerOptionError as error:
        used = f" (inference of {what})" if what else ""
        raise ConfigError(f"{where}: {key(error.key)}{used}: {error.problem}") from None


def _check_backend_name(name: Any, key: str, backends: tuple[str, ...], where: str) -> None:
    if isinstance(name, str) and name in backends:
        return
    close = closest(name, backends) if isinstance(name, str) else None
    guess = f" (did you mean {close!r}?)" if close else ""
    what = f"{name!r} is unknown" if isinstance(name, str) else f"must name a backend as a string, got {name!r}"
    table, _, field = key.rpartition(".")
    raise ConfigError(f"{where}: [{table}] {field} {what}; valid backends are {', '.join(backends)}{guess}")


def _check_contradictions(options: JobOptions, where: str) -> None:
    """Options that the job would silently ignore: a stage's inference options when the whole chain is served
    (``[finding] serving`` = ``"chain"`` or ``"ensemble"``), and ``[fitting.options]`` (the free-form table of a
    plug-in fitter) with the built-in Kalman fitter, which takes its options from ``[fitting.kalman]``."""
    if options.finding.serving != "stages" and options.stages:
        stage = next(iter(options.stages))
        raise ConfigError(
            f"{where}: [finding.stages.{stage}] sets the inference of one stage, but [finding] serving = "
            f"{options.finding.serving!r} sends whole events to the served chain, which runs every stage on the "
            '[inference] backend\'s server; remove [finding.stages] or set serving = "stages"'
        )
    if options.fitting.hook == "kalman" and options.fitting.options:
        keys = ", ".join(f"fitting.options.{key}" for key in options.fitting.options)
        raise ConfigError(
            f"{where}: {keys}: [fitting.options] is handed to a plug-in fitter's factory, and hook = 'kalman' takes "
            "none; the built-in fitter's options go in [fitting.kalman] (or set hook = 'package.module:factory')"
        )


def _check_files(options: JobOptions, where: str) -> None:
    """The detector files and the model directory must exist (and the module geometry file be readable) and, when
    the stages run in the job, the model card and each ONNX Runtime stage's model file."""
    detector = options.job.detector
    if detector and (what := _missing(detector, Path.is_file)):
        raise ConfigError(f"{where}: [job] detector {detector!r} {what}; expected a detector TOML file")
    _check_module_file(options.detector.file, where)
    model_dir = options.finding.model_dir
    if model_dir not in SHIPPED_SETS and (what := _missing(model_dir, Path.is_dir)):
        raise ConfigError(
            f"{where}: [finding] model_dir {model_dir!r} {what}; expected a directory with "
            f"{', '.join(f'{stage}.onnx' for stage in STAGES)} and {CARD_NAME} (from 'trkx train'), \"\" for the "
            'shipped models, or "shipped:modules" for those trained on the TrackML modules'
        )
    if options.finding.serving != "stages":
        return
    try:
        load_model_card(model_dir)
        working_point(model_dir, options.finding.graph.radius, options.finding.filter.cut)
    except TrackingError as error:
        raise ConfigError(f"{where}: [finding] model_dir: {error}") from None
    for stage in STAGES:
        settings = options.stage_inference(stage)
        if settings.get("backend") == "onnxruntime" and not Path(settings["model_path"]).is_file():
            raise ConfigError(
                f"{where}: the model of stage {stage!r}, {settings['model_path']!r}, does not exist; expected "
                f"[finding] model_dir to hold {stage}.onnx (or [finding.stages.{stage}] model_path to name the file)"
            )


def _missing(path: str, kind: Callable[[Path], bool]) -> str:
    """Why ``path`` is not the file (``kind`` = ``Path.is_file``) or directory (``Path.is_dir``) wanted, or ``""``."""
    if kind(Path(path)):
        return ""
    if not Path(path).exists():
        return "does not exist"
    return "is not a file" if kind is Path.is_file else "is not a directory"


def _check_module_file(path: str, where: str) -> None:
    """``[detector] file``, when given, must be a readable file."""
    if not path:
        return
    expected = 'expected a TrackML detectors.csv or detectors.csv.gz file, or "" for no module geometry'
    if what := _missing(path, Path.is_file):
        raise ConfigError(f"{where}: [detector] file {path!r} {what}; {expected}")
    try:
        Path(path).open("rb").close()
    except OSError as error:
        raise ConfigError(f"{where}: [detector] file {path!r} cannot be read ({error.strerror}); {expected}") from None


def _check_field_map(options: JobOptions, where: str) -> None:
    """With ``[detector.field] kind = "map"``: ``map_file`` names a readable, well-formed field map whose field at the
    origin is that of ``[job] detector`` and whose grid reaches its surfaces (read here, with the options, so that a
    job never starts with a map it cannot use; the job's processes read it again when they build their field)."""
    field = options.detector.field
    if field.kind != "map":
        return
    expected = "expected a field map CSV with columns r, z, br, bz (mm, tesla) on a regular grid (docs/fitting.md)"
    if what := _missing(field.map_file, Path.is_file):
        raise ConfigError(f"{where}: [detector.field] map_file {field.map_file!r} {what}; {expected}")
    try:
        options.magnetic_field()
    except TrackingError as error:
        raise ConfigError(f"{where}: [detector.field] map_file: {error}") from None


def _check_served_field(options: JobOptions, where: str) -> None:
    """A served chain computes the pair cuts on the server, in the default detector's field: the job's detector must
    have that field (the stages in the job take the field of ``[job] detector``)."""
    if options.finding.serving == "stages" or not options.job.detector:
        return
    field, default = options.cylinder_detector().bfield_t, trackml_detector().bfield_t
    if field != default:
        raise ConfigError(
            f"{where}: [job] detector {options.job.detector!r} has a {field} T field, but [finding] serving = "
            f"{options.finding.serving!r} computes the pair cuts on the server in the default detector's {default} T; "
            'use serving = "stages" with this detector'
        )


def _check_inference(options: JobOptions, where: str) -> None:
    """The complete inference options of each neural stage (when the stages run in the job) or of the served chain
    (otherwise), as the job will build them: each a valid configuration of its backend, and a ``triton`` one with a
    server to call (``url``, ``urls`` or a local fallback) at a well-formed address."""
    stages = STAGES if options.finding.serving == "stages" else (None,)
    for stage in stages:
        what = f"stage {stage!r}" if stage else "the served chain"
        try:
            settings = options.stage_inference(stage) if stage else options.served_inference()
            _, config = make_config(settings)
        except ConfigError as error:
            raise ConfigError(f"{where}: inference options of {what}: {error}") from None
        if settings["backend"] == "triton":
            _check_triton_server(config, what, options.stages.get(stage, {}) if stage else {}, stage, where)


def _check_triton_server(config: Any, what: str, override: Mapping[str, Any], stage: str | None, where: str) -> None:
    """A ``triton`` backend has a server to call at well-formed addresses, checked as the backend will check it, but
    before the job starts and with each fault named by its key: ``finding.stages.<stage>.<option>`` where the stage
    sets the option, ``inference.triton.<option>`` otherwise."""

    def key(name: str) -> str:
        return f"finding.stages.{stage}.{name}" if stage and name in override else f"inference.triton.{name}"

    _check_triton_addresses(config, key, where, what)


def local_finder(
    finding: FindingConfig | None = None, fitter: TrackFitter | None = None, bfield_t: float | None = None
) -> TrackFinder:
    """A :class:`TrackFinder` with every stage on the default job options' backend (ONNX Runtime) and the models of
    ``finding.model_dir`` (empty: the shipped ones)."""
    from tracking_algs.finding.finder import TrackFinder  # loaded on first use: the job options need not load it

    options = JobOptions(finding=finding or FindingConfig())
    stages = {stage: options.stage_inference(stage) for stage in STAGES}
    return TrackFinder.from_options(options.finding, stages, fitter=fitter, bfield_t=bfield_t)
