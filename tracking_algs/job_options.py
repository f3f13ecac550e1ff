"""The job options of ``trkx run``: one TOML file, ``--set`` overrides, strict validation.

Layout (every table optional; see ``configs/local_onnx.toml`` and ``docs/configuration.md``)::

    [job]               events, seed, jobs
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

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from inference_iface.errors import ConfigError
from inference_iface.options import apply_overrides, load_toml, structure, unstructure
from inference_iface.registry import available_backends, make_config
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.finder import stage_options
from tracking_algs.finding.model_dir import STAGES
from tracking_algs.finding.served import served_options
from tracking_algs.fitting.hook import FittingConfig
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.performance.matching import ParticleSelection
from tracking_algs.simulation import SimulationConfig


@attrs.frozen(kw_only=True)
class JobConfig:
    """How the job runs: simulated event count and seed (with ``--simulate``), worker processes."""

    events: int = 5
    seed: int = 1_000_000
    jobs: int = 1
    detector: str = ""


@attrs.frozen(kw_only=True)
class JobOptions:
    """Every setting of one ``trkx run`` job."""

    job: JobConfig = JobConfig()
    inference: dict[str, Any] = attrs.Factory(lambda: {"backend": "onnxruntime"})
    simulation: SimulationConfig = SimulationConfig()
    finding: FindingConfig = FindingConfig()
    stages: dict[str, dict[str, Any]] = attrs.Factory(dict)
    fitting: FittingConfig = FittingConfig()
    performance: ParticleSelection = ParticleSelection()

    def detector(self) -> Detector:
        """The detector named by ``[job] detector`` (a TOML file), or the TrackML-like default."""
        return Detector.from_toml(self.job.detector) if self.job.detector else trackml_detector()

    def stage_inference(self, stage: str) -> dict[str, Any]:
        """The inference options of one neural stage: ``[inference]``'s backend and that backend's table,
        overridden by ``[finding.stages.<stage>]``."""
        override = dict(self.stages.get(stage, {}))
        backend = override.pop("backend", self.inference.get("backend", "onnxruntime"))
        return {"backend": backend, **self.inference.get(backend, {}), **override}

    def to_dict(self) -> dict[str, Any]:
        """The effective options as plain data (written next to the job's results)."""
        data = unstructure(self)
        data["finding"]["stages"] = data.pop("stages")
        return data


def load_job_options(path: str | Path | None = None, overrides: Iterable[str] = ()) -> JobOptions:
    """Read a job-options TOML file (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    Raises:
        ConfigError: unreadable file, unknown key (valid keys listed), bad value, unknown backend or stage.
    """
    data = load_toml(path) if path is not None else {}
    return job_options_from_dict(apply_overrides(data, overrides), where=str(path) if path else "options")


def job_options_from_dict(data: Mapping[str, Any], where: str = "options") -> JobOptions:
    """Build and fully validate :class:`JobOptions` from plain data."""
    data = dict(data)
    finding = dict(data.get("finding", {}))
    stages = finding.pop("stages", {})
    data["finding"] = finding
    data["stages"] = stages
    options = structure(data, JobOptions, where=where)
    _check_inference(options, where)
    return options


def _check_inference(options: JobOptions, where: str) -> None:
    backends = available_backends()
    table = options.inference
    backend = table.get("backend", "onnxruntime")
    unknown = [key for key in table if key != "backend" and key not in backends]
    if unknown:
        raise ConfigError(
            f"{where}: [inference] key(s) {', '.join(unknown)} are unknown; valid keys are backend and one table "
            f"per backend ({', '.join(backends)})"
        )
    if backend not in backends:
        raise ConfigError(
            f"{where}: [inference] backend {backend!r} is unknown; valid backends are {', '.join(backends)}"
        )
    bad_stages = sorted(set(options.stages) - set(STAGES))
    if bad_stages:
        raise ConfigError(
            f"{where}: [finding.stages] has unknown stage(s) {', '.join(bad_stages)}; valid stages are "
            f"{', '.join(STAGES)}"
        )
    for stage in STAGES:
        try:
            make_config(stage_options(options.finding, stage, options.stage_inference(stage)))
        except ConfigError as error:
            raise ConfigError(f"{where}: inference options of stage {stage!r}: {error}") from None
    if options.finding.serving != "stages":
        try:
            make_config(served_options(options.finding.serving, options.inference))
        except ConfigError as error:
            raise ConfigError(f"{where}: inference options of the served chain: {error}") from None
