"""Where a job's events come from: a directory of TrackML CSV files (``.csv`` or ``.csv.gz``), or the simulation.

A source lists event ids cheaply and loads one event by id, so a resumed job skips finished events
without reading or simulating them, and a worker process loads its own events.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from tracking_algs.errors import JobInputError
from tracking_algs.event import Event
from tracking_algs.geometry import Detector
from tracking_algs.io.trackml import EVENT_FILES, list_events, read_event
from tracking_algs.magnetic_field import MagneticField
from tracking_algs.modules import ModuleGeometry
from tracking_algs.simulation import SimulationConfig, check_setup, simulate_event


@attrs.frozen
class DirectorySource:
    """TrackML CSV events in ``directory`` (``eventNNNNNNNNN-hits.csv`` or ``.csv.gz`` and, optionally, truth
    and particles files; other files, such as cells, are ignored). Each hit's measurement errors come from its
    module in ``modules`` (the job's ``[detector] file``) when given, else from its layer in ``detector``
    (:func:`~tracking_algs.io.trackml.read_event`)."""

    directory: Path = attrs.field(converter=Path)
    detector: Detector
    modules: ModuleGeometry | None = attrs.field(default=None, eq=False)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        detector: Detector,
        option: str = "input directory",
        modules: ModuleGeometry | None = None,
    ) -> DirectorySource:
        """The source of ``directory``, checked before any work: it must exist and hold at least one event.

        Raises :class:`JobInputError` naming ``option``, the directory and the files looked for.
        """
        path = Path(directory)
        expected = f"expected a directory of TrackML events ({EVENT_FILES})"
        if not path.exists():
            raise JobInputError(f"{option} {str(path)!r} does not exist; {expected}")
        if not path.is_dir():
            raise JobInputError(f"{option} {str(path)!r} is not a directory; {expected}")
        try:
            events = list_events(path)
        except OSError as error:
            raise JobInputError(f"{option} {str(path)!r} cannot be read ({error.strerror or error})") from None
        if not events:
            raise JobInputError(f"{option} {str(path)!r} holds no events: no file named {EVENT_FILES}")
        return cls(path, detector, modules)

    def event_ids(self) -> list[int]:
        """Ids of the events in the directory, ascending."""
        return list_events(self.directory)

    def load(self, event_id: int) -> Event:
        """Read one event (raises :class:`~tracking_algs.errors.EventFormatError` for a bad file)."""
        return read_event(self.directory, event_id, detector=self.detector, modules=self.modules)

    def describe(self) -> dict[str, str]:
        """What a resumed job must find unchanged: the input directory."""
        return {"input": str(self.directory.resolve())}


@attrs.frozen
class SimulationSource:
    """``count`` simulated events; event ``i`` is the same for the same ``seed`` however the job is split."""

    config: SimulationConfig
    seed: int = attrs.field(validator=attrs.validators.ge(0))
    count: int = attrs.field(validator=attrs.validators.ge(1))
    detector: Detector
    #: the modules of a simulation on modules (None: the built-in TrackML modules)
    modules: ModuleGeometry | None = attrs.field(default=None, eq=False)
    #: the field the particles move in (None: the detector's uniform field)
    field: MagneticField | None = None

    def __attrs_post_init__(self) -> None:
        """Refuse now what the first event would fail on (modules the simulation cannot navigate, noise in a volume
        without modules), so that a job is refused before it writes anything."""
        check_setup(self.config, self.modules)

    def event_ids(self) -> list[int]:
        """Ids 0 .. count-1."""
        return list(range(self.count))

    def load(self, event_id: int) -> Event:
        """Simulate event ``event_id``."""
        return simulate_event(self.config, self.seed, event_id, self.detector, self.modules, self.field)

    def describe(self) -> dict[str, int]:
        """What a resumed job must find unchanged: the event count and seed."""
        return {"simulate": self.count, "seed": self.seed}


EventSource = DirectorySource | SimulationSource
